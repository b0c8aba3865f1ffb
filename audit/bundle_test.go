package audit_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

// notary signs checkpoints over any list of leaves, as a log node and a
// witness would: a forged entry in a bundle it signs is caught only by
// the rules.
type notary struct {
	node, witness note.Signer
	trust         audit.Trust
}

func newNotary(t testing.TB, p *audittest.PKI) *notary {
	nodeS, nodeV := audittest.NoteKeys(t, "node-1")
	witS, witV := audittest.NoteKeys(t, "witness-1")
	_, otherV := audittest.NoteKeys(t, "witness-2")
	return &notary{node: nodeS, witness: witS, trust: audit.Trust{Roots: p.CA.Pool(), Keys: note.VerifierList(nodeV, witV, otherV), Quorum: 2}}
}

// bundle is leaves with a checkpoint over exactly them, signed by the node
// and cosigned by the witness.
func (n *notary) bundle(t testing.TB, leaves [][]byte) *audit.Bundle {
	t.Helper()
	m := audit.NewMerkleLog()
	for _, l := range leaves {
		m.Append(l)
	}
	root := audittest.Must(m.Root(m.Size()))
	signed := audittest.Must(audit.SignCheckpoint(audit.Checkpoint{Origin: "fedledger/audit", Size: m.Size(), Root: root}, n.node))
	cos := audittest.Must(audit.NewWitness(n.witness, n.trust.Keys).Cosign(signed, nil))
	return &audit.Bundle{Checkpoint: cos, Leaves: leaves}
}

type bundleFixture struct {
	*audittest.Fixture
	*notary
	bundle *audit.Bundle
}

// newBundleFixture: a study of the given mode with rounds completed
// rounds (round r outputs Model(r)), exported in a cosigned bundle.
func newBundleFixture(t *testing.T, f *audittest.Fixture, rounds int) *bundleFixture {
	t.Helper()
	for _, r := range f.Chain(rounds, "site-a", "site-b") {
		f.MustApply(t, f.Coord, r)
	}
	b := &bundleFixture{Fixture: f, notary: newNotary(t, f.PKI)}
	b.bundle = b.notary.bundle(t, f.L.Leaves())
	return b
}

func TestVerifyBundle(t *testing.T) {
	for name, f := range map[string]*audittest.Fixture{"plaintext": audittest.NewFixture(t), "secure": audittest.NewSecureFixture(t)} {
		t.Run(name, func(t *testing.T) {
			f := newBundleFixture(t, f, 4)
			dec, err := audit.UnmarshalBundle(f.bundle.Marshal())
			if err != nil {
				t.Fatal(err)
			}
			lin, err := audit.VerifyBundle(dec, f.trust, "heart", model(4))
			if err != nil {
				t.Fatalf("VerifyBundle: %v", err)
			}
			if len(lin.Steps) != 4 || lin.Initial != model(0) || lin.Steps[0].Record.Round != 1 || lin.Steps[3].Record.OutputModel != model(4) {
				t.Fatalf("lineage %+v", lin)
			}
			if lin.Study != "heart" || lin.StudyRecord.Record.StudyID != "heart" || lin.StudyRecord.Index != 0 {
				t.Fatalf("lineage study %q %+v", lin.Study, lin.StudyRecord)
			}
			if (lin.KeySetup != nil) != (name == "secure") || (lin.KeySetup != nil && (lin.KeySetup.Index != 1 || lin.KeySetup.Record.CollectiveKeyHash != f.KeySetup.CollectiveKeyHash)) {
				t.Fatalf("lineage key setup %+v", lin.KeySetup)
			}
			if lin, err := audit.VerifyBundle(dec, f.trust, "heart", model(2)); err != nil || len(lin.Steps) != 2 {
				t.Fatalf("intermediate model: %v", err)
			}
			if _, err := audit.VerifyBundle(dec, f.trust, "heart", model(9)); !errors.Is(err, audit.ErrLineage) {
				t.Fatalf("unknown model: %v", err)
			}
			if _, err := audit.VerifyBundle(dec, f.trust, "other", model(4)); !errors.Is(err, audit.ErrUnknownStudy) {
				t.Fatalf("unknown study: %v", err)
			}
			strict := f.trust
			strict.Quorum = 3
			if _, err := audit.VerifyBundle(dec, strict, "heart", model(4)); !errors.Is(err, audit.ErrQuorum) {
				t.Fatalf("3-of-3 quorum with 2 signatures: %v", err)
			}
		})
	}
}

// TestVerifyBundleRejectsForgedRounds: a bundle whose checkpoint is
// properly signed and cosigned over a forged round (as a compromised
// coordinator and log operator could produce) fails verification with the
// rule the round breaks, whichever model is asked about; the genuine
// lineage verifies.
func TestVerifyBundleRejectsForgedRounds(t *testing.T) {
	f := audittest.NewFixtureWith(t, audittest.Options{Threshold: 2, Rounds: 3})
	n := newNotary(t, f.PKI)
	genuine := f.Chain(3, audittest.Sites...)
	leaves := func(recs ...*audit.Record) [][]byte {
		out := f.L.Leaves() // study and key setup
		for _, r := range recs {
			out = append(out, audittest.Leaf(f.Coord, r))
		}
		return out
	}
	r3 := genuine[2]
	forged := []struct {
		name string
		rec  *audit.Record
		want error
	}{
		{"fabricated contributions", with(r3, func(r *audit.Record) {
			for i := range r.Contributions {
				r.Contributions[i].Samples, r.Contributions[i].Signature = 5000, randomBytes(64)
			}
		}), audit.ErrHospitalSignature},
		{"round beyond the limit", f.Round(4, model(3), model(4), audittest.Sites...), audit.ErrRoundLimit},
		{"wrong round number", vouched(f.Builder, r3, func(r *audit.Record) { r.Round = 5 }), audit.ErrSequence},
		{"missing HE parameters", vouched(f.Builder, r3, func(r *audit.Record) { r.HEParamsID, r.CollectiveKeyHash = "", audit.Hash{} }), audit.ErrHEParams},
		{"fewer than K genuine contributions", f.Round(3, model(2), model(3), "site-a"), audit.ErrTooFewContributors},
		{"no countersignatures", vouched(f.Builder, r3, func(r *audit.Record) { r.Countersignatures = nil }), audit.ErrTooFewCountersignatures},
	}
	for _, c := range forged {
		t.Run(c.name, func(t *testing.T) {
			var b *audit.Bundle
			if c.rec.Round == 4 {
				b = n.bundle(t, leaves(append(genuine, c.rec)...))
			} else {
				b = n.bundle(t, leaves(genuine[0], genuine[1], c.rec))
			}
			for _, m := range []audit.Hash{c.rec.OutputModel, model(2)} {
				_, err := audit.VerifyBundle(b, n.trust, "heart", m)
				var re *audit.RuleError
				if !errors.Is(err, c.want) || !errors.As(err, &re) {
					t.Fatalf("verify model %x: %v, want %v", m[:2], err, c.want)
				}
			}
		})
	}
	b := n.bundle(t, leaves(genuine...))
	if lin, err := audit.VerifyBundle(b, n.trust, "heart", model(3)); err != nil || len(lin.Steps) != 3 {
		t.Fatalf("genuine lineage: %v", err)
	}
}

func TestVerifyBundleTamper(t *testing.T) {
	f := newBundleFixture(t, audittest.NewSecureFixture(t), 2)
	verify := func(b *audit.Bundle) error {
		_, err := audit.VerifyBundle(b, f.trust, "heart", model(2))
		return err
	}
	if err := verify(f.bundle); err != nil {
		t.Fatal(err)
	}
	clone := func() *audit.Bundle {
		b := &audit.Bundle{Checkpoint: bytes.Clone(f.bundle.Checkpoint)}
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
	b.Leaves[2], b.Leaves[3] = b.Leaves[3], b.Leaves[2]
	if err := verify(b); err == nil {
		t.Fatal("reordered entries accepted")
	}
	b = clone()
	b.Leaves = append(b.Leaves, b.Leaves[2])
	if err := verify(b); err == nil {
		t.Fatal("duplicated entry accepted")
	}
	// Flip bytes of every record and of the checkpoint. Each flip replays
	// the whole bundle, so the test samples: every 3rd byte of the
	// checkpoint and of the last round's entry, every 13th of the other
	// entries, from a random phase (logged) so that runs together cover
	// every byte.
	enc := f.bundle.Marshal()
	last := len(enc) - len(f.bundle.Leaves[len(f.bundle.Leaves)-1]) - 2 // with its length prefix
	checkpointEnd := 1 + 2 + len(f.bundle.Checkpoint)
	phase := int(randomBytes(1)[0])
	flips := 0
	start := time.Now()
	for i := range enc {
		stride := 13
		if i < checkpointEnd || i >= last {
			stride = 3
		}
		if (i+phase)%stride != 0 {
			continue
		}
		flips++
		m := bytes.Clone(enc)
		m[i] ^= 0x01
		db, err := audit.UnmarshalBundle(m)
		if err != nil {
			continue
		}
		if err := verify(db); err == nil {
			t.Fatalf("flip at byte %d of %d accepted (phase %d)", i, len(enc), phase)
		}
	}
	t.Logf("%d flips of %d bytes (phase %d) in %v", flips, len(enc), phase, time.Since(start))
}

func FuzzUnmarshalBundle(f *testing.F) {
	f.Add((&audit.Bundle{Checkpoint: []byte("o\n1\nAAAA\n"), Leaves: [][]byte{{1, 2}, {}}}).Marshal())
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		bu, err := audit.UnmarshalBundle(b)
		if err == nil && !bytes.Equal(bu.Marshal(), b) {
			t.Fatal("accepted non-canonical bundle")
		}
	})
}
