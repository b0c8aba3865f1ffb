package cluster

import (
	"errors"
	"testing"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/hashicorp/raft"
)

func TestFSMApplySnapshotRestore(t *testing.T) {
	f := audittest.NewFixture(t)
	fsm := NewFSM(f.CA.Pool())
	leaf := func(r uint64) []byte {
		return audittest.Must(audit.Sign(f.Coord, f.Round(r, audittest.Model(byte(r-1)), audittest.Model(byte(r)), "site-a", "site-b"))).Marshal()
	}
	entries := [][]byte{audittest.Must(f.L.Log().Leaf(0)), leaf(1), leaf(2)}
	for i, e := range entries {
		res := fsm.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: frameCommand(e)}).(ApplyResult)
		if res.Err != nil || res.Index != int64(i) {
			t.Fatalf("apply %d: %+v", i, res)
		}
	}
	if res := fsm.Apply(&raft.Log{Type: raft.LogCommand, Data: frameCommand(leaf(4))}).(ApplyResult); !errors.Is(res.Err, audit.ErrSequence) {
		t.Fatalf("skipped round via FSM: %+v", res)
	}
	if fsm.Apply(&raft.Log{Type: raft.LogNoop}) != nil {
		t.Fatal("noop entry produced a result")
	}

	store := raft.NewInmemSnapshotStore()
	snap, err := fsm.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink, err := store.Create(raft.SnapshotVersionMax, 3, 1, raft.Configuration{}, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Persist(sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	// Apply after the snapshot must not leak into it.
	fsm.Apply(&raft.Log{Type: raft.LogCommand, Data: frameCommand(leaf(3))})

	metas, _ := store.List()
	_, rc, err := store.Open(metas[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	restored := NewFSM(f.CA.Pool())
	if err := restored.Restore(rc); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	n, root, _ := restored.Ledger().Root()
	want, _ := fsm.Ledger().Log().Root(3)
	if n != 3 || root != want {
		t.Fatalf("restored size %d root %v, want 3 %v", n, root, want)
	}
	// The restored node continues the sequence and reaches the same root.
	restored.Apply(&raft.Log{Type: raft.LogCommand, Data: frameCommand(leaf(3))})
	_, r1, _ := restored.Ledger().Root()
	_, r2, _ := fsm.Ledger().Root()
	if r1 != r2 {
		t.Fatal("restored node diverged after catching up")
	}

	bad := raft.NewInmemSnapshotStore()
	s2, _ := bad.Create(raft.SnapshotVersionMax, 1, 1, raft.Configuration{}, 1, nil)
	s2.Write([]byte{1, 0, 1, 3, 1, 2, 3})
	s2.Close()
	m2, _ := bad.List()
	_, rc2, _ := bad.Open(m2[0].ID)
	if err := restored.Restore(rc2); !errors.Is(err, audit.ErrMalformed) {
		t.Fatalf("corrupt snapshot: %v", err)
	}
	if _, r3, _ := restored.Ledger().Root(); r3 != r2 {
		t.Fatal("failed restore changed the state")
	}
}

// TestFSMHaltsOnABadFrame: every single-bit flip of a framed command, and
// an unframed record, is reported as corruption at its raft index, not as
// a rule rejection; the FSM then applies nothing more (not even a valid
// next record) and refuses to snapshot, so the replica cannot diverge
// silently.
func TestFSMHaltsOnABadFrame(t *testing.T) {
	f := audittest.NewFixture(t)
	study := audittest.Must(f.L.Log().Leaf(0))
	round1 := audittest.Must(audit.Sign(f.Coord, f.Round(1, audittest.Model(0), audittest.Model(1), "site-a", "site-b"))).Marshal()
	if got, err := unframeCommand(frameCommand(study)); err != nil || string(got) != string(study) {
		t.Fatalf("round trip: %v", err)
	}
	framed := frameCommand(study)
	bad := [][]byte{study, framed[:frameHeaderSize-1], framed[:len(framed)-1]}
	for i := range framed {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), framed...)
			b[i] ^= 1 << bit
			bad = append(bad, b)
		}
	}
	for i, data := range bad {
		fsm := NewFSM(f.CA.Pool())
		var reported []*CorruptionError
		fsm.onCorrupt = func(ce *CorruptionError) { reported = append(reported, ce) }
		res := fsm.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data}).(ApplyResult)
		var ce *CorruptionError
		if !errors.As(res.Err, &ce) || !errors.Is(res.Err, ErrCorrupt) || ce.RaftIndex != 7 || ce.LeafIndex != 0 || len(reported) != 1 {
			t.Fatalf("case %d: %+v (reported %d), want a *CorruptionError at raft index 7, leaf 0", i, res, len(reported))
		}
		if fsm.Ledger().Log().Size() != 0 {
			t.Fatalf("case %d: a corrupt entry changed the ledger", i)
		}
		if res := fsm.Apply(&raft.Log{Index: 8, Type: raft.LogCommand, Data: frameCommand(study)}).(ApplyResult); !errors.Is(res.Err, ErrHalted) || fsm.Ledger().Log().Size() != 0 {
			t.Fatalf("case %d: halted FSM applied the next entry: %+v", i, res)
		}
		if _, err := fsm.Snapshot(); !errors.Is(err, ErrHalted) {
			t.Fatalf("case %d: halted FSM snapshotted: %v", i, err)
		}
	}
	// A rule rejection is not corruption and does not halt.
	fsm := NewFSM(f.CA.Pool())
	if res := fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: frameCommand(round1)}).(ApplyResult); !errors.Is(res.Err, audit.ErrUnknownStudy) || errors.Is(res.Err, ErrCorrupt) {
		t.Fatalf("round before study: %+v", res)
	}
	if res := fsm.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: frameCommand(study)}).(ApplyResult); res.Err != nil || fsm.Halted() != nil {
		t.Fatalf("after a rule rejection: %+v, halted %v", res, fsm.Halted())
	}
}
