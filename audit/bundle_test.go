package audit

import (
	"bytes"
	"errors"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

type bundleFixture struct {
	*ledgerFixture
	bundle *Bundle
	trust  Trust
}

func newBundleFixture(t *testing.T, rounds int) *bundleFixture {
	t.Helper()
	f := newLedgerFixture(t)
	for r := 1; r <= rounds; r++ {
		f.mustApply(t, f.coord, f.round(uint64(r), model(byte(r-1)), model(byte(r)), "site-a", "site-b"))
	}
	n, root, _ := f.l.Root()
	nodeS, nodeV := noteKeys(t, "node-1")
	witS, witV := noteKeys(t, "witness-1")
	_, otherV := noteKeys(t, "witness-2")
	signed := Must(SignCheckpoint(Checkpoint{Origin: "fedledger/audit", Size: n, Root: root}, nodeS))
	cos := Must(NewWitness(witS, note.VerifierList(nodeV)).Cosign(signed, nil))
	b := &Bundle{Checkpoint: cos}
	for i := int64(0); i < n; i++ {
		b.Leaves = append(b.Leaves, Must(f.l.Log().Leaf(i)))
	}
	return &bundleFixture{ledgerFixture: f, bundle: b,
		trust: Trust{Roots: f.ca.Pool(), Keys: note.VerifierList(nodeV, witV, otherV), Quorum: 2}}
}

func TestVerifyBundle(t *testing.T) {
	f := newBundleFixture(t, 4)
	dec, err := UnmarshalBundle(f.bundle.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	lin, err := VerifyBundle(dec, f.trust, "heart", model(4))
	if err != nil {
		t.Fatalf("VerifyBundle: %v", err)
	}
	if len(lin.Steps) != 4 || lin.Initial != model(0) || lin.Steps[0].Record.Round != 1 || lin.Steps[3].Record.OutputModel != model(4) {
		t.Fatalf("lineage %+v", lin)
	}
	if lin, err := VerifyBundle(dec, f.trust, "heart", model(2)); err != nil || len(lin.Steps) != 2 {
		t.Fatalf("intermediate model: %v", err)
	}
	if _, err := VerifyBundle(dec, f.trust, "heart", model(9)); !errors.Is(err, ErrLineage) {
		t.Fatalf("unknown model: %v", err)
	}
	if _, err := VerifyBundle(dec, f.trust, "other", model(4)); !errors.Is(err, ErrUnknownStudy) {
		t.Fatalf("unknown study: %v", err)
	}
	strict := f.trust
	strict.Quorum = 3
	if _, err := VerifyBundle(dec, strict, "heart", model(4)); !errors.Is(err, ErrQuorum) {
		t.Fatalf("3-of-3 quorum with 2 signatures: %v", err)
	}
}

func TestVerifyBundleTamper(t *testing.T) {
	f := newBundleFixture(t, 2)
	verify := func(b *Bundle) error {
		_, err := VerifyBundle(b, f.trust, "heart", model(2))
		return err
	}
	if err := verify(f.bundle); err != nil {
		t.Fatal(err)
	}
	clone := func() *Bundle {
		b := &Bundle{Checkpoint: bytes.Clone(f.bundle.Checkpoint)}
		for _, l := range f.bundle.Leaves {
			b.Leaves = append(b.Leaves, bytes.Clone(l))
		}
		return b
	}
	for i := range f.bundle.Leaves {
		b := clone()
		b.Leaves = append(b.Leaves[:i], b.Leaves[i+1:]...)
		if err := verify(b); err == nil {
			t.Fatalf("dropping entry %d accepted", i)
		}
	}
	b := clone()
	b.Leaves[1], b.Leaves[2] = b.Leaves[2], b.Leaves[1]
	if err := verify(b); err == nil {
		t.Fatal("reordered entries accepted")
	}
	b = clone()
	b.Leaves = append(b.Leaves, b.Leaves[1])
	if err := verify(b); err == nil {
		t.Fatal("duplicated entry accepted")
	}
	// Flip every byte of every record and of the checkpoint.
	enc := f.bundle.Marshal()
	step := 1
	if testing.Short() {
		step = 7
	}
	for i := 0; i < len(enc); i += step {
		m := bytes.Clone(enc)
		m[i] ^= 0x01
		db, err := UnmarshalBundle(m)
		if err != nil {
			continue
		}
		if err := verify(db); err == nil {
			t.Fatalf("flip at byte %d of %d accepted", i, len(enc))
		}
	}
}

func FuzzUnmarshalBundle(f *testing.F) {
	f.Add((&Bundle{Checkpoint: []byte("o\n1\nAAAA\n"), Leaves: [][]byte{{1, 2}, {}}}).Marshal())
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		bu, err := UnmarshalBundle(b)
		if err == nil && !bytes.Equal(bu.Marshal(), b) {
			t.Fatal("accepted non-canonical bundle")
		}
	})
}
