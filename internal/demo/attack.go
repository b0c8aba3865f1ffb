package demo

import (
	"context"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/fedtest"
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

// demoAdmin is the consortium admin of the demo when it excludes, from the
// next round, the sites the norm check left out (Config.ExcludeLeftOut):
// it signs each exclusion and has the coordinator relay it to the log.
type demoAdmin struct {
	out  io.Writer
	mu   sync.Mutex
	done map[string]bool
	wg   sync.WaitGroup
}

// leftOut excludes r's left-out sites, once each, in the background (the
// coordinator calls OnRound from its event loop).
func (a *demoAdmin) leftOut(ctx context.Context, fed *fedtest.Federation, study string, r coordinator.RoundReport) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		a.done = map[string]bool{}
	}
	for _, site := range r.Excluded {
		if a.done[site] {
			continue
		}
		a.done[site] = true
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			reason := fmt.Sprintf("its update was past the norm bound in round %d", r.Round)
			if err := fed.Exclude(ctx, study, site, uint64(r.Round)+1, reason); err != nil {
				fmt.Fprintf(a.out, "  admin: could not exclude %s: %v\n", site, err)
				return
			}
			fmt.Fprintf(a.out, "  admin: excluded %s from round %d on (%s); the exclusion is on the audit log\n", site, r.Round+1, reason)
		}()
	}
}

func (a *demoAdmin) wait() { a.wg.Wait() }
