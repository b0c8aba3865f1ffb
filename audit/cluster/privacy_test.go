package cluster

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TestClusterRefusesRoundPastPrivacyBudget: a record-level DP study (ε = 2
// at δ = 1e-5; DP-SGD at q = 0.05, σ = 2, 20 steps a round) on a real
// three-node cluster takes rounds 1..n through the cluster client, n being
// what DPBudget.Rounds gives (a failed round counts like a completed one).
// Round n+1 is refused, with the privacy budget named, through the client
// and through every node: as it is, stating a smaller ε spent (re-signed by
// the coordinator), and as a failed round. No node's tree, root or study
// state changes, the three agree, and no refused record entered any Raft
// log.
func TestClusterRefusesRoundPastPrivacyBudget(t *testing.T) {
	start := time.Now()
	c := newCluster(t, 3, nil)
	const study = "dp-heart"
	b := c.PKI.NewBuilder(audittest.Options{ID: study, Hyperparameters: []audit.Param{
		{Name: "local_steps", Value: "20"}, {Name: audit.ParamDPEpsilon, Value: "2"}, {Name: audit.ParamDPDelta, Value: "1e-05"},
		{Name: audit.ParamDPNoiseMultiplier, Value: "2"}, {Name: audit.ParamDPClipNorm, Value: "1"}, {Name: audit.ParamDPSampleRate, Value: "0.05"},
	}}, time.Now().UnixNano())
	budget, err := audit.DPBudgetOf(b.Study)
	if err != nil || budget == nil {
		t.Fatalf("budget %v, %v", budget, err)
	}
	n, err := budget.Rounds(64)
	if err != nil {
		t.Fatal(err)
	}
	spentN, _ := budget.Spent(n)
	spentNext, _ := budget.Spent(n + 1)
	if n < 3 || n >= 64 || !(spentN <= budget.Epsilon && spentNext > budget.Epsilon) {
		t.Fatalf("the budget allows %d rounds (ε %v after them, %v after one more); the test wants a few, with ε = %v between", n, spentN, spentNext, budget.Epsilon)
	}
	t.Logf("ε = %v allows %d rounds: ε spent %.4f after round %d, %.4f after round %d", budget.Epsilon, n, spentN, n, spentNext, n+1)

	cli, err := Dial(c.addrs, tlsutil.ClientConfig(c.Coord, c.CA.Pool(), ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	appendLeaf := func(leaf []byte) (AppendResult, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
		defer cancel()
		return cli.Append(ctx, leaf)
	}

	// The admin's study record, then rounds 1..n (round 2 fails), each at
	// its index.
	if res, err := appendLeaf(audittest.Leaf(c.Admin, b.Study)); err != nil || res.Index != 0 {
		t.Fatalf("study record: index %d, %v", res.Index, err)
	}
	parent := audittest.Model(0)
	for r := 1; r <= n; r++ {
		rec := b.Failed(uint64(r), parent)
		if r != 2 {
			rec = b.Round(uint64(r), parent, audittest.Output(uint64(r)), "site-a", "site-b")
			parent = audittest.Output(uint64(r))
		}
		res, err := appendLeaf(audittest.Leaf(c.Coord, rec))
		if err != nil || res.Index != int64(r) {
			t.Fatalf("%s round %d (ε spent %v): index %d, %v", rec.Kind, r, rec.Metrics[len(rec.Metrics)-1].Value, res.Index, err)
		}
	}
	size := c.converged()
	if size != int64(n+1) {
		t.Fatalf("tree size %d after the study and %d rounds, want %d", size, n, n+1)
	}
	type state struct {
		size  int64
		root  string
		round uint64
		out   audit.Hash
	}
	stateOf := func(i int) state {
		s, root, _ := c.nodes[i].FSM().Ledger().Root()
		out, round, _ := c.nodes[i].FSM().Ledger().LatestOutput(study)
		return state{s, root.String(), round, out}
	}
	before := make([]state, len(c.nodes))
	lastIndex := make([]uint64, len(c.nodes))
	for i := range c.nodes {
		before[i], lastIndex[i] = stateOf(i), c.nodes[i].raft.LastIndex()
		if before[i] != before[0] {
			t.Fatalf("node %d's state %+v, node 0's %+v", i, before[i], before[0])
		}
	}
	if before[0].round != uint64(n) || before[0].out != audittest.Output(uint64(n)) {
		t.Fatalf("study state after %d rounds: round %d output %x", n, before[0].round, before[0].out[:2])
	}

	next := b.Round(uint64(n+1), parent, audittest.Output(uint64(n+1)), "site-a", "site-b")
	// The coordinator states the ε of the round before, which is within
	// the budget. No hospital signs the metrics, so re-signing the envelope
	// (appendVia and the Leaf below sign with c.Coord) is all a forger
	// needs.
	understated := audittest.Must(audit.UnmarshalRecord(next.Marshal()))
	edited := false
	for i := range understated.Metrics {
		if understated.Metrics[i].Name == audit.MetricDPEpsilon {
			understated.Metrics[i].Value, edited = spentN, true
		}
	}
	if !edited {
		t.Fatalf("round %d carries no %s: %+v", n+1, audit.MetricDPEpsilon, next.Metrics)
	}
	refusals := 0
	for _, tc := range []struct {
		name string
		rec  *audit.Record
	}{
		{"the round past the budget", next},
		{"the round past the budget, stating less", understated},
		{"a failed round past the budget", b.Failed(uint64(n+1), parent)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Through the client the refusal crosses gRPC as a status:
			// ErrRejected with the rule's message.
			_, err := appendLeaf(audittest.Leaf(c.Coord, tc.rec))
			if !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), audit.ErrPrivacyBudget.Error()) {
				t.Fatalf("via the client: %v, want ErrRejected naming %q", err, audit.ErrPrivacyBudget)
			}
			t.Logf("via the client: %v", err)
			refusals++
			// Through each node: the leader returns the rule error itself,
			// a follower the leader's status.
			for i := range c.nodes {
				_, err := c.appendVia(i, c.Coord, tc.rec)
				refusals++
				if err == nil || !strings.Contains(err.Error(), audit.ErrPrivacyBudget.Error()) {
					t.Fatalf("via node %d: %v, want a refusal naming %q", i, err, audit.ErrPrivacyBudget)
				}
				var re *audit.RuleError
				if c.nodes[i].IsLeader() && (!errors.Is(err, audit.ErrPrivacyBudget) || !errors.As(err, &re) || re.Round != uint64(n+1)) {
					t.Fatalf("via the leader %d: %v is not a *RuleError for round %d wrapping ErrPrivacyBudget", i, err, n+1)
				}
			}
		})
	}

	if got := c.converged(); got != size {
		t.Fatalf("tree size %d after %d refused appends, want %d", got, refusals, size)
	}
	for i, node := range c.nodes {
		if got := stateOf(i); got != before[i] {
			t.Fatalf("node %d's state changed: %+v, was %+v", i, got, before[i])
		}
		// The leader refused each record before proposing it: none entered
		// a Raft log (a leader change would add a no-op, not a command).
		for idx := lastIndex[i] + 1; idx <= node.raft.LastIndex(); idx++ {
			var l raft.Log
			if err := node.store.GetLog(idx, &l); err != nil || l.Type == raft.LogCommand {
				t.Fatalf("node %d raft index %d after the refused appends: %v entry (%v)", i, idx, l.Type, err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if out, round, err := cli.LatestOutput(ctx, study); err != nil || round != uint64(n) || out != audittest.Output(uint64(n)) {
		t.Fatalf("the client's current read: round %d output %x, %v; want round %d", round, out[:2], err, n)
	}
	t.Logf("%d rounds accepted, %d appends of round %d refused, in %v", n, refusals, n+1, time.Since(start).Round(time.Millisecond))
}
