package coordinator

import (
	"context"
	"fmt"

	"github.com/fedledger/fedledger/aggregation"
)

// Aggregator turns one round's accepted updates into the next global model.
// The round core treats Update.Payload as opaque bytes; only the Aggregator
// knows whether it is a plaintext weighted delta or a ciphertext, so secure
// aggregation plugs in here without touching the round protocol.
type Aggregator interface {
	// Aggregate returns the next global parameters. updates are in client-id
	// order; global must not be modified.
	Aggregate(ctx context.Context, global []float64, updates []Update) ([]float64, error)
}

// PlaintextAggregator decodes "f64le-weighted-delta/v1" payloads, averages
// them by sample weight in the given order and applies a server optimiser.
type PlaintextAggregator struct {
	opt *aggregation.ServerOptimizer
}

// NewPlaintextAggregator builds the plaintext aggregator for a strategy.
func NewPlaintextAggregator(cfg aggregation.Config) (*PlaintextAggregator, error) {
	opt, err := aggregation.NewServerOptimizer(cfg)
	if err != nil {
		return nil, err
	}
	return &PlaintextAggregator{opt: opt}, nil
}

// Aggregate implements Aggregator.
func (p *PlaintextAggregator) Aggregate(ctx context.Context, global []float64, updates []Update) ([]float64, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sum := aggregation.NewWeightedSum(len(global))
	for _, u := range updates {
		delta, err := aggregation.DecodeWeightedDelta(u.Payload, len(global))
		if err != nil {
			return nil, fmt.Errorf("coordinator: update from %s: %w", u.Client, err)
		}
		if err := sum.Add(delta, float64(u.Weight)); err != nil {
			return nil, fmt.Errorf("coordinator: update from %s: %w", u.Client, err)
		}
	}
	avg, err := sum.Average()
	if err != nil {
		return nil, err
	}
	return p.opt.Step(global, avg)
}
