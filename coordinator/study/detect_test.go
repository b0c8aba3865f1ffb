package study

import (
	"math/rand"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
)

// TestDetectFlagsAnUnusualSite: over ten rounds of four sites with steady
// signals, a site whose disclosed projection jumps to near its bound from
// round 8 on is flagged in those rounds, naming the signal, and no site is
// flagged before (nor during the warm-up).
func TestDetectFlagsAnUnusualSite(t *testing.T) {
	m := &Machine{cfg: Config{NormBound: 1}, detector: newDetector()}
	rng := rand.New(rand.NewSource(1))
	sites := []string{"a", "b", "c", "d"}
	for n := uint64(1); n <= 10; n++ {
		r := &round{n: n, updates: map[string]accepted{}, projections: map[string]float64{}}
		for i, s := range sites {
			loss := 0.5 + 0.1*float64(i) + 0.01*rng.NormFloat64()
			r.updates[s] = accepted{c: Contribution{Contribution: audit.Contribution{Site: s, Samples: 10}}, parentTest: &model.Metrics{Loss: loss},
				uploaded: time.Duration(2+i)*time.Second + time.Duration(rng.Intn(300))*time.Millisecond}
			r.projections[s] = 10 * (0.1 + 0.02*rng.NormFloat64()) // n·|⟨Δ,u⟩| around 10% of n·B
		}
		if n >= 8 {
			r.projections["d"] = 9.5 // 95% of its bound: within it, but unlike anyone
		}
		m.r = r
		flags := m.detect()
		if m.detectorErr != nil {
			t.Fatal(m.detectorErr)
		}
		switch {
		case n < 8 && len(flags) > 0:
			t.Fatalf("round %d: honest sites flagged: %v", n, flags)
		case n >= 8 && (len(flags) != 1 || flags[0].Site != "d"):
			t.Fatalf("round %d: flags %v, want d alone", n, flags)
		case n >= 8:
			t.Logf("round %d: %s: %s", n, flags[0].Site, flags[0].Reason)
		}
	}
}
