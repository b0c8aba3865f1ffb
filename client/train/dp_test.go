package train

import (
	"context"
	"errors"
	"math"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/internal/model"
)

// seededNoise is a reproducible stand-in for the CSPRNG sampler.
type seededNoise struct{ r *rand.Rand }

func newSeededNoise(seed int64) seededNoise { return seededNoise{rand.New(rand.NewSource(seed))} }

func (s seededNoise) Normal() float64 { return s.r.NormFloat64() }

// zeroNoise makes a step's update the clipped gradients alone.
type zeroNoise struct{}

func (zeroNoise) Normal() float64 { return 0 }

// countingNoise counts draws and returns 1 each time.
type countingNoise struct{ n int }

func (c *countingNoise) Normal() float64 { c.n++; return 1 }

// exampleLoss is one record's cross-entropy at params, through Evaluate
// (the plain-Go forward pass, independent of the gradient code).
func exampleLoss(t *testing.T, spec model.Spec, params, x []float64, y float64) float64 {
	t.Helper()
	m, err := Evaluate(spec, params, &Dataset{X: [][]float64{x}, Y: []float64{y}})
	if err != nil {
		t.Fatal(err)
	}
	return m.Loss
}

// fdGrad is the central finite-difference gradient of exampleLoss.
func fdGrad(t *testing.T, spec model.Spec, params, x []float64, y float64) []float64 {
	const h = 1e-6
	p := slices.Clone(params)
	g := make([]float64, len(p))
	for j := range p {
		p[j] = params[j] + h
		up := exampleLoss(t, spec, p, x, y)
		p[j] = params[j] - h
		down := exampleLoss(t, spec, p, x, y)
		p[j] = params[j]
		g[j] = (up - down) / (2 * h)
	}
	return g
}

func randVec(r *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64() * scale
	}
	return v
}

func maxAbsDiff(a, b []float64) float64 {
	var d float64
	for i := range a {
		d = max(d, math.Abs(a[i]-b[i]))
	}
	return d
}

func norm2(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// checkGrads compares pe's per-example gradients with finite differences
// at params, for a few random records of both labels.
func checkGrads(t *testing.T, spec model.Spec, pe perExample, params []float64, r *rand.Rand) {
	t.Helper()
	g := make([]float64, spec.NumParams())
	for k := 0; k < 4; k++ {
		x := randVec(r, spec.Inputs, 1)
		y := float64(k % 2)
		loss, err := pe.grad(x, y, g)
		if err != nil {
			t.Fatal(err)
		}
		if want := exampleLoss(t, spec, params, x, y); math.Abs(loss-want) > 1e-12 {
			t.Fatalf("%s: record %d: loss %.15f, plain forward %.15f", spec, k, loss, want)
		}
		fd := fdGrad(t, spec, params, x, y)
		if d := maxAbsDiff(g, fd); d > 1e-7 || norm2(g) < 1e-3 {
			t.Fatalf("%s: record %d: gradient differs from finite differences by %.3g (|g| = %.3g)\n got %.6f\nwant %.6f", spec, k, d, norm2(g), g, fd)
		}
	}
}

func TestDPLogRegGradMatchesFiniteDifferences(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 6}
	params := randVec(r, spec.NumParams(), 0.7)
	pe, err := newPerExample(spec, params)
	if err != nil {
		t.Fatal(err)
	}
	defer pe.close()
	if _, ok := pe.(*logregGrad); !ok {
		t.Fatalf("logreg uses %T, want the closed form", pe)
	}
	checkGrads(t, spec, pe, params, r)
	// After setParams the closed form follows the new parameters.
	p2 := randVec(r, spec.NumParams(), 0.7)
	pe.setParams(p2)
	checkGrads(t, spec, pe, p2, r)
}

// TestDPMLPGradMatchesFiniteDifferences: the per-example gradient read from
// the batch-of-one Gorgonia graph equals finite differences, also after the
// parameters are replaced in place and when run twice (no accumulation).
func TestDPMLPGradMatchesFiniteDifferences(t *testing.T) {
	r := rand.New(rand.NewSource(2))
	spec := model.Spec{Kind: model.KindMLP, Inputs: 5, Hidden: []int{6, 4}}
	params := randVec(r, spec.NumParams(), 0.6) // nonzero biases too
	pe, err := newPerExample(spec, params)
	if err != nil {
		t.Fatal(err)
	}
	defer pe.close()
	if _, ok := pe.(*graphGrad); !ok {
		t.Fatalf("mlp uses %T, want the Gorgonia graph", pe)
	}
	checkGrads(t, spec, pe, params, r)
	p2 := randVec(r, spec.NumParams(), 0.6)
	pe.setParams(p2)
	checkGrads(t, spec, pe, p2, r)

	x := randVec(r, spec.Inputs, 1)
	a, b := make([]float64, len(p2)), make([]float64, len(p2))
	pe.grad(x, 1, a)
	pe.grad(x, 1, b)
	if !slices.Equal(a, b) {
		t.Fatal("the same record's gradient changed on a second run")
	}
}

// TestDPClipping: one step, zero noise, q = 1, on three records whose
// gradients are a little above C, below it and far above it, equals params − lr·Σ clip(g_i)/(q·n)
// computed here by hand; and a lone huge record moves the parameters by
// exactly lr·C.
func TestDPClipping(t *testing.T) {
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 2}
	p0 := []float64{0.3, -0.2, 0.1} // w1, w2, b
	data := &Dataset{Name: "tiny", X: [][]float64{{1, 2}, {-0.5, 0.25}, {300, -400}}, Y: []float64{1, 0, 0}}
	const lr, clip = 0.1, 1.0
	dp := DPConfig{NoiseMultiplier: 1, ClipNorm: clip, SampleRate: 1}
	cfg := model.TrainConfig{Optimizer: model.OptSGD, LearningRate: lr, BatchSize: 1, LocalSteps: 1, Seed: 7}

	want := slices.Clone(p0)
	sum := make([]float64, 3)
	clipped := 0
	for i, x := range data.X {
		z := p0[0]*x[0] + p0[1]*x[1] + p0[2]
		r := 1/(1+math.Exp(-z)) - data.Y[i]
		g := []float64{r * x[0], r * x[1], r}
		f := 1.0
		if n := norm2(g); n > clip {
			f = clip / n
			clipped++
		}
		for j := range g {
			sum[j] += f * g[j]
		}
	}
	if clipped != 2 {
		t.Fatalf("fixture: %d records above C, want 2 (norms ≈ 1.22, 0.54, 500)", clipped)
	}
	for j := range want {
		want[j] -= lr * sum[j] / (1 * 3)
	}
	got, st, err := TrainDP(context.Background(), spec, p0, data, cfg, dp, zeroNoise{})
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(got, want); d > 1e-15 {
		t.Fatalf("got %v, want %v (diff %.3g)", got, want, d)
	}
	if st.Steps != 1 || st.Samples != 3 {
		t.Fatalf("stats %+v, want 1 step of 3 samples", st)
	}

	huge := &Dataset{Name: "huge", X: [][]float64{{3e6, -4e6}}, Y: []float64{0}}
	got, _, err = TrainDP(context.Background(), spec, p0, huge, cfg, dp, zeroNoise{})
	if err != nil {
		t.Fatal(err)
	}
	if d := dist(got, p0); math.Abs(d-lr*clip) > 1e-15 {
		t.Fatalf("a huge gradient moved the parameters by %.17g, want lr·C = %.17g", d, lr*clip)
	}
}

// TestDPMatchesTrainWithoutPrivacy: with q = 1, a clip norm no gradient
// reaches and zero noise, DP-SGD is full-batch gradient descent, so it must
// agree with Train on a batch of the whole dataset (Gorgonia's solvers),
// for both models and both optimisers.
func TestDPMatchesTrainWithoutPrivacy(t *testing.T) {
	tr, _, err := LoadHeart("switzerland", HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	dp := DPConfig{NoiseMultiplier: 1, ClipNorm: 1e9, SampleRate: 1}
	for _, spec := range []model.Spec{{Kind: model.KindLogReg, Inputs: 13}, {Kind: model.KindMLP, Inputs: 13, Hidden: []int{6, 3}}} {
		for _, opt := range []string{model.OptSGD, model.OptAdam} {
			p0, _ := model.InitParams(spec, 4)
			cfg := model.TrainConfig{Optimizer: opt, LearningRate: 0.05, BatchSize: tr.Len(), LocalSteps: 5, Seed: 1}
			want, _, err := Train(context.Background(), spec, p0, tr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			got, st, err := TrainDP(context.Background(), spec, p0, tr, cfg, dp, zeroNoise{})
			if err != nil {
				t.Fatal(err)
			}
			if d := maxAbsDiff(got, want); d > 1e-12 || dist(got, p0) < 1e-3 {
				t.Fatalf("%s %s: DP-SGD without clipping or noise differs from Train by %.3g (moved %.3g)", spec, opt, d, dist(got, p0))
			}
			if st.Samples != 5*tr.Len() {
				t.Fatalf("%s: %d samples, want %d", spec, st.Samples, 5*tr.Len())
			}
		}
	}
}

// TestDPNoiseStd: with every per-example gradient exactly zero (all-zero
// features, label 0.5 at zero parameters), one SGD step moves each of 4001
// coordinates by lr·σ·C·N(0,1)/(q·n); the empirical std must match.
func TestDPNoiseStd(t *testing.T) {
	const inputs, n = 4000, 50
	spec := model.Spec{Kind: model.KindLogReg, Inputs: inputs}
	data := &Dataset{Name: "zero"}
	for i := 0; i < n; i++ {
		data.X = append(data.X, make([]float64, inputs))
		data.Y = append(data.Y, 0.5)
	}
	p0 := make([]float64, spec.NumParams())
	dp := DPConfig{NoiseMultiplier: 1.3, ClipNorm: 0.7, SampleRate: 0.2}
	const lr = 0.4
	cfg := model.TrainConfig{Optimizer: model.OptSGD, LearningRate: lr, BatchSize: 1, LocalSteps: 1, Seed: 3}
	got, _, err := TrainDP(context.Background(), spec, p0, data, cfg, dp, newSeededNoise(11))
	if err != nil {
		t.Fatal(err)
	}
	var mean, sq float64
	for _, v := range got {
		mean += v
	}
	mean /= float64(len(got))
	for _, v := range got {
		sq += (v - mean) * (v - mean)
	}
	std := math.Sqrt(sq / float64(len(got)-1))
	want := lr * dp.NoiseMultiplier * dp.ClipNorm / (dp.SampleRate * n)
	t.Logf("update std %.5f, want σ·C·lr/(q·n) = %.5f; mean %.2g", std, want, mean)
	// The std of a sample std of 4001 normals is ~1.1%: allow 5%.
	if math.Abs(std/want-1) > 0.05 {
		t.Fatalf("update std %.5f, want %.5f", std, want)
	}
	if math.Abs(mean) > 5*want/math.Sqrt(float64(len(got))) {
		t.Fatalf("update mean %.3g, want ~0", mean)
	}
}

// TestDPEmptyBatchesStillStep: with q so small that nearly every batch is
// empty, every step still draws noise for every parameter and moves them.
func TestDPEmptyBatchesStillStep(t *testing.T) {
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 3}
	data := &Dataset{Name: "few", X: [][]float64{{1, 2, 3}, {0, 1, 0}}, Y: []float64{1, 0}}
	p0 := []float64{0.1, 0.2, 0.3, 0.4}
	noise := &countingNoise{}
	cfg := model.TrainConfig{Optimizer: model.OptSGD, LearningRate: 0.01, BatchSize: 1, LocalSteps: 10, Seed: 1}
	dp := DPConfig{NoiseMultiplier: 2, ClipNorm: 1, SampleRate: 1e-6}
	got, st, err := TrainDP(context.Background(), spec, p0, data, cfg, dp, noise)
	if err != nil {
		t.Fatal(err)
	}
	if st.Samples != 0 {
		t.Fatalf("fixture: %d samples drawn at q = 1e-6", st.Samples)
	}
	if noise.n != 10*len(p0) {
		t.Fatalf("%d noise draws, want steps·params = %d", noise.n, 10*len(p0))
	}
	// Each step adds σ·C·1/(q·n) to the gradient of every coordinate.
	step := cfg.LearningRate * dp.NoiseMultiplier * dp.ClipNorm / (dp.SampleRate * 2)
	for j := range got {
		if want := p0[j] - 10*step; math.Abs(got[j]-want) > 1e-9*math.Abs(want) {
			t.Fatalf("param %d = %v, want %v", j, got[j], want)
		}
	}
}

// TestDPPoissonSampling: each record is in a batch independently with
// probability q, so the batch size has mean q·n and variance q(1−q)·n (a
// fixed-size batch would have none), and every record is sampled at rate q.
func TestDPPoissonSampling(t *testing.T) {
	const n, q, steps = 200, 0.1, 4000
	s := newPoissonSampler(5, n, q)
	hits := make([]int, n)
	var sum, sq float64
	var b []int
	for k := 0; k < steps; k++ {
		b = s.next(b[:0])
		if !slices.IsSorted(b) {
			t.Fatal("batch indices not increasing")
		}
		for _, i := range b {
			hits[i]++
		}
		sum += float64(len(b))
		sq += float64(len(b) * len(b))
	}
	mean := sum / steps
	variance := sq/steps - mean*mean
	t.Logf("batch size mean %.3f (want %.1f), variance %.3f (want %.1f)", mean, q*n, variance, q*(1-q)*n)
	// std of the mean: sqrt(18/4000) ≈ 0.067.
	if math.Abs(mean-q*n) > 0.35 {
		t.Fatalf("mean batch %.3f, want %.1f", mean, q*n)
	}
	if math.Abs(variance/(q*(1-q)*n)-1) > 0.15 {
		t.Fatalf("batch size variance %.3f, want %.1f", variance, q*(1-q)*n)
	}
	// Per record: Binomial(4000, 0.1), mean 400, std 19.
	for i, h := range hits {
		if h < 300 || h > 500 {
			t.Fatalf("record %d sampled %d times in %d steps, want ~%d", i, h, steps, int(q*steps))
		}
	}

	// TrainDP's steps: Epochs·round(1/q) by default, with q·n records each
	// on average.
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 13}
	tr, _, err := LoadHeart("cleveland", HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	p0, _ := model.InitParams(spec, 1)
	cfg := model.TrainConfig{Optimizer: model.OptSGD, LearningRate: 0.01, BatchSize: 1, Epochs: 100, Seed: 9}
	_, st, err := TrainDP(context.Background(), spec, p0, tr, cfg, DPConfig{1, 1, 0.05}, newSeededNoise(1))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := (DPConfig{1, 1, 0.05}).Steps(cfg); st.Steps != 100*20 || n != st.Steps {
		t.Fatalf("%d steps (Steps says %d), want epochs·round(1/q) = 2000", st.Steps, n)
	}
	m := float64(st.Samples) / float64(st.Steps)
	t.Logf("TrainDP: %d steps, mean batch %.3f (q·n = %.2f)", st.Steps, m, 0.05*float64(tr.Len()))
	if math.Abs(m-0.05*float64(tr.Len())) > 0.3 { // std of the mean ≈ 0.069
		t.Fatalf("TrainDP mean batch %.3f, want %.2f", m, 0.05*float64(tr.Len()))
	}
}

// TestDPHeartLearns: on Cleveland (199 training records, 104 test), DP-SGD
// with σ = 1, C = 1, q = 0.1 for 20 epochs (200 steps) still beats the
// majority class on the test split clearly, with a test loss below ln 2,
// for logistic regression (SGD) and the MLP (Adam); with σ = 1000 the noise swamps the signal and the
// test loss ends far above ln 2, that of always predicting ½.
func TestDPHeartLearns(t *testing.T) {
	tr, te, err := LoadHeart("cleveland", HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	var pos float64
	for _, y := range te.Y {
		pos += y
	}
	majority := max(pos, float64(te.Len())-pos) / float64(te.Len())
	for _, c := range []struct {
		spec model.Spec
		opt  string
		lr   float64
	}{
		{model.Spec{Kind: model.KindLogReg, Inputs: 13}, model.OptSGD, 0.5},
		{model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{16, 8}}, model.OptAdam, 0.02},
	} {
		p0, _ := model.InitParams(c.spec, 1)
		before, _ := Evaluate(c.spec, p0, te)
		cfg := model.TrainConfig{Optimizer: c.opt, LearningRate: c.lr, BatchSize: 1, Epochs: 20, Seed: 1}
		run := func(sigma float64) model.Metrics {
			p, _, err := TrainDP(context.Background(), c.spec, p0, tr, cfg, DPConfig{NoiseMultiplier: sigma, ClipNorm: 1, SampleRate: 0.1}, newSeededNoise(2))
			if err != nil {
				t.Fatal(err)
			}
			m, _ := Evaluate(c.spec, p, te)
			return m
		}
		dp, loud := run(1), run(1000)
		t.Logf("%s %s: majority %.3f; start acc %.3f loss %.3f; σ=1: acc %.3f loss %.3f auc %.3f; σ=1000: acc %.3f loss %.3f auc %.3f",
			c.spec, c.opt, majority, before.Accuracy, before.Loss, dp.Accuracy, dp.Loss, dp.AUC, loud.Accuracy, loud.Loss, loud.AUC)
		if dp.Accuracy < majority+0.15 || dp.Loss > math.Ln2 {
			t.Errorf("%s: DP-SGD σ=1 did not learn: acc %.3f (majority %.3f), loss %.3f", c.spec, dp.Accuracy, majority, dp.Loss)
		}
		if loud.Loss < 2*math.Ln2 {
			t.Errorf("%s: σ=1000 test loss %.3f (acc %.3f): is the noise applied?", c.spec, loud.Loss, loud.Accuracy)
		}
	}
}

func TestDPDeterministic(t *testing.T) {
	tr, _, err := LoadHeart("va", HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	dp := DPConfig{NoiseMultiplier: 1, ClipNorm: 1, SampleRate: 0.1}
	for _, spec := range []model.Spec{{Kind: model.KindLogReg, Inputs: 13}, {Kind: model.KindMLP, Inputs: 13, Hidden: []int{4}}} {
		p0, _ := model.InitParams(spec, 3)
		cfg := model.TrainConfig{Optimizer: model.OptAdam, LearningRate: 0.01, BatchSize: 1, LocalSteps: 20, Seed: 5}
		a, _, err := TrainDP(context.Background(), spec, p0, tr, cfg, dp, newSeededNoise(1))
		if err != nil {
			t.Fatal(err)
		}
		b, _, _ := TrainDP(context.Background(), spec, p0, tr, cfg, dp, newSeededNoise(1))
		if !slices.Equal(a, b) {
			t.Fatalf("%s: same seed and noise, different results", spec)
		}
		c, _, _ := TrainDP(context.Background(), spec, p0, tr, cfg, dp, newSeededNoise(2))
		cfg.Seed++
		d, _, _ := TrainDP(context.Background(), spec, p0, tr, cfg, dp, newSeededNoise(1))
		if slices.Equal(a, c) || slices.Equal(a, d) {
			t.Fatalf("%s: another noise stream or sampling seed gave the same parameters", spec)
		}
	}
}

func TestDPBadInputsRejected(t *testing.T) {
	tr, _, err := LoadHeart("va", HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	spec := model.Spec{Kind: model.KindLogReg, Inputs: 13}
	p0, _ := model.InitParams(spec, 1)
	cfg := model.TrainConfig{Optimizer: model.OptSGD, LearningRate: 0.1, BatchSize: 1, LocalSteps: 2, Seed: 1}
	good := DPConfig{NoiseMultiplier: 1, ClipNorm: 1, SampleRate: 0.1}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dp   DPConfig
		want string
	}{
		{DPConfig{1, 1, 1.5}, "dp.sample_rate = 1.5, want 0 < q <= 1"},
		{DPConfig{1, 1, 0}, "dp.sample_rate = 0"},
		{DPConfig{1, 1, math.NaN()}, "dp.sample_rate = NaN"},
		{DPConfig{0, 1, 0.1}, "dp.noise_multiplier = 0"},
		{DPConfig{-1, 1, 0.1}, "dp.noise_multiplier = -1"},
		{DPConfig{math.Inf(1), 1, 0.1}, "dp.noise_multiplier = +Inf"},
		{DPConfig{1, 0, 0.1}, "dp.clip_norm = 0"},
		{DPConfig{1, math.NaN(), 0.1}, "dp.clip_norm = NaN"},
	} {
		err := c.dp.Validate()
		if !errors.Is(err, ErrDPConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.dp, err, c.want)
		}
		if _, _, err := TrainDP(context.Background(), spec, p0, tr, cfg, c.dp, zeroNoise{}); !errors.Is(err, ErrDPConfig) {
			t.Errorf("TrainDP with %+v: %v", c.dp, err)
		}
	}
	prox := cfg
	prox.ProxMu = 0.1
	if _, _, err := TrainDP(context.Background(), spec, p0, tr, prox, good, zeroNoise{}); err == nil || !strings.Contains(err.Error(), "prox_mu with DP-SGD is not supported") {
		t.Errorf("prox_mu: %v", err)
	}
	if _, _, err := TrainDP(context.Background(), spec, p0, tr, cfg, good, nil); err == nil {
		t.Error("nil noise accepted")
	}
	if _, _, err := TrainDP(context.Background(), spec, p0[:5], tr, cfg, good, zeroNoise{}); err == nil {
		t.Error("short parameter vector accepted")
	}
	bad := cfg
	bad.Optimizer = "rmsprop"
	if _, _, err := TrainDP(context.Background(), spec, p0, tr, bad, good, zeroNoise{}); !errors.Is(err, model.ErrTrainConfig) {
		t.Errorf("bad optimizer: %v", err)
	}
	many := cfg
	many.LocalSteps, many.Epochs = 0, 1000
	if _, _, err := TrainDP(context.Background(), spec, p0, tr, many, DPConfig{1, 1, 1e-7}, zeroNoise{}); !errors.Is(err, ErrDPConfig) {
		t.Errorf("1e10 steps: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := TrainDP(ctx, spec, p0, tr, cfg, good, zeroNoise{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	// The input parameters are not modified.
	keep := slices.Clone(p0)
	if _, _, err := TrainDP(context.Background(), spec, p0, tr, cfg, good, newSeededNoise(1)); err != nil || !slices.Equal(p0, keep) {
		t.Errorf("TrainDP modified params (err %v)", err)
	}
}

// BenchmarkTrainDP measures a DP-SGD step on Cleveland (199 records,
// q = 0.1, so ~20 per-example gradients a step).
func BenchmarkTrainDP(b *testing.B) {
	tr, _, err := LoadHeart("cleveland", HeartSplitSeed)
	if err != nil {
		b.Fatal(err)
	}
	cfg := model.TrainConfig{Optimizer: model.OptSGD, LearningRate: 0.1, BatchSize: 1, LocalSteps: 100, Seed: 1}
	dp := DPConfig{NoiseMultiplier: 1, ClipNorm: 1, SampleRate: 0.1}
	for _, spec := range []model.Spec{{Kind: model.KindLogReg, Inputs: 13}, {Kind: model.KindMLP, Inputs: 13, Hidden: []int{16, 8}}} {
		b.Run(spec.Kind, func(b *testing.B) {
			p0, _ := model.InitParams(spec, 1)
			steps := 0
			for i := 0; i < b.N; i++ {
				_, st, err := TrainDP(context.Background(), spec, p0, tr, cfg, dp, newSeededNoise(1))
				if err != nil {
					b.Fatal(err)
				}
				steps += st.Steps
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(steps), "µs/step")
		})
	}
}
