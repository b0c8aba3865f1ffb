package demo

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/fedledger/fedledger/client/train"
)

// The attacks a compromised hospital can run in the demo (Config.Attack),
// each every round, with Config.AttackScale = s:
const (
	// AttackScaled sends s·Δ (model replacement's boosting).
	AttackScaled = "scaled"
	// AttackSignFlip sends −s·Δ.
	AttackSignFlip = "signflip"
	// AttackNoise sends Gaussian noise of s times Δ's norm.
	AttackNoise = "noise"
	// AttackLabelFlip trains on its data with every label flipped and
	// sends that update, scaled by s (s = 1: plain label flipping; s > 1:
	// model replacement with a poisoned model).
	AttackLabelFlip = "labelflip"
)

// Attacks lists the attack names.
var Attacks = []string{AttackScaled, AttackSignFlip, AttackNoise, AttackLabelFlip}

// AttackHooks returns the client hooks (Tamper, PoisonData) of a
// compromised hospital running attack kind with scale.
func AttackHooks(kind string, scale float64) (func(uint64, []float64), func(*train.Dataset)) {
	scaled := func(f float64) func(uint64, []float64) {
		return func(_ uint64, delta []float64) {
			for i := range delta {
				delta[i] *= f
			}
		}
	}
	switch kind {
	case "", AttackScaled:
		return scaled(scale), nil
	case AttackSignFlip:
		return scaled(-scale), nil
	case AttackNoise:
		rng := rand.New(rand.NewPCG(7, 11))
		return func(_ uint64, delta []float64) {
			var norm float64
			for _, d := range delta {
				norm += d * d
			}
			sigma := scale * math.Sqrt(norm/float64(len(delta)))
			for i := range delta {
				delta[i] = rng.NormFloat64() * sigma
			}
		}, nil
	case AttackLabelFlip:
		return scaled(scale), func(d *train.Dataset) {
			for i, y := range d.Y {
				d.Y[i] = 1 - y
			}
		}
	}
	panic(fmt.Sprintf("demo: unknown attack %q", kind))
}
