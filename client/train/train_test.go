package train

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/fedledger/fedledger/internal/model"
)

func heartPooled(t testing.TB) (trains, tests map[string]*Dataset, pooled *Dataset) {
	t.Helper()
	trains, tests = map[string]*Dataset{}, map[string]*Dataset{}
	pooled = &Dataset{Name: "pooled", Features: HeartFeatures}
	for _, h := range Hospitals {
		tr, te, err := LoadHeart(h, HeartSplitSeed)
		if err != nil {
			t.Fatal(err)
		}
		trains[h], tests[h] = tr, te
		pooled.X = append(pooled.X, tr.X...)
		pooled.Y = append(pooled.Y, tr.Y...)
	}
	return trains, tests, pooled
}

func concat(ds map[string]*Dataset) *Dataset {
	out := &Dataset{Features: HeartFeatures}
	for _, h := range Hospitals {
		out.X = append(out.X, ds[h].X...)
		out.Y = append(out.Y, ds[h].Y...)
	}
	return out
}

func TestHeartSplitSizes(t *testing.T) {
	want := map[string][2]int{"cleveland": {199, 104}, "hungary": {172, 89}, "switzerland": {30, 16}, "va": {85, 45}}
	total := 0
	for h, w := range want {
		tr, te, err := LoadHeart(h, HeartSplitSeed)
		if err != nil {
			t.Fatal(err)
		}
		if tr.Len() != w[0] || te.Len() != w[1] {
			t.Errorf("%s: %d/%d, want %d/%d", h, tr.Len(), te.Len(), w[0], w[1])
		}
		if len(tr.Features) != 13 || len(tr.X[0]) != 13 {
			t.Errorf("%s: %d features, want 13", h, len(tr.X[0]))
		}
		// Standardised with the training split's statistics.
		for j := 0; j < 13; j++ {
			var mean float64
			for _, r := range tr.X {
				mean += r[j]
			}
			if mean /= float64(tr.Len()); math.Abs(mean) > 1e-9 {
				t.Errorf("%s: feature %s train mean %v, want 0", h, HeartFeatures[j], mean)
			}
			for _, d := range []*Dataset{tr, te} {
				for _, r := range d.X {
					if math.IsNaN(r[j]) || math.IsInf(r[j], 0) {
						t.Fatalf("%s: feature %s has %v", h, HeartFeatures[j], r[j])
					}
				}
			}
		}
		total += tr.Len() + te.Len()
	}
	if total != 740 {
		t.Fatalf("%d rows in all, want 740", total)
	}
	if _, _, err := LoadHeart("mayo", 1); err == nil {
		t.Fatal("unknown hospital accepted")
	}
}

// TestPooledLogisticRegression is the centralised baseline: logistic
// regression on all four hospitals' training data must reach >= 0.76
// accuracy on the pooled test data.
func TestPooledLogisticRegression(t *testing.T) {
	_, tests, pooled := heartPooled(t)
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 13}
	p0, _ := model.InitParams(spec, 1)
	cfg := model.DefaultTrainConfig()
	cfg.Epochs = 10
	p, st, err := Train(context.Background(), spec, p0, pooled, cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Evaluate(spec, p, concat(tests))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pooled logreg: %d steps, train loss %.4f, test acc %.4f auc %.4f (n=%d)", st.Steps, st.Loss, m.Accuracy, m.AUC, m.N)
	if m.Accuracy < 0.76 {
		t.Fatalf("pooled test accuracy %.4f < 0.76", m.Accuracy)
	}
	if m.N != 254 {
		t.Fatalf("evaluated %d test rows, want 254", m.N)
	}
}

func TestMLPLearns(t *testing.T) {
	_, tests, pooled := heartPooled(t)
	spec := model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{16, 8}}
	p0, _ := model.InitParams(spec, 1)
	before, _ := Evaluate(spec, p0, concat(tests))
	cfg := model.DefaultTrainConfig()
	cfg.Epochs = 10
	p, _, err := Train(context.Background(), spec, p0, pooled, cfg)
	if err != nil {
		t.Fatal(err)
	}
	after, _ := Evaluate(spec, p, concat(tests))
	t.Logf("mlp 13-16-8-1: loss %.4f -> %.4f, acc %.4f -> %.4f", before.Loss, after.Loss, before.Accuracy, after.Accuracy)
	if after.Loss > 0.8*before.Loss || after.Accuracy < 0.70 {
		t.Fatalf("mlp did not learn: loss %.4f -> %.4f, acc %.4f", before.Loss, after.Loss, after.Accuracy)
	}
}

func TestTrainIsDeterministic(t *testing.T) {
	trains, _, _ := heartPooled(t)
	for _, spec := range []model.Spec{{Kind: model.KindLogReg, Inputs: 13}, {Kind: model.KindMLP, Inputs: 13, Hidden: []int{8}}} {
		p0, _ := model.InitParams(spec, 3)
		cfg := model.DefaultTrainConfig()
		cfg.LocalSteps = 25
		a, _, err := Train(context.Background(), spec, p0, trains["hungary"], cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, _, _ := Train(context.Background(), spec, p0, trains["hungary"], cfg)
		if !slices.Equal(a, b) {
			t.Fatalf("%s: two runs with the same seed differ", spec)
		}
		cfg.Seed++
		c, _, _ := Train(context.Background(), spec, p0, trains["hungary"], cfg)
		if slices.Equal(a, c) {
			t.Fatalf("%s: a different seed gave the same parameters", spec)
		}
		if slices.Equal(a, p0) {
			t.Fatalf("%s: training did not move the parameters", spec)
		}
	}
}

// TestProxTermPullsTowardsAnchor: with a large mu the local model stays
// closer to the starting (global) model than without.
func TestProxTermPullsTowardsAnchor(t *testing.T) {
	trains, _, _ := heartPooled(t)
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 13}
	p0, _ := model.InitParams(spec, 5)
	cfg := model.DefaultTrainConfig()
	cfg.LearningRate = 0.05
	cfg.LocalSteps = 100
	free, _, _ := Train(context.Background(), spec, p0, trains["va"], cfg)
	cfg.ProxMu = 10
	prox, _, err := Train(context.Background(), spec, p0, trains["va"], cfg)
	if err != nil {
		t.Fatal(err)
	}
	dFree, dProx := dist(free, p0), dist(prox, p0)
	t.Logf("distance from anchor: mu=0 %.4f, mu=10 %.4f", dFree, dProx)
	if !(dProx < 0.5*dFree) {
		t.Fatalf("proximal term did not pull towards the anchor: %.4f vs %.4f", dProx, dFree)
	}
}

func dist(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += (a[i] - b[i]) * (a[i] - b[i])
	}
	return math.Sqrt(s)
}

func TestTrainHonoursCancellation(t *testing.T) {
	trains, _, _ := heartPooled(t)
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 13}
	p0, _ := model.InitParams(spec, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cfg := model.DefaultTrainConfig()
	if _, _, err := Train(ctx, spec, p0, trains["va"], cfg); !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

// TestGraphMatchesPlainForward: the plain-Go forward pass used by Evaluate
// computes the same cross-entropy as the Gorgonia graph used for training.
func TestGraphMatchesPlainForward(t *testing.T) {
	trains, _, _ := heartPooled(t)
	d := trains["switzerland"]
	spec := model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{5, 3}}
	p, _ := model.InitParams(spec, 9)
	m, err := newGraph(spec, d.Len(), p, graphOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.close()
	xb, yb := m.xT.Data().([]float64), m.yT.Data().([]float64)
	for i := range d.X {
		copy(xb[i*13:], d.X[i])
		yb[i] = d.Y[i]
	}
	if err := m.machine.RunAll(); err != nil {
		t.Fatal(err)
	}
	graphLoss := m.bceVal.Data().(float64)
	ev, _ := Evaluate(spec, p, d)
	if math.Abs(graphLoss-ev.Loss) > 1e-12 {
		t.Fatalf("graph loss %.15f, plain forward %.15f", graphLoss, ev.Loss)
	}
}

func TestBadInputsRejected(t *testing.T) {
	trains, _, _ := heartPooled(t)
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 13}
	p0, _ := model.InitParams(spec, 1)
	cfg := model.DefaultTrainConfig()
	if _, _, err := Train(context.Background(), spec, p0[:5], trains["va"], cfg); err == nil {
		t.Fatal("short parameter vector accepted")
	}
	wrong := model.Spec{Kind: model.KindLogReg, Inputs: 7}
	pw, _ := model.InitParams(wrong, 1)
	if _, _, err := Train(context.Background(), wrong, pw, trains["va"], cfg); err == nil {
		t.Fatal("feature count mismatch accepted")
	}
	bad := cfg
	bad.Optimizer = "rmsprop"
	if _, _, err := Train(context.Background(), spec, p0, trains["va"], bad); !errors.Is(err, model.ErrTrainConfig) {
		t.Fatalf("bad optimizer: %v", err)
	}
	for _, s := range []model.Spec{{Kind: "cnn", Inputs: 3}, {Kind: model.KindMLP, Inputs: 3}, {Kind: model.KindLogReg, Inputs: 0}, {Kind: model.KindMLP, Inputs: 3, Hidden: []int{0}}} {
		if err := s.Validate(); !errors.Is(err, model.ErrSpec) {
			t.Errorf("%+v: %v", s, err)
		}
	}
}

func TestAUC(t *testing.T) {
	// Hand-computed: positives {0.8, 0.4}, negatives {0.4, 0.1, 0.3}.
	// Pairs: 0.8 beats all 3; 0.4 beats 0.1, 0.3 and ties 0.4 -> 2.5. AUC = 5.5/6.
	got := AUC([]float64{0.8, 0.4, 0.4, 0.1, 0.3}, []float64{1, 1, 0, 0, 0})
	if math.Abs(got-5.5/6) > 1e-12 {
		t.Fatalf("AUC %v, want %v", got, 5.5/6)
	}
	if AUC([]float64{1, 2}, []float64{1, 1}) != 0.5 {
		t.Fatal("one-class AUC must be 0.5")
	}
	if AUC([]float64{0.1, 0.9}, []float64{0, 1}) != 1 {
		t.Fatal("perfect ranking must give 1")
	}
}

// TestConcurrentTraining trains on four hospitals at once in one process,
// as the demo does; run with -race it guards against gorgonia's shared
// graph state.
func TestConcurrentTraining(t *testing.T) {
	trains, _, _ := heartPooled(t)
	spec := model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{4}}
	p0, _ := model.InitParams(spec, 1)
	cfg := model.DefaultTrainConfig()
	cfg.LocalSteps = 20
	// Concurrent first, while gorgonia's shared nodes are cold (when this
	// test runs alone, or first), then the sequential reference.
	type result struct {
		h   string
		p   []float64
		err error
	}
	results := make(chan result, len(Hospitals)*2)
	for rep := 0; rep < 2; rep++ {
		for _, h := range Hospitals {
			go func() {
				p, _, err := Train(context.Background(), spec, p0, trains[h], cfg)
				results <- result{h, p, err}
			}()
		}
	}
	got := map[string][][]float64{}
	for i := 0; i < cap(results); i++ {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		got[r.h] = append(got[r.h], r.p)
	}
	for _, h := range Hospitals {
		want, _, _ := Train(context.Background(), spec, p0, trains[h], cfg)
		for _, p := range got[h] {
			if !slices.Equal(p, want) {
				t.Fatalf("%s: concurrent training changed the result", h)
			}
		}
	}
}
