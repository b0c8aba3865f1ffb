package train

import (
	"context"
	"fmt"
	"math"
	"math/rand"

	"github.com/fedledger/fedledger/internal/model"

	G "gorgonia.org/gorgonia"
)

// TrainStats summarises a Train call.
type TrainStats struct {
	Steps   int
	Samples int
	// Loss is the mean batch cross-entropy over the last epoch's worth of
	// steps (all steps when fewer).
	Loss float64
}

// Train runs local training from params (the global model, which is also
// the FedProx anchor) on data and returns the new parameters; params is not
// modified. The same inputs and seed give bit-identical results.
//
// Mini-batches are drawn from a shuffled order; when fewer than a batch of
// samples remain, the order is reshuffled and the batch is completed from
// the new order, so every step sees exactly min(BatchSize, n) samples and an
// epoch is ceil(n / batch) steps.
func Train(ctx context.Context, spec model.Spec, params []float64, data *Dataset, cfg model.TrainConfig) ([]float64, TrainStats, error) {
	return train(ctx, spec, params, data, cfg, graphOpts{anchor: params, mu: cfg.ProxMu})
}

func train(ctx context.Context, spec model.Spec, params []float64, data *Dataset, cfg model.TrainConfig, o graphOpts) ([]float64, TrainStats, error) {
	var st TrainStats
	if err := spec.Validate(); err != nil {
		return nil, st, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, st, err
	}
	if len(params) != spec.NumParams() {
		return nil, st, fmt.Errorf("train: %d parameters for %s, want %d", len(params), spec, spec.NumParams())
	}
	if err := data.check(spec); err != nil {
		return nil, st, err
	}
	n := data.Len()
	batch := min(cfg.BatchSize, n)
	perEpoch := (n + batch - 1) / batch
	steps := cfg.LocalSteps
	if steps == 0 {
		steps = cfg.Epochs * perEpoch
	}
	if o.mu > 0 && len(o.anchor) != len(params) {
		return nil, st, fmt.Errorf("train: proximal anchor of %d parameters, want %d", len(o.anchor), len(params))
	}
	m, err := newGraph(spec, batch, params, o)
	if err != nil {
		return nil, st, err
	}
	defer m.close()
	var solver G.Solver
	if cfg.Optimizer == model.OptAdam {
		solver = G.NewAdamSolver(G.WithLearnRate(cfg.LearningRate))
	} else {
		solver = G.NewVanillaSolver(G.WithLearnRate(cfg.LearningRate))
	}

	rng := rand.New(rand.NewSource(cfg.Seed))
	order := rng.Perm(n)
	pos := 0
	xb := m.xT.Data().([]float64)
	yb := m.yT.Data().([]float64)
	in := spec.Inputs
	var lossSum float64
	var lossN int
	for s := 0; s < steps; s++ {
		if err := ctx.Err(); err != nil {
			return nil, st, err
		}
		for k := 0; k < batch; k++ {
			if pos == n {
				order, pos = rng.Perm(n), 0
			}
			i := order[pos]
			pos++
			copy(xb[k*in:(k+1)*in], data.X[i])
			yb[k] = data.Y[i]
		}
		loss, err := m.step(solver)
		if err != nil {
			return nil, st, err
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, st, fmt.Errorf("train: loss diverged to %v at step %d (lower the learning rate)", loss, s)
		}
		if s >= steps-perEpoch {
			lossSum += loss
			lossN++
		}
	}
	st = TrainStats{Steps: steps, Samples: steps * batch, Loss: lossSum / float64(max(lossN, 1))}
	out := m.flat()
	if i := model.FirstNonFinite(out); i >= 0 {
		return nil, st, fmt.Errorf("train: parameter %d became %v", i, out[i])
	}
	return out, st, nil
}
