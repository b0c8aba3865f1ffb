package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

// TestClusterRefusesForgedRounds: records a coordinator's key alone can
// produce — fabricated contributions, a wrong round number, a secure round
// without its HE parameters, fewer than K genuine hospital signatures, no
// countersignatures, a round beyond the study's limit — are refused
// whichever node they are sent to, with the rule that refuses them, and no
// node's tree changes; the genuine round is accepted after them.
func TestClusterRefusesForgedRounds(t *testing.T) {
	c := newCluster(t, 3, nil)
	b := c.PKI.NewBuilder(audittest.Options{ID: "secure-heart", Threshold: 2, Rounds: 2}, time.Now().UnixNano())
	r1 := b.Round(1, audittest.Model(0), audittest.Model(1), audittest.Sites...)
	r2 := b.Round(2, audittest.Model(1), audittest.Model(2), "site-a", "site-b")
	for i, step := range []struct {
		rec    *audit.Record
		signer string
	}{{b.Study, "admin"}, {b.KeySetup, "coord"}, {r1, "coord"}} {
		id := c.Coord
		if step.signer == "admin" {
			id = c.Admin
		}
		if _, err := c.appendVia(i%3, id, step.rec); err != nil {
			t.Fatalf("%s via node %d: %v", step.rec.Kind, i%3, err)
		}
	}
	size := c.converged()

	clone := func(mod func(*audit.Record)) *audit.Record {
		r := audittest.Must(audit.UnmarshalRecord(r2.Marshal()))
		mod(r)
		return r
	}
	vouched := func(mod func(*audit.Record)) *audit.Record {
		r := clone(mod)
		b.Vouch(r)
		return r
	}
	random := func(n int) []byte {
		p := make([]byte, n)
		rand.Read(p)
		return p
	}
	refuse := func(t *testing.T, rec *audit.Record, want error) {
		t.Helper()
		roots := map[int]string{}
		for i, n := range c.nodes {
			s, root, _ := n.FSM().Ledger().Root()
			roots[i] = root.String()
			if s != size {
				t.Fatalf("node %d has %d entries before the forged append, want %d", i, s, size)
			}
		}
		for i := range c.nodes {
			_, err := c.appendVia(i, c.Coord, rec)
			if err == nil || !strings.Contains(err.Error(), want.Error()) {
				t.Fatalf("via node %d: %v, want a refusal for %q", i, err, want)
			}
			if c.nodes[i].IsLeader() && !errors.Is(err, want) {
				t.Fatalf("via the leader %d: %v is not %v", i, err, want)
			}
		}
		if got := c.converged(); got != size {
			t.Fatalf("tree size %d after a refused append, want %d", got, size)
		}
		for i, n := range c.nodes {
			if s, root, _ := n.FSM().Ledger().Root(); s != size || root.String() != roots[i] {
				t.Fatalf("node %d's tree changed: size %d root %v", i, s, root)
			}
			if out, round, _ := n.FSM().Ledger().LatestOutput("secure-heart"); round != 1 && round != 2 || out != audittest.Output(round) {
				t.Fatalf("node %d's study state changed: round %d output %x", i, round, out[:2])
			}
		}
	}

	for _, tc := range []struct {
		name string
		rec  *audit.Record
		want error
	}{
		{"fabricated contributions", clone(func(r *audit.Record) {
			for i := range r.Contributions {
				r.Contributions[i].Samples, r.Contributions[i].Signature = 5000, random(64)
			}
		}), audit.ErrHospitalSignature},
		{"wrong round number", vouched(func(r *audit.Record) { r.Round = 3 }), audit.ErrSequence},
		{"missing HE parameters", vouched(func(r *audit.Record) { r.HEParamsID, r.CollectiveKeyHash = "", audit.Hash{} }), audit.ErrHEParams},
		{"fewer than K genuine hospital signatures", clone(func(r *audit.Record) { r.Contributions[1].Signature = random(64) }), audit.ErrHospitalSignature},
		{"fewer than K contributions", b.Round(2, audittest.Model(1), audittest.Model(2), "site-a"), audit.ErrTooFewContributors},
		{"no countersignatures", vouched(func(r *audit.Record) { r.Countersignatures = nil }), audit.ErrTooFewCountersignatures},
		{"fabricated countersignature", clone(func(r *audit.Record) { r.Countersignatures[0].Signature = random(64) }), audit.ErrHospitalSignature},
	} {
		t.Run(tc.name, func(t *testing.T) { refuse(t, tc.rec, tc.want) })
	}

	res, err := c.appendVia(1, c.Coord, r2)
	if err != nil || res.Index != size {
		t.Fatalf("genuine round 2: index %d, %v", res.Index, err)
	}
	size = c.converged()
	t.Run("round beyond the study's limit", func(t *testing.T) {
		refuse(t, b.Round(3, audittest.Model(2), audittest.Model(3), audittest.Sites...), audit.ErrRoundLimit)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, round, err := c.nodes[2].LatestOutput(ctx, "secure-heart"); err != nil || round != 2 || out != audittest.Model(2) {
		t.Fatalf("latest output after the genuine round: %x round %d, %v", out[:2], round, err)
	}
}
