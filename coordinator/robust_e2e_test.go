package coordinator_test

import (
	"math"
	"os"
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
)

// TestRobustAggregatorResistsAScaledUpdate: in a plaintext study, va sends
// its update ×10^6. With the weighted average the global model is thrown
// far away; with the coordinate-wise median (study.robust_aggregator) it
// stays where the honest hospitals take it, and the study record names the
// aggregator.
func TestRobustAggregatorResistsAScaledUpdate(t *testing.T) {
	largest := map[string]float64{}
	for _, robust := range []string{"", aggregation.RobustMedian} {
		st := plainStudy(t, aggregation.FedAvg, 2, 4)
		st.Robust = robust
		fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1, Client: func(site string, kc *client.Config) {
			if site == "va" {
				kc.Tamper = func(_ uint64, delta []float64) {
					for i := range delta {
						delta[i] *= 1e6
					}
				}
			}
		}})
		startClients(t, fed, nil)
		res, err := fed.Wait(2 * time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(fed.Coordinator().FinalModelPath())
		if err != nil {
			t.Fatal(err)
		}
		_, w, err := model.Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range w {
			largest[robust] = max(largest[robust], math.Abs(v))
		}
		report, _, err := fed.Verify(t.Context(), res.Model)
		if err != nil {
			t.Fatal(err)
		}
		var named bool
		for _, p := range report.Parameters {
			named = named || (p.Name == "robust_aggregator" && p.Value == robust)
		}
		if robust != "" && !named {
			t.Fatalf("the study record does not name the aggregator: %v", report.Parameters)
		}
		fed.Close()
	}
	if largest[""] < 1e3 || largest[aggregation.RobustMedian] > 5 {
		t.Fatalf("largest weight: %g with the weighted average (want > 1e3), %g with the median (want < 5)", largest[""], largest[aggregation.RobustMedian])
	}
}
