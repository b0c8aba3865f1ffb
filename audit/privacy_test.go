package audit_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

// dpParams declare a record-level DP budget of ε = eps at δ = 1e-5, for
// DP-SGD at q = 0.05, σ = 2, C = 1, 20 steps a round.
func dpParams(eps string) []audit.Param {
	return []audit.Param{{Name: "local_steps", Value: "20"}, {Name: audit.ParamDPEpsilon, Value: eps}, {Name: audit.ParamDPDelta, Value: "1e-05"},
		{Name: audit.ParamDPNoiseMultiplier, Value: "2"}, {Name: audit.ParamDPClipNorm, Value: "1"}, {Name: audit.ParamDPSampleRate, Value: "0.05"}}
}

// TestPrivacyBudgetRules: every round record of a DP study states the ε
// its hospitals have spent, exactly as the declared mechanism gives it,
// and the rules refuse the round that would pass the budget, whatever
// the coordinator says it spent. A refused record leaves the ledger as it
// was.
func TestPrivacyBudgetRules(t *testing.T) {
	f := audittest.NewFixtureWith(t, audittest.Options{Hyperparameters: dpParams("2")})
	budget, err := audit.DPBudgetOf(f.Study)
	if err != nil || budget == nil {
		t.Fatalf("budget %v, %v", budget, err)
	}
	n, err := budget.Rounds(64)
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 || n >= 64 {
		t.Fatalf("the budget allows %d rounds; the test wants a few", n)
	}
	// Rounds 1..n are accepted (round 2 fails: it counts all the same).
	parent := audittest.Model(0)
	for r := 1; r <= n; r++ {
		if r == 2 {
			f.MustApply(t, f.Coord, f.Failed(2, parent))
			continue
		}
		out := audittest.Output(uint64(r))
		f.MustApply(t, f.Coord, f.Round(uint64(r), parent, out, "site-a", "site-b"))
		parent = out
	}
	spentN, _ := budget.Spent(n)
	spentNext, _ := budget.Spent(n + 1)
	if !(spentN <= 2 && spentNext > 2) {
		t.Fatalf("ε after %d rounds %v, after %d %v: the budget 2 is not between", n, spentN, n+1, spentNext)
	}
	next := f.Round(uint64(n+1), parent, audittest.Output(uint64(n+1)), "site-a", "site-b")
	understated := with(next, func(r *audit.Record) {
		for i := range r.Metrics {
			if r.Metrics[i].Name == audit.MetricDPEpsilon {
				r.Metrics[i].Value = 1.9
			}
		}
	})
	expectRejected(t, f.L, []ruleCase{
		signed("the round past the budget", f.Coord, next, audit.ErrPrivacyBudget),
		signed("the round past the budget, stating less", f.Coord, understated, audit.ErrPrivacyBudget),
		signed("a failed round past the budget", f.Coord, f.Failed(uint64(n+1), parent), audit.ErrPrivacyBudget),
	})

	// Within the budget the stated ε must be the mechanism's.
	g := audittest.NewFixtureWith(t, audittest.Options{Hyperparameters: dpParams("2")})
	good := g.Round(1, audittest.Model(0), audittest.Output(1), "site-a", "site-b")
	restate := func(v float64) *audit.Record {
		return with(good, func(r *audit.Record) {
			for i := range r.Metrics {
				if r.Metrics[i].Name == audit.MetricDPEpsilon {
					r.Metrics[i].Value = v
				}
			}
		})
	}
	spent1, _ := budget.Spent(1)
	expectRejected(t, g.L, []ruleCase{
		signed("no ε spent stated", g.Coord, with(good, func(r *audit.Record) { r.Metrics = r.Metrics[:1] }), audit.ErrPrivacyAccount),
		signed("ε spent understated", g.Coord, restate(spent1*0.99), audit.ErrPrivacyAccount),
		signed("ε spent overstated", g.Coord, restate(spent1*1.01), audit.ErrPrivacyAccount),
		signed("ε spent NaN", g.Coord, restate(math.NaN()), audit.ErrPrivacyAccount),
		signed("failed round without ε spent", g.Coord, with(g.Failed(1, audittest.Model(0)), func(r *audit.Record) { r.Metrics = nil }), audit.ErrPrivacyAccount),
	})
	g.MustApply(t, g.Coord, good)
}

// TestPrivacyBudgetStudyRules: a study declares its DP budget whole and
// well, or not at all.
func TestPrivacyBudgetStudyRules(t *testing.T) {
	edit := func(name, value string) []audit.Param {
		ps := dpParams("3")
		for i := range ps {
			if ps[i].Name == name {
				ps[i].Value = value
			}
		}
		return ps
	}
	for name, ps := range map[string][]audit.Param{
		"ε zero":               edit(audit.ParamDPEpsilon, "0"),
		"ε not a number":       edit(audit.ParamDPEpsilon, "lots"),
		"ε infinite":           edit(audit.ParamDPEpsilon, "+Inf"),
		"δ one":                edit(audit.ParamDPDelta, "1"),
		"σ negative":           edit(audit.ParamDPNoiseMultiplier, "-1"),
		"σ tiny":               edit(audit.ParamDPNoiseMultiplier, "0.001"),
		"clip norm zero":       edit(audit.ParamDPClipNorm, "0"),
		"sample rate above 1":  edit(audit.ParamDPSampleRate, "1.5"),
		"no local steps":       edit("local_steps", "0"),
		"only part of it":      dpParams("3")[:3],
		"sample rate NaN":      edit(audit.ParamDPSampleRate, "NaN"),
		"local steps not a nr": edit("local_steps", "many"),
	} {
		t.Run(name, func(t *testing.T) {
			f := audittest.NewPKI(t)
			b := f.NewBuilder(audittest.Options{Hyperparameters: ps}, time.Now().UnixNano())
			l := audit.NewLedger(f.CA.Pool())
			_, err := l.Apply(audittest.Leaf(f.Admin, b.Study))
			if !errors.Is(err, audit.ErrStudyRules) {
				t.Fatalf("err = %v, want ErrStudyRules", err)
			}
			t.Log(err)
		})
	}
}

// TestClientLevelBudgetRules: a client-level DP study counts one Gaussian
// mechanism a round (no sampling), and every contribution weighs 1.
func TestClientLevelBudgetRules(t *testing.T) {
	ps := []audit.Param{{Name: audit.ParamDPEpsilon, Value: "5"}, {Name: audit.ParamDPDelta, Value: "1e-05"},
		{Name: audit.ParamDPNoiseMultiplier, Value: "3"}, {Name: audit.ParamDPClipNorm, Value: "0.5"}, {Name: audit.ParamDPSampleRate, Value: "1"},
		{Name: audit.ParamDPLevel, Value: audit.DPClient}}
	f := audittest.NewFixtureWith(t, audittest.Options{Hyperparameters: ps})
	b, err := audit.DPBudgetOf(f.Study)
	if err != nil || b.Level != audit.DPClient || b.StepsPerRound != 1 {
		t.Fatalf("budget %+v, %v", b, err)
	}
	good := f.Round(1, audittest.Model(0), audittest.Output(1), "site-a", "site-b")
	weighed := vouched(f.Builder, good, func(r *audit.Record) { r.Contributions[0].Samples, r.Contributions[1].Samples = 1, 1 })
	expectRejected(t, f.L, []ruleCase{
		signed("an update weighing its samples", f.Coord, good, audit.ErrPrivacyAccount),
	})
	f.MustApply(t, f.Coord, weighed)

	for name, edit := range map[string]func([]audit.Param){
		"sampled clients": func(ps []audit.Param) { ps[4].Value = "0.5" },
		"unknown level":   func(ps []audit.Param) { ps[5].Value = "hospital" },
		"level, no budget": func(ps []audit.Param) {
			ps[0].Name = "not_dp"
		},
	} {
		t.Run(name, func(t *testing.T) {
			bad := append([]audit.Param(nil), ps...)
			edit(bad)
			if _, err := audit.DPBudgetOf(&audit.Record{Hyperparameters: bad}); !errors.Is(err, audit.ErrStudyRules) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

// FuzzDPBudgetOf: any study parameters either give a budget whose
// accounting works and is monotone, or an ErrStudyRules naming the
// problem; never a panic. The seeds run as a plain test.
func FuzzDPBudgetOf(f *testing.F) {
	f.Add("3", "1e-05", "1", "1", "0.05", "50", "")
	f.Add("3", "1e-05", "6.7", "0.1", "1", "0", "client")
	f.Add("NaN", "0", "-1", "0", "2", "x", "hospital")
	f.Add("1e308", "1e-300", "0.1", "1e308", "1e-300", "100", "record")
	f.Add("3", "1e-05", "1e-300", "1", "0.05", "100", "record")
	f.Fuzz(func(t *testing.T, eps, delta, sigma, clip, q, steps, level string) {
		rec := &audit.Record{Hyperparameters: []audit.Param{
			{Name: audit.ParamDPEpsilon, Value: eps}, {Name: audit.ParamDPDelta, Value: delta}, {Name: audit.ParamDPNoiseMultiplier, Value: sigma},
			{Name: audit.ParamDPClipNorm, Value: clip}, {Name: audit.ParamDPSampleRate, Value: q}, {Name: "local_steps", Value: steps},
			{Name: audit.ParamDPLevel, Value: level}}}
		b, err := audit.DPBudgetOf(rec)
		if err != nil {
			if !errors.Is(err, audit.ErrStudyRules) {
				t.Fatalf("error %v is not ErrStudyRules", err)
			}
			return
		}
		if b.StepsPerRound > 1<<20 {
			return // a valid but enormous study: accounting is slow, not wrong
		}
		e1, err1 := b.Spent(1)
		e2, err2 := b.Spent(2)
		if err1 == nil && err2 == nil && e2 < e1 {
			t.Fatalf("ε after 2 rounds %v < after 1 %v", e2, e1)
		}
	})
}
