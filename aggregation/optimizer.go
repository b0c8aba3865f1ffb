package aggregation

import (
	"errors"
	"fmt"
	"math"
)

// Strategy names.
const (
	FedAvg     = "fedavg"
	FedAdam    = "fedadam"
	FedYogi    = "fedyogi"
	FedAdagrad = "fedadagrad"
)

// Config selects and tunes a server optimiser. Beta1/Beta2/Tau are unused by
// FedAvg; Beta2 is unused by FedAdagrad.
type Config struct {
	Name     string  `json:"name"`
	ServerLR float64 `json:"server_lr"`
	Beta1    float64 `json:"beta1,omitempty"`
	Beta2    float64 `json:"beta2,omitempty"`
	Tau      float64 `json:"tau,omitempty"`
}

// ErrConfig marks an invalid strategy configuration.
var ErrConfig = errors.New("aggregation: invalid strategy")

// DefaultConfig returns a strategy's defaults: server learning rate 1 for
// FedAvg; for the adaptive optimisers eta = 0.01, beta1 = 0.9,
// beta2 = 0.99, tau = 1e-3, in the ranges Reddi et al. recommend.
func DefaultConfig(name string) (Config, error) {
	switch name {
	case FedAvg:
		return Config{Name: FedAvg, ServerLR: 1}, nil
	case FedAdam, FedYogi, FedAdagrad:
		return Config{Name: name, ServerLR: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}, nil
	}
	return Config{}, fmt.Errorf("%w: unknown strategy %q (want %s, %s, %s or %s)", ErrConfig, name, FedAvg, FedAdam, FedYogi, FedAdagrad)
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if _, err := DefaultConfig(c.Name); err != nil {
		return err
	}
	var errs []error
	if !(c.ServerLR > 0) || math.IsInf(c.ServerLR, 0) {
		errs = append(errs, fmt.Errorf("%w: server_lr = %v, want > 0", ErrConfig, c.ServerLR))
	}
	if c.Name != FedAvg {
		if c.Beta1 < 0 || c.Beta1 >= 1 {
			errs = append(errs, fmt.Errorf("%w: beta1 = %v, want [0, 1)", ErrConfig, c.Beta1))
		}
		if c.Name != FedAdagrad && (c.Beta2 < 0 || c.Beta2 >= 1) {
			errs = append(errs, fmt.Errorf("%w: beta2 = %v, want [0, 1)", ErrConfig, c.Beta2))
		}
		if !(c.Tau > 0) {
			errs = append(errs, fmt.Errorf("%w: tau = %v, want > 0", ErrConfig, c.Tau))
		}
	}
	return errors.Join(errs...)
}

// ServerOptimizer applies the clients' average delta to the global model.
// It is stateful (moment estimates) and its state can be saved and restored
// so a restarted coordinator continues the same trajectory.
type ServerOptimizer struct {
	cfg   Config
	M     []float64 `json:"m,omitempty"`
	V     []float64 `json:"v,omitempty"`
	Steps int       `json:"steps"`
}

// NewServerOptimizer returns an optimiser with empty state.
func NewServerOptimizer(cfg Config) (*ServerOptimizer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &ServerOptimizer{cfg: cfg}, nil
}

// Config returns the optimiser's configuration.
func (o *ServerOptimizer) Config() Config { return o.cfg }

// Step returns the next global model from the current one and the
// sample-weighted average delta Δ of the clients:
//
//	FedAvg:     x ← x + η Δ
//	adaptive:   m ← β1 m + (1−β1) Δ
//	            v ← v + Δ²                          (FedAdagrad)
//	            v ← β2 v + (1−β2) Δ²                (FedAdam)
//	            v ← v − (1−β2) Δ² sign(v − Δ²)      (FedYogi)
//	            x ← x + η m / (√v + τ)
//
// v starts at τ² as in Reddi et al. (Algorithm 2). global is not modified.
func (o *ServerOptimizer) Step(global, delta []float64) ([]float64, error) {
	if len(global) != len(delta) {
		return nil, fmt.Errorf("%w: delta has %d values, model %d", ErrUpdate, len(delta), len(global))
	}
	out := make([]float64, len(global))
	c := o.cfg
	// Every product is rounded on its own (the float64 conversions forbid
	// fused multiply-adds, which Go may emit on arm64 and others): the
	// coordinator and every countersigning hospital, whatever their CPU,
	// compute the same bits.
	if c.Name == FedAvg {
		for i := range global {
			out[i] = global[i] + float64(c.ServerLR*delta[i])
		}
		o.Steps++
		return out, nil
	}
	if o.M == nil {
		o.M = make([]float64, len(global))
		o.V = make([]float64, len(global))
		for i := range o.V {
			o.V[i] = float64(c.Tau * c.Tau)
		}
	}
	if len(o.M) != len(global) {
		return nil, fmt.Errorf("%w: optimiser state has %d values, model %d", ErrUpdate, len(o.M), len(global))
	}
	for i, d := range delta {
		o.M[i] = float64(c.Beta1*o.M[i]) + float64((1-c.Beta1)*d)
		d2 := float64(d * d)
		switch c.Name {
		case FedAdagrad:
			o.V[i] += d2
		case FedAdam:
			o.V[i] = float64(c.Beta2*o.V[i]) + float64((1-c.Beta2)*d2)
		case FedYogi:
			o.V[i] -= float64(float64((1-c.Beta2)*d2) * sign(o.V[i]-d2))
		}
		out[i] = global[i] + float64(c.ServerLR*o.M[i])/(math.Sqrt(o.V[i])+c.Tau)
	}
	o.Steps++
	return out, nil
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}
