package coordinator_test

import (
	"context"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/logtest"
)

// TestDPStudyStopsAtItsBudget: a record-level DP study allowed 10 rounds
// whose budget covers fewer runs those, says why it stops, and ends
// cleanly; every round record states the ε spent, the last one within the
// budget; the verified lineage reports it; and the round past the budget,
// submitted with the coordinator's key, is refused by the log.
func TestDPStudyStopsAtItsBudget(t *testing.T) {
	st := plainStudy(t, aggregation.FedAvg, 10, 4)
	st.Training.LocalSteps = 20
	st.DP = &coordinator.DPConfig{Epsilon: 1.2, Delta: 1e-5, NoiseMultiplier: 2, ClipNorm: 1, SampleRate: 0.05}
	budget, err := st.DPBudget()
	if err != nil {
		t.Fatal(err)
	}
	n, err := budget.Rounds(st.Rounds)
	if err != nil || n < 2 || n >= st.Rounds {
		t.Fatalf("the budget allows %d of %d rounds (%v); the test wants fewer", n, st.Rounds, err)
	}
	var logs logtest.Buffer
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 3, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	startClients(t, fed, nil)
	res := wait(t, fed)
	if len(res.Rounds) != n {
		t.Fatalf("%d rounds ran, the budget allows %d", len(res.Rounds), n)
	}
	warn := logs.Find("the study's privacy budget allows fewer rounds than it may run; it ends after them")
	if len(warn) != 1 || warn[0]["rounds"] != float64(n) || warn[0]["of"] != float64(st.Rounds) {
		t.Fatalf("the coordinator did not say why the study stops: %v", warn)
	}
	rep, b, err := fed.Verify(context.Background(), res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if rep.DP == nil || rep.DP.Rounds != uint64(n) || rep.DP.EpsilonSpent > 1.2 || rep.DP.EpsilonBudget != 1.2 {
		t.Fatalf("verified lineage's privacy: %+v", rep.DP)
	}
	// Each round record states the ε spent after it.
	trust, _ := fed.Audit.Trust.Trust()
	_, _, steps, err := audit.ReplayBundle(b, trust)
	if err != nil {
		t.Fatal(err)
	}
	var last *audit.Record
	for _, s := range steps {
		if s.Record.Kind != audit.KindRoundCompleted {
			continue
		}
		last = s.Record
		want, _ := budget.Spent(int(s.Record.Round))
		found := false
		for _, m := range s.Record.Metrics {
			if m.Name == audit.MetricDPEpsilon && math.Abs(m.Value-want) <= 1e-12*want {
				found = true
			}
		}
		if !found {
			t.Fatalf("round %d does not state ε spent %v: %v", s.Record.Round, want, s.Record.Metrics)
		}
	}
	// The round past the budget, as the coordinator would have recorded
	// it, is refused by the log.
	next := *last
	next.Round, next.ParentModel, next.OptimizerBefore = last.Round+1, last.OutputModel, last.OptimizerAfter
	next.TimestampUnixNs = time.Now().UnixNano()
	for i, m := range next.Metrics {
		if m.Name == audit.MetricDPEpsilon {
			next.Metrics = append(next.Metrics[:i:i], audit.Metric{Name: m.Name, Value: 1.2})
		}
	}
	if err := appendRecord(fed, &next); err == nil || !strings.Contains(err.Error(), "exceeds the study's privacy budget") {
		t.Fatalf("the round past the budget: %v", err)
	}
}
