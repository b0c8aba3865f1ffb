package audit_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

func TestCheckpointFormat(t *testing.T) {
	c := audit.Checkpoint{Origin: "fedledger.example/audit", Size: 12, Root: [32]byte{1, 2, 3}}
	text := c.String()
	if !strings.HasPrefix(text, "fedledger.example/audit\n12\nAQID") || !strings.HasSuffix(text, "=\n") {
		t.Fatalf("unexpected checkpoint text %q", text)
	}
	got, err := audit.ParseCheckpoint(text)
	if err != nil || got != c {
		t.Fatalf("ParseCheckpoint = %+v, %v", got, err)
	}
	for _, bad := range []string{"", "o\n12\n", "o\n012\n" + text[len("fedledger.example/audit\n12\n"):],
		"o\n-1\nAAAA\n", "o\n1\nnot-base64\n", "o\n1\nAQID\n", text + "extra\n"} {
		if _, err := audit.ParseCheckpoint(bad); !errors.Is(err, audit.ErrBadCheckpoint) {
			t.Errorf("ParseCheckpoint(%q) = %v, want ErrBadCheckpoint", bad, err)
		}
	}
}

func FuzzParseCheckpoint(f *testing.F) {
	f.Add(audit.Checkpoint{Origin: "o", Size: 3, Root: [32]byte{9}}.String())
	f.Add("o\n1\n\n")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := audit.ParseCheckpoint(s)
		if err == nil && c.String() != s {
			t.Fatalf("accepted non-canonical %q", s)
		}
	})
}

func TestCheckpointQuorum(t *testing.T) {
	s1, v1 := audittest.NoteKeys(t, "node-1")
	s2, v2 := audittest.NoteKeys(t, "node-2")
	_, v3 := audittest.NoteKeys(t, "node-3")
	c := audit.Checkpoint{Origin: "o", Size: 1}
	msg, err := note.Sign(&note.Note{Text: c.String()}, s1, s2)
	if err != nil {
		t.Fatal(err)
	}
	known := note.VerifierList(v1, v2, v3)
	if _, names, err := audit.OpenCheckpoint(msg, known, 2); err != nil || len(names) != 2 {
		t.Fatalf("2-of-3: names %v err %v", names, err)
	}
	if _, _, err := audit.OpenCheckpoint(msg, known, 3); !errors.Is(err, audit.ErrQuorum) {
		t.Fatalf("3-of-3 with two sigs: %v", err)
	}
	if _, _, err := audit.OpenCheckpoint(msg, note.VerifierList(v3), 1); err == nil {
		t.Fatal("checkpoint with no trusted signature accepted")
	}
	tampered := []byte(strings.Replace(string(msg), "\n1\n", "\n2\n", 1))
	if _, _, err := audit.OpenCheckpoint(tampered, known, 1); err == nil {
		t.Fatal("tampered checkpoint accepted")
	}
}

func TestWitnessCosignsOnlyConsistentHistory(t *testing.T) {
	logS, logV := audittest.NoteKeys(t, "node-1")
	witS, witV := audittest.NoteKeys(t, "witness-1")
	w := audit.NewWitness(witS, note.VerifierList(logV))
	l := audit.NewMerkleLog()
	checkpoint := func(m *audit.MerkleLog) (audit.Checkpoint, []byte) {
		n := m.Size()
		root, err := m.Root(n)
		if err != nil {
			t.Fatal(err)
		}
		c := audit.Checkpoint{Origin: "fedledger/audit", Size: n, Root: root}
		msg, err := audit.SignCheckpoint(c, logS)
		if err != nil {
			t.Fatal(err)
		}
		return c, msg
	}
	for i := 0; i < 5; i++ {
		l.Append([]byte(fmt.Sprint("r", i)))
	}
	_, msg5 := checkpoint(l)
	cos, err := w.Cosign(msg5, nil)
	if err != nil {
		t.Fatalf("first cosign: %v", err)
	}
	if _, names, err := audit.OpenCheckpoint(cos, note.VerifierList(logV, witV), 2); err != nil || len(names) != 2 {
		t.Fatalf("cosigned checkpoint: %v %v", names, err)
	}
	for i := 5; i < 9; i++ {
		l.Append([]byte(fmt.Sprint("r", i)))
	}
	l.Append([]byte("x"))
	// Rewrite an already-cosigned entry in the fork.
	bad := audit.NewMerkleLog()
	for i := 0; i < 10; i++ {
		leaf, _ := l.Leaf(int64(i))
		if i == 2 {
			leaf = []byte("history rewritten")
		}
		bad.Append(leaf)
	}
	_, badMsg := checkpoint(bad)
	badProof, _ := bad.ProveConsistency(5, 10)
	if _, err := w.Cosign(badMsg, badProof); !errors.Is(err, audit.ErrInconsistent) {
		t.Fatalf("rewritten history: %v, want ErrInconsistent", err)
	}
	if ev := w.Evidence(); len(ev) != 1 || string(ev[0]) != string(badMsg) {
		t.Fatalf("evidence = %d items, want the refused checkpoint", len(ev))
	}
	if last, _ := w.Last(); last.Size != 5 {
		t.Fatalf("refusal moved the witness to size %d", last.Size)
	}
	good, goodMsg := checkpoint(l)
	proof, _ := l.ProveConsistency(5, 10)
	if _, err := w.Cosign(goodMsg, proof); err != nil {
		t.Fatalf("consistent extension refused: %v", err)
	}
	if last, _ := w.Last(); last != good {
		t.Fatalf("witness last = %+v, want %+v", last, good)
	}
	// Rolling back to the older size is refused too.
	if _, err := w.Cosign(msg5, nil); !errors.Is(err, audit.ErrInconsistent) {
		t.Fatalf("rollback: %v", err)
	}
	// A checkpoint not signed by the log is refused and is not evidence.
	otherS, _ := audittest.NoteKeys(t, "node-1")
	foreign, _ := audit.SignCheckpoint(good, otherS)
	if _, err := w.Cosign(foreign, proof); err == nil {
		t.Fatal("checkpoint signed by an unknown key cosigned")
	}
	if len(w.Evidence()) != 2 {
		t.Fatalf("evidence count %d, want 2", len(w.Evidence()))
	}
}
