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
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/logtest"
)

// TestNormBoundLeavesOutAScaledUpdate: in a secure study with a norm bound,
// a compromised hospital (va) scales its update ×10^6 every round. Three
// key holders open one projection of each contribution; va's is far past
// the bound and is left out before the aggregate is formed, every round,
// while the honest hospitals (which clip to the bound) are never left out.
// Each round record states every projection and the exclusion, every audit
// node accepts it, and the final model verifies.
func TestNormBoundLeavesOutAScaledUpdate(t *testing.T) {
	slowUnderRace(t)
	rounds := 3
	if testing.Short() {
		rounds = 2
	}
	st := secureStudy(t, aggregation.FedAvg, rounds, 3, 3)
	st.NormBound = 1
	var logs logtest.Buffer
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Client: func(site string, kc *client.Config) {
		if site == "va" {
			kc.Tamper = func(_ uint64, delta []float64) {
				for i := range delta {
					delta[i] *= 1e6
				}
			}
		}
	}})
	startClients(t, fed, nil)
	res, err := fed.Wait(4 * time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	if len(res.Rounds) != rounds {
		t.Fatalf("%d rounds, want %d", len(res.Rounds), rounds)
	}
	for _, r := range res.Rounds {
		if r.Failed || strings.Join(r.Contributors, ",") != "cleveland,hungary,switzerland" || strings.Join(r.Excluded, ",") != "va" {
			t.Fatalf("round %d: failed=%v (%s), contributors %v, excluded %v", r.Round, r.Failed, r.Reason, r.Contributors, r.Excluded)
		}
		for site, p := range r.Projections {
			var n uint64
			for _, c := range r.Contributions {
				if c.Site == site {
					n = c.Samples
				}
			}
			if site == "va" {
				if math.Abs(p) < 1e3 {
					t.Fatalf("round %d: va's projection %v is not far past the bound", r.Round, p)
				}
				continue
			}
			if math.Abs(p) > float64(n) {
				t.Fatalf("round %d: %s's projection %v past its bound %d", r.Round, site, p, n)
			}
		}
	}
	report, b, err := fed.Verify(context.Background(), res.Model)
	if err != nil {
		t.Fatal(err)
	}
	// The regulator's report names the exclusion in every round.
	var text strings.Builder
	if err := report.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if got := strings.Count(text.String(), "left out, past the norm bound: va"); got != rounds {
		t.Fatalf("the verify report names va's exclusion in %d rounds, want %d:\n%s", got, rounds, text.String())
	}
	trust, _ := fed.Audit.Trust.Trust()
	_, _, steps, err := audit.ReplayBundle(b, trust)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Record.Kind != audit.KindRoundCompleted {
			continue
		}
		if s.Record.Param(audit.ParamExcluded) != "va" {
			t.Fatalf("round %d's record does not name the exclusion: %q", s.Record.Round, s.Record.Param(audit.ParamExcluded))
		}
		found := 0
		for _, m := range s.Record.Metrics {
			if strings.HasPrefix(m.Name, audit.MetricProjectionPrefix) {
				found++
			}
		}
		if found != 4 {
			t.Fatalf("round %d's record states %d projections, want 4", s.Record.Round, found)
		}
	}
}
