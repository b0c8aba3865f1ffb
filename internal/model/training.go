package model

import (
	"errors"
	"fmt"
	"math"
)

// Optimisers for local training.
const (
	OptSGD  = "sgd"
	OptAdam = "adam"
)

// TrainConfig holds local-training hyperparameters.
type TrainConfig struct {
	Optimizer    string
	LearningRate float64
	BatchSize    int
	// Epochs over the local data; ignored when LocalSteps > 0.
	Epochs int
	// LocalSteps, when > 0, is the exact number of mini-batch steps.
	LocalSteps int
	// ProxMu is FedProx's proximal coefficient: the cost gains
	// mu/2·||w - w_start||², pulling local training towards the global model.
	ProxMu float64
	Seed   int64
}

// DefaultTrainConfig is the Fed-Heart-Disease setting: Adam, learning rate
// 1e-3, batch 4, one epoch.
func DefaultTrainConfig() TrainConfig {
	return TrainConfig{Optimizer: OptAdam, LearningRate: 1e-3, BatchSize: 4, Epochs: 1, Seed: 1}
}

// ErrTrainConfig marks invalid training hyperparameters.
var ErrTrainConfig = errors.New("model: invalid training config")

// Validate checks the hyperparameters.
func (c TrainConfig) Validate() error {
	var errs []error
	if c.Optimizer != OptSGD && c.Optimizer != OptAdam {
		errs = append(errs, fmt.Errorf("%w: optimizer %q (want %q or %q)", ErrTrainConfig, c.Optimizer, OptSGD, OptAdam))
	}
	if !(c.LearningRate > 0) || math.IsInf(c.LearningRate, 0) {
		errs = append(errs, fmt.Errorf("%w: learning_rate = %v, want > 0", ErrTrainConfig, c.LearningRate))
	}
	if c.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("%w: batch_size = %d, want >= 1", ErrTrainConfig, c.BatchSize))
	}
	if c.LocalSteps < 0 || c.Epochs < 0 || (c.LocalSteps == 0 && c.Epochs == 0) {
		errs = append(errs, fmt.Errorf("%w: set local_steps or epochs >= 1 (got %d, %d)", ErrTrainConfig, c.LocalSteps, c.Epochs))
	}
	if c.ProxMu < 0 || math.IsNaN(c.ProxMu) {
		errs = append(errs, fmt.Errorf("%w: prox_mu = %v, want >= 0", ErrTrainConfig, c.ProxMu))
	}
	return errors.Join(errs...)
}
