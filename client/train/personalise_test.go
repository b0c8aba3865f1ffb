package train

import (
	"errors"
	"math"
	"math/rand"
	"testing"

	"github.com/fedledger/fedledger/internal/model"
)

// twoSites are two sites sharing the weights (1.5, −1) of a logistic model
// but with opposite intercepts, +2 and −2 (label shift: most of A's rows
// are positive, most of B's negative).
func twoSites(n int, seed int64) (a, b *Dataset) {
	rng := rand.New(rand.NewSource(seed))
	site := func(name string, bias float64) *Dataset {
		d := &Dataset{Name: name, Features: []string{"x1", "x2"}}
		for i := 0; i < n; i++ {
			x := []float64{rng.NormFloat64(), rng.NormFloat64()}
			p := 1 / (1 + math.Exp(-(1.5*x[0] - x[1] + bias)))
			d.X = append(d.X, x)
			d.Y = append(d.Y, b2f(rng.Float64() < p))
		}
		return d
	}
	return site("a", 2), site("b", -2)
}

var logreg2 = model.Spec{Kind: model.KindLogReg, Inputs: 2}

func personalCfg(method string, steps int) PersonalConfig {
	tc := model.DefaultTrainConfig()
	tc.LearningRate, tc.BatchSize, tc.Epochs, tc.LocalSteps = 0.05, 32, 0, steps
	l := 1.0
	if method == PersonalIntercept {
		l = 0
	}
	return PersonalConfig{Method: method, Train: tc, Lambda: l}
}

// globalOf trains the one global model on both sites' rows together.
func globalOf(t *testing.T, a, b *Dataset) []float64 {
	t.Helper()
	both := &Dataset{Features: a.Features, X: append(append([][]float64{}, a.X...), b.X...), Y: append(append([]float64{}, a.Y...), b.Y...)}
	init, _ := model.InitParams(logreg2, 1)
	tc := personalCfg(PersonalFineTune, 3000).Train
	g, _, err := Train(t.Context(), logreg2, init, both, tc)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestPersonalInterceptRecoversEachSite: two sites with opposite
// intercepts federate FedPer-style (each trains from the global weights
// with its own intercept; the server averages). The shared weights come
// out as the true (1.5, −1), and each site's intercept, fitted on top of
// the global model with every weight left exactly as it is, recovers its
// own, +2 and −2; each personal model beats the global one on its site's
// held-out rows. A single global model without per-site intercepts is
// pulled to an intercept between the two.
func TestPersonalInterceptRecoversEachSite(t *testing.T) {
	a, b := twoSites(3000, 1)
	ta, tb := twoSites(2000, 2)
	if plain := globalOf(t, a, b); math.Abs(plain[2]) > 0.5 {
		t.Fatalf("the single global model's intercept is %.2f; with opposite sites it should be near 0", plain[2])
	}
	g, _ := model.InitParams(logreg2, 1)
	personal := map[string][]float64{}
	local := personalCfg(PersonalFineTune, 100).Train
	for round := 0; round < 30; round++ {
		next := make([]float64, len(g))
		for _, d := range []*Dataset{a, b} {
			p, _, err := Train(t.Context(), logreg2, LocalStart(logreg2, PersonalIntercept, g, personal[d.Name]), d, local)
			if err != nil {
				t.Fatal(err)
			}
			personal[d.Name] = p
			for i := range next {
				next[i] += p[i] / 2
			}
		}
		g = next
	}
	if math.Abs(g[0]-1.5) > 0.25 || math.Abs(g[1]+1) > 0.25 {
		t.Fatalf("shared weights %.2f, want (1.5, −1)", g[:2])
	}
	for _, c := range []struct {
		train, test *Dataset
		bias        float64
	}{{a, ta, 2}, {b, tb, -2}} {
		p, _, err := Personalise(t.Context(), logreg2, g, nil, c.train, personalCfg(PersonalIntercept, 3000))
		if err != nil {
			t.Fatal(err)
		}
		if p[0] != g[0] || p[1] != g[1] {
			t.Fatalf("site %s: weights moved from %v to %v; only the intercept is the site's", c.train.Name, g[:2], p[:2])
		}
		if math.Abs(p[2]-c.bias) > 0.3 {
			t.Errorf("site %s: intercept %.2f, want %.0f", c.train.Name, p[2], c.bias)
		}
		personal, _ := Evaluate(logreg2, p, c.test)
		global, _ := Evaluate(logreg2, g, c.test)
		if personal.Loss >= global.Loss || personal.Accuracy < global.Accuracy {
			t.Errorf("site %s: personal loss %.3f acc %.3f, global %.3f %.3f", c.train.Name, personal.Loss, personal.Accuracy, global.Loss, global.Accuracy)
		}
	}
	if s := LocalStart(logreg2, PersonalFineTune, g, personal["a"]); s[2] != g[2] {
		t.Fatal("LocalStart changed the intercept for fine-tuning")
	}
}

// TestPersonalFineTuneMovesToTheSite: fine-tuning moves every parameter,
// and the intercept towards the site's.
func TestPersonalFineTuneMovesToTheSite(t *testing.T) {
	a, b := twoSites(3000, 3)
	g := globalOf(t, a, b)
	p, _, err := Personalise(t.Context(), logreg2, g, nil, b, personalCfg(PersonalFineTune, 3000))
	if err != nil {
		t.Fatal(err)
	}
	if p[0] == g[0] || p[1] == g[1] || math.Abs(p[2]+2) > 0.4 {
		t.Fatalf("fine-tuned %v from global %v; want every parameter moved and the intercept near −2", p, g)
	}
}

// TestPersonalDittoIsPulledToTheGlobalModel: Ditto's personal model lies
// between the site's own optimum and the global model, closer to the
// global one the larger λ; with a huge λ it is the global model.
func TestPersonalDittoIsPulledToTheGlobalModel(t *testing.T) {
	a, b := twoSites(3000, 4)
	g := globalOf(t, a, b)
	dist := func(p []float64) float64 {
		var s float64
		for i := range p {
			s += (p[i] - g[i]) * (p[i] - g[i])
		}
		return math.Sqrt(s)
	}
	prev := -1.0
	var intercepts []float64
	for _, lambda := range []float64{1e4, 1, 0.1, 0.001} {
		cfg := personalCfg(PersonalDitto, 3000)
		cfg.Lambda = lambda
		p, _, err := Personalise(t.Context(), logreg2, g, nil, a, cfg)
		if err != nil {
			t.Fatal(err)
		}
		d := dist(p)
		if lambda == 1e4 && d > 0.01 {
			t.Fatalf("λ = 1e4: personal model %v is %.3f from the global %v", p, d, g)
		}
		if d < prev {
			t.Fatalf("λ = %v: distance %.3f to the global model, below %.3f at a larger λ", lambda, d, prev)
		}
		prev = d
		intercepts = append(intercepts, p[2])
	}
	if last := intercepts[len(intercepts)-1]; math.Abs(last-2) > 0.4 {
		t.Fatalf("λ = 0.001: intercept %.2f, want near the site's +2", last)
	}
	// Continued from a previous personal model: the same objective, so
	// the same neighbourhood.
	cfg := personalCfg(PersonalDitto, 1000)
	cfg.Lambda = 0.001
	again, _, err := Personalise(t.Context(), logreg2, g, []float64{1, 1, 1}, a, cfg)
	if err != nil || math.Abs(again[2]-intercepts[len(intercepts)-1]) > 0.4 {
		t.Fatalf("continued Ditto: %v (%v)", again, err)
	}
}

func TestPersonalConfigIsChecked(t *testing.T) {
	a, _ := twoSites(10, 5)
	g := []float64{0, 0, 0}
	for name, cfg := range map[string]PersonalConfig{
		"unknown method":    {Method: "fedper", Train: personalCfg(PersonalFineTune, 1).Train},
		"ditto without λ":   {Method: PersonalDitto, Train: personalCfg(PersonalFineTune, 1).Train},
		"no training steps": {Method: PersonalFineTune, Train: model.TrainConfig{Optimizer: model.OptAdam, LearningRate: 0.1, BatchSize: 4}},
	} {
		if _, _, err := Personalise(t.Context(), logreg2, g, nil, a, cfg); !errors.Is(err, ErrPersonal) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, err := Personalise(t.Context(), logreg2, g, []float64{1}, a, personalCfg(PersonalDitto, 1)); !errors.Is(err, ErrPersonal) {
		t.Errorf("ditto from a previous model of the wrong size: %v", err)
	}
}
