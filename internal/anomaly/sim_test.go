package anomaly

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// simFeatures are the signals of the simulated federation.
var simFeatures = []string{"update_norm", "projection", "val_loss", "val_acc", "upload_secs", "retries"}

// simSite holds the stable per-site distribution parameters.
type simSite struct {
	norm, loss, acc, upload float64
}

// federation simulates sites × rounds of signals from per-site stable
// distributions: sites differ (data volume, bandwidth, local data
// difficulty) but each site is stationary. attacker >= 0 is a site whose
// update (hence its declared norm and projection scalar) is multiplied by
// boost from round attackFrom on.
type federation struct {
	sites, rounds int
	seed          uint64
	attacker      int
	attackFrom    uint64
	boost         float64
}

// run feeds every round to d and returns the flags by round (1-based
// rounds).
func (f federation) run(d *Detector) (map[uint64][]Flag, error) {
	rng := rand.New(rand.NewPCG(f.seed, 0xfed1ed9e))
	sites := make([]simSite, f.sites)
	for s := range sites {
		// Harder local data (hardness in [0,1]) means higher loss and lower
		// accuracy of the global model.
		hardness := rng.Float64()
		sites[s] = simSite{
			norm:   0.7 + 0.6*rng.Float64(),
			loss:   0.25 + 0.35*hardness,
			acc:    0.92 - 0.17*hardness + 0.02*(rng.Float64()-0.5),
			upload: 4 + 16*rng.Float64(),
		}
	}
	flags := make(map[uint64][]Flag)
	for r := uint64(1); r <= uint64(f.rounds); r++ {
		obs := make([]Observation, f.sites)
		for s, p := range sites {
			norm := p.norm * math.Exp(0.1*rng.NormFloat64())
			proj := norm * 0.05 * rng.NormFloat64()
			loss := p.loss + 0.02*rng.NormFloat64()
			acc := p.acc + 0.01*rng.NormFloat64()
			if s == f.attacker && r >= f.attackFrom {
				norm *= f.boost
				proj *= f.boost
			}
			if rng.Float64() < 0.02 {
				loss = math.NaN()
			}
			if rng.Float64() < 0.02 {
				acc = math.NaN()
			}
			upload := p.upload * math.Exp(0.15*rng.NormFloat64())
			retries := float64(poisson(rng, 0.2))
			obs[s] = Observation{
				Site:   fmt.Sprintf("hospital-%02d", s),
				Round:  r,
				Values: []float64{norm, proj, loss, acc, upload, retries},
			}
		}
		fl, err := d.Observe(r, obs)
		if err != nil {
			return nil, err
		}
		flags[r] = fl
	}
	return flags, nil
}

func poisson(rng *rand.Rand, lambda float64) int {
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// newSimDetector is the detector used on the simulated federation: all
// defaults, plus a scale floor of one retry for the retry count.
func newSimDetector(opts ...Option) *Detector {
	return NewDetector(simFeatures, append([]Option{WithMinScale("retries", 1)}, opts...)...)
}
