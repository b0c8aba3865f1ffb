package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedledger/fedledger/internal/model"
)

// Personalisation: beside the global model, which goes on the audit log and
// is what a regulator verifies, each hospital may keep a personal model of
// its own, the standard answer to label shift between sites. Methods:
//
//	finetune   the global model, trained further on the site's data
//	intercept  the global model with the site's own output bias (the
//	           intercept of a logistic regression; FedPer's per-site head
//	           reduced to the one parameter label shift moves), fitted on
//	           the site's data with every other parameter fixed, pulled
//	           towards the global intercept by λ/2·(b − b_global)² (λ ≥ 0)
//	ditto      Ditto (Li et al., ICML 2021): a personal model trained on the
//	           site's loss plus λ/2·||v − w_global||², continued from the
//	           site's previous personal model every round
const (
	PersonalFineTune  = "finetune"
	PersonalIntercept = "intercept"
	PersonalDitto     = "ditto"
)

// Personalisations are the methods, in the order above.
var Personalisations = []string{PersonalFineTune, PersonalIntercept, PersonalDitto}

// ErrPersonal marks an invalid personalisation configuration.
var ErrPersonal = errors.New("train: invalid personalisation")

// PersonalConfig is how a hospital personalises.
type PersonalConfig struct {
	Method string
	// Train is the personal training: optimiser, learning rate, batch and
	// steps (its ProxMu is not used).
	Train model.TrainConfig
	// Lambda is the pull towards the global model: Ditto's (> 0), the
	// intercept's (≥ 0); fine-tuning has none.
	Lambda float64
}

// Validate checks the configuration.
func (c PersonalConfig) Validate() error {
	if !slices.Contains(Personalisations, c.Method) {
		return fmt.Errorf("%w: method %q (want one of %v)", ErrPersonal, c.Method, Personalisations)
	}
	if c.Method == PersonalDitto && (!(c.Lambda > 0) || math.IsInf(c.Lambda, 0)) {
		return fmt.Errorf("%w: ditto needs lambda > 0, got %v", ErrPersonal, c.Lambda)
	}
	if c.Lambda < 0 || math.IsNaN(c.Lambda) || math.IsInf(c.Lambda, 0) {
		return fmt.Errorf("%w: lambda = %v", ErrPersonal, c.Lambda)
	}
	if err := c.Train.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrPersonal, err)
	}
	return nil
}

// LocalStart is where a site's local training starts in a round: the
// global model, except that with the intercept method the site trains from
// the global weights with its own intercept (from its personal model, when
// it has one), so the shared weights are learned beside per-site
// intercepts, as FedPer learns a shared body beside per-site heads. The
// result is a new slice.
func LocalStart(spec model.Spec, method string, global, personal []float64) []float64 {
	out := slices.Clone(global)
	if method == PersonalIntercept && len(personal) == len(global) && len(global) == spec.NumParams() {
		out[len(out)-1] = personal[len(personal)-1] // the output bias is the last parameter
	}
	return out
}

// Personalise returns the site's personal model, from the global model and,
// for Ditto, the site's previous personal model (nil: the global one).
// Neither input is modified.
func Personalise(ctx context.Context, spec model.Spec, global, previous []float64, data *Dataset, cfg PersonalConfig) ([]float64, TrainStats, error) {
	if err := cfg.Validate(); err != nil {
		return nil, TrainStats{}, err
	}
	tc := cfg.Train
	tc.ProxMu = 0
	switch cfg.Method {
	case PersonalFineTune:
		return train(ctx, spec, global, data, tc, graphOpts{})
	case PersonalIntercept:
		return train(ctx, spec, global, data, tc, graphOpts{outputBiasOnly: true, anchor: global, mu: cfg.Lambda})
	default: // ditto
		start := previous
		if start == nil {
			start = global
		}
		if len(start) != len(global) {
			return nil, TrainStats{}, fmt.Errorf("%w: previous personal model of %d parameters, the global one has %d", ErrPersonal, len(start), len(global))
		}
		return train(ctx, spec, start, data, tc, graphOpts{anchor: global, mu: cfg.Lambda})
	}
}
