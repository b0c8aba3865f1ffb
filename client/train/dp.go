package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand"

	"github.com/fedledger/fedledger/internal/model"
)

// Record-level differential privacy for a hospital's local training:
// DP-SGD (Abadi et al., "Deep Learning with Differential Privacy", CCS
// 2016). Every step
//
//  1. draws a batch by Poisson sampling: each of the n training records
//     joins independently with probability q (so the batch size is random,
//     Binomial(n, q), and may be 0);
//  2. computes each sampled record's gradient of its own binary
//     cross-entropy and clips it to L2 norm at most C (multiplies it by
//     min(1, C/‖g‖));
//  3. sums the clipped gradients, adds N(0, σ²C²) to every coordinate and
//     divides by the expected batch size q·n;
//  4. moves the parameters with that noisy gradient (plain SGD, or Adam as
//     post-processing of it).
//
// This is the sampled Gaussian mechanism whose privacy the RDP accountant
// (Mironov, Talwar, Zhang 2019) bounds from (q, σ, steps); the accounting
// itself is not done here.
//
// Choices the analysis depends on:
//
//   - Poisson sampling, not shuffled fixed-size batches, because that is
//     what the accountant assumes. An empty batch still takes a step made
//     of noise alone: skipping it would reveal that no record was sampled.
//   - The divisor is the expected batch size q·n, never the realised one:
//     the realised size is the number of sampled records, and dividing by
//     it would make the update's scale depend on whether a record is in
//     the data. The sum's sensitivity to one record is then C/(q·n),
//     exactly what the noise σ·C/(q·n) is calibrated to. (n itself is
//     treated as public; each hospital reports it as its FedAvg weight.)
//   - The noise comes from the caller's [Noise] (a CSPRNG in production):
//     it must be unpredictable, or it could be subtracted.
//   - The sampling comes from math/rand seeded with cfg.Seed, so that a
//     run is reproducible given the seed and the noise. The accountant's
//     amplification by subsampling assumes the adversary does not learn
//     which records were sampled; whoever knows the seed and the order of
//     the records can replay the batches. Callers that publish cfg.Seed
//     (a study's training seed is public) should mix a hospital-secret
//     value into it when privacy against those parties is wanted.
//   - The per-example loss has no FedProx term: TrainDP refuses
//     ProxMu > 0 (clipping a gradient that includes the proximal pull is a
//     different mechanism and is not supported).

// DPConfig configures record-level DP-SGD.
type DPConfig struct {
	// NoiseMultiplier is σ: the noise added to the sum of the clipped
	// gradients has standard deviation σ·ClipNorm per coordinate.
	NoiseMultiplier float64
	// ClipNorm is C: each example's gradient is clipped to L2 norm ≤ C.
	ClipNorm float64
	// SampleRate is q: each step, every example joins the batch
	// independently with probability q (Poisson sampling).
	SampleRate float64
}

// ErrDPConfig marks an invalid DP-SGD configuration.
var ErrDPConfig = errors.New("train: invalid DP-SGD config")

// maxDPSteps bounds the step count derived from Epochs and SampleRate.
const maxDPSteps = 100_000_000

// Validate checks the configuration. σ = 0 is refused: it is not private.
func (c DPConfig) Validate() error {
	var errs []error
	if !(c.NoiseMultiplier > 0) || math.IsInf(c.NoiseMultiplier, 0) {
		errs = append(errs, fmt.Errorf("%w: dp.noise_multiplier = %v, want finite σ > 0", ErrDPConfig, c.NoiseMultiplier))
	}
	if !(c.ClipNorm > 0) || math.IsInf(c.ClipNorm, 0) {
		errs = append(errs, fmt.Errorf("%w: dp.clip_norm = %v, want finite C > 0", ErrDPConfig, c.ClipNorm))
	}
	if !(c.SampleRate > 0 && c.SampleRate <= 1) {
		errs = append(errs, fmt.Errorf("%w: dp.sample_rate = %v, want 0 < q <= 1", ErrDPConfig, c.SampleRate))
	}
	return errors.Join(errs...)
}

// Noise is where DP-SGD's Gaussian noise comes from: Normal returns an
// independent standard normal draw. In production it must be a CSPRNG-backed
// sampler; tests pass a seeded or constant fake.
type Noise interface{ Normal() float64 }

// Steps is the number of DP-SGD steps TrainDP takes with cfg:
// cfg.LocalSteps, or else cfg.Epochs·round(1/q) (an epoch being 1/q
// expected batches). The privacy accountant needs the same count.
func (c DPConfig) Steps(cfg model.TrainConfig) (int, error) {
	if err := c.Validate(); err != nil {
		return 0, err
	}
	if cfg.LocalSteps > 0 {
		return cfg.LocalSteps, nil
	}
	s := float64(cfg.Epochs) * math.Round(1/c.SampleRate)
	if s > maxDPSteps {
		return 0, fmt.Errorf("%w: %d epochs at dp.sample_rate = %v is %.3g steps, more than %d", ErrDPConfig, cfg.Epochs, c.SampleRate, s, maxDPSteps)
	}
	if s < 1 {
		return 0, fmt.Errorf("%w: %d epochs and %d local steps make no step", ErrDPConfig, cfg.Epochs, cfg.LocalSteps)
	}
	return int(s), nil
}

// TrainDP runs DP-SGD from params on data and returns the new parameters;
// params is not modified. It runs cfg.LocalSteps steps, or
// cfg.Epochs·round(1/q) when LocalSteps is 0; cfg.BatchSize is not used
// (the expected batch is q·n). cfg.Optimizer "sgd" steps by
// −LearningRate·(noisy gradient), "adam" feeds the noisy gradient to Adam
// (β₁ 0.9, β₂ 0.999, ε 1e-8, as [Train]'s), which as post-processing keeps
// the guarantee. The result is a function of the inputs, cfg.Seed and the
// sequence noise returns; the noise is drawn NumParams times per step, in
// parameter order.
//
// Per-example gradients are closed-form for logistic regression and come
// from a batch-of-one Gorgonia graph for an MLP.
//
// The returned TrainStats (the realised number of sampled records, the
// mean training loss of the sampled records over the last epoch's worth of
// steps) are computed from the private data without noise: they are not
// covered by the DP guarantee and should not leave the hospital as they are.
func TrainDP(ctx context.Context, spec model.Spec, params []float64, data *Dataset, cfg model.TrainConfig, dp DPConfig, noise Noise) ([]float64, TrainStats, error) {
	var st TrainStats
	if err := spec.Validate(); err != nil {
		return nil, st, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, st, err
	}
	if cfg.ProxMu > 0 {
		return nil, st, fmt.Errorf("train: prox_mu with DP-SGD is not supported (prox_mu = %v)", cfg.ProxMu)
	}
	if err := dp.Validate(); err != nil {
		return nil, st, err
	}
	if noise == nil {
		return nil, st, fmt.Errorf("train: DP-SGD needs a noise source")
	}
	if len(params) != spec.NumParams() {
		return nil, st, fmt.Errorf("train: %d parameters for %s, want %d", len(params), spec, spec.NumParams())
	}
	if err := data.check(spec); err != nil {
		return nil, st, err
	}
	steps, err := dp.Steps(cfg)
	if err != nil {
		return nil, st, err
	}
	pe, err := newPerExample(spec, params)
	if err != nil {
		return nil, st, err
	}
	defer pe.close()

	n := data.Len()
	np := len(params)
	p := append([]float64(nil), params...)
	var opt optimizer = &sgd{lr: cfg.LearningRate}
	if cfg.Optimizer == model.OptAdam {
		opt = newAdam(cfg.LearningRate, np)
	}
	sampler := newPoissonSampler(cfg.Seed, n, dp.SampleRate)
	expected := dp.SampleRate * float64(n)
	noiseStd := dp.NoiseMultiplier * dp.ClipNorm
	// The loss is reported over the last epoch's worth of steps.
	perEpoch := max(int(math.Round(1/dp.SampleRate)), 1)

	sum := make([]float64, np)
	g := make([]float64, np)
	var batch []int
	var lossSum float64
	var lossN int
	for s := 0; s < steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, st, err
		}
		batch = sampler.next(batch[:0])
		clear(sum)
		for _, i := range batch {
			loss, err := pe.grad(data.X[i], data.Y[i], g)
			if err != nil {
				return nil, st, err
			}
			var sq float64
			for _, v := range g {
				sq += v * v
			}
			norm := math.Sqrt(sq)
			if math.IsNaN(norm) || math.IsInf(norm, 0) {
				return nil, st, fmt.Errorf("train: per-example gradient diverged to norm %v at step %d (lower the learning rate)", norm, s)
			}
			f := 1.0
			if norm > dp.ClipNorm {
				f = dp.ClipNorm / norm
			}
			for j, v := range g {
				sum[j] += f * v
			}
			if s >= steps-perEpoch {
				lossSum += loss
				lossN++
			}
		}
		st.Samples += len(batch)
		for j := range sum {
			z := noise.Normal()
			if math.IsNaN(z) || math.IsInf(z, 0) {
				return nil, st, fmt.Errorf("train: noise source returned %v", z)
			}
			sum[j] = (sum[j] + noiseStd*z) / expected
		}
		opt.step(p, sum)
		if i := model.FirstNonFinite(p); i >= 0 {
			return nil, st, fmt.Errorf("train: parameter %d became %v at step %d (lower the learning rate)", i, p[i], s)
		}
		pe.setParams(p)
	}
	st.Steps = steps
	st.Loss = lossSum / float64(max(lossN, 1))
	return p, st, nil
}

// poissonSampler draws Poisson-sampled batches: each of n indices is in a
// batch independently with probability q. It uses math/rand, seeded, for
// reproducibility (see the package notes on what that means for privacy);
// it draws exactly n uniforms per batch.
type poissonSampler struct {
	rng *rand.Rand
	n   int
	q   float64
}

func newPoissonSampler(seed int64, n int, q float64) *poissonSampler {
	return &poissonSampler{rng: rand.New(rand.NewSource(seed)), n: n, q: q}
}

// next appends the next batch's indices, in increasing order, to dst.
func (s *poissonSampler) next(dst []int) []int {
	for i := 0; i < s.n; i++ {
		if s.rng.Float64() < s.q {
			dst = append(dst, i)
		}
	}
	return dst
}

// perExample computes one record's gradient of its binary cross-entropy at
// the current parameters.
type perExample interface {
	// grad writes the gradient at (x, y) into g (len NumParams, the flat
	// layout) and returns the record's loss.
	grad(x []float64, y float64, g []float64) (float64, error)
	// setParams replaces the current parameters.
	setParams(p []float64)
	close()
}

func newPerExample(spec model.Spec, params []float64) (perExample, error) {
	if spec.Kind == model.KindLogReg {
		return &logregGrad{w: append([]float64(nil), params...)}, nil
	}
	m, err := newGraph(spec, 1, params, graphOpts{})
	if err != nil {
		return nil, err
	}
	return &graphGrad{m: m}, nil
}

// logregGrad is logistic regression's closed-form gradient: with
// z = w·x + b and loss softplus(z) − y·z, ∂/∂w = (sigmoid(z) − y)·x and
// ∂/∂b = sigmoid(z) − y. w holds the weights then the bias.
type logregGrad struct{ w []float64 }

func (l *logregGrad) grad(x []float64, y float64, g []float64) (float64, error) {
	in := len(x)
	z := l.w[in]
	for j, v := range x {
		z += l.w[j] * v
	}
	r := sigmoid(z) - y
	for j, v := range x {
		g[j] = r * v
	}
	g[in] = r
	return softplus(z) - y*z, nil
}

func (l *logregGrad) setParams(p []float64) { copy(l.w, p) }
func (l *logregGrad) close()                {}

// sigmoid is 1/(1+e^−z), computed without overflow.
func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

// graphGrad runs the model's Gorgonia graph on a batch of one and reads
// each parameter node's gradient (of the record's cross-entropy, as the
// batch mean of one record is that record's loss) without a solver step,
// zeroing it after reading as a solver would.
type graphGrad struct{ m *graph }

func (gg *graphGrad) grad(x []float64, y float64, g []float64) (float64, error) {
	m := gg.m
	copy(m.xT.Data().([]float64), x)
	m.yT.Data().([]float64)[0] = y
	defer m.machine.Reset()
	if err := m.machine.RunAll(); err != nil {
		return 0, fmt.Errorf("train: forward/backward: %w", err)
	}
	off := 0
	for _, pn := range m.params {
		gv, err := pn.Grad()
		if err != nil {
			return 0, fmt.Errorf("train: gradient of %s: %w", pn.Name(), err)
		}
		d, err := floats(gv.Data())
		if err != nil {
			return 0, fmt.Errorf("train: gradient of %s: %w", pn.Name(), err)
		}
		if n := pn.Shape().TotalSize(); len(d) != n {
			return 0, fmt.Errorf("train: gradient of %s has %d values, want %d", pn.Name(), len(d), n)
		}
		off += copy(g[off:], d)
		// The tape machine adds into the gradient; solvers zero it after
		// their step, and so must we.
		clear(d)
	}
	return m.bceVal.Data().(float64), nil
}

// setParams writes p into the parameter nodes' values in place, as a
// solver's step does.
func (gg *graphGrad) setParams(p []float64) {
	off := 0
	for _, pn := range gg.m.params {
		d := pn.Value().Data().([]float64)
		off += copy(d, p[off:off+len(d)])
	}
}

func (gg *graphGrad) close() { gg.m.close() }

func floats(v any) ([]float64, error) {
	switch d := v.(type) {
	case []float64:
		return d, nil
	case float64:
		return []float64{d}, nil
	}
	return nil, fmt.Errorf("value of type %T, want float64", v)
}

// optimizer moves p along the (noisy) gradient g.
type optimizer interface{ step(p, g []float64) }

type sgd struct{ lr float64 }

func (o *sgd) step(p, g []float64) {
	for j, v := range g {
		p[j] -= o.lr * v
	}
}

// adam is Adam (Kingma & Ba 2015) with bias correction.
type adam struct {
	lr, beta1, beta2, eps float64
	m, v                  []float64
	t                     int
}

func newAdam(lr float64, n int) *adam {
	return &adam{lr: lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, m: make([]float64, n), v: make([]float64, n)}
}

func (o *adam) step(p, g []float64) {
	o.t++
	c1 := 1 - math.Pow(o.beta1, float64(o.t))
	c2 := 1 - math.Pow(o.beta2, float64(o.t))
	for j, v := range g {
		o.m[j] = o.beta1*o.m[j] + (1-o.beta1)*v
		o.v[j] = o.beta2*o.v[j] + (1-o.beta2)*v*v
		p[j] -= o.lr * (o.m[j] / c1) / (math.Sqrt(o.v[j]/c2) + o.eps)
	}
}
