package audit_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

// TestNormBoundRules: in a secure study with a norm bound, a completed
// round states the opened projection of every contribution it aggregates,
// each within its bound (samples × B); a round that aggregates one past it,
// or states none, is refused, and the bound is for secure studies only.
func TestNormBoundRules(t *testing.T) {
	f := audittest.NewFixtureWith(t, audittest.Options{Threshold: 2, KeyHolders: []string{"site-a", "site-b"},
		Hyperparameters: []audit.Param{{Name: audit.ParamNormBound, Value: "0.5"}}})
	f.MustApply(t, f.Coord, f.KeySetup)
	base := f.Round(1, audittest.Model(0), audittest.Output(1), "site-a", "site-b")
	stated := func(a, b float64) *audit.Record {
		return vouched(f.Builder, base, func(r *audit.Record) {
			r.Metrics = append(r.Metrics, audit.Metric{Name: audit.MetricProjectionPrefix + "site-a", Value: a},
				audit.Metric{Name: audit.MetricProjectionPrefix + "site-b", Value: b})
		})
	}
	// site-a has 110 samples, site-b 120: bounds 55 and 60.
	expectRejected(t, f.L, []ruleCase{
		signed("no projections stated", f.Coord, base, audit.ErrNormBound),
		signed("one contribution past its bound", f.Coord, stated(-54, 61), audit.ErrNormBound),
		signed("the other past its bound", f.Coord, stated(-56, 1), audit.ErrNormBound),
	})
	// An excluded site's projection may be stated; it is not a contributor.
	ok := vouched(f.Builder, stated(55, -60), func(r *audit.Record) {
		r.Metrics = append(r.Metrics, audit.Metric{Name: audit.MetricProjectionPrefix + "site-c", Value: 1e9})
	})
	f.MustApply(t, f.Coord, ok)

	p := audittest.NewPKI(t)
	b := p.NewBuilder(audittest.Options{Hyperparameters: []audit.Param{{Name: audit.ParamNormBound, Value: "0.5"}}}, time.Now().UnixNano())
	if _, err := audit.NewLedger(p.CA.Pool()).Apply(audittest.Leaf(p.Admin, b.Study)); !errors.Is(err, audit.ErrStudyRules) {
		t.Fatalf("a plaintext study with a norm bound: %v", err)
	}
	for _, v := range []string{"0", "-1", "NaN", "x", "+Inf"} {
		b := p.NewBuilder(audittest.Options{Threshold: 2, Hyperparameters: []audit.Param{{Name: audit.ParamNormBound, Value: v}}}, time.Now().UnixNano())
		if _, err := audit.NewLedger(p.CA.Pool()).Apply(audittest.Leaf(p.Admin, b.Study)); !errors.Is(err, audit.ErrStudyRules) {
			t.Fatalf("norm bound %q: %v", v, err)
		}
	}
}
