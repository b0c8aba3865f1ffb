package privacy

import (
	"fmt"
	"math"
)

const (
	// maxSigma is the largest noise multiplier NoiseMultiplier tries, as in
	// Opacus's get_noise_multiplier (opacus/accountants/utils.py, MAX_SIGMA).
	maxSigma = 1e6
	// sigmaTol is NoiseMultiplier's relative tolerance.
	sigmaTol = 1e-4
)

// NoiseMultiplier returns the smallest noise multiplier σ, to a relative
// tolerance of 1e-4 and rounded up, such that steps steps of the sampled
// Gaussian mechanism with sampling rate q are (targetEps, delta)-DP as
// computed by [EpsilonFor]. The result always meets the target:
// EpsilonFor([]Entry{{q, σ, steps}}, delta) <= targetEps.
//
// It fails if no σ up to 1e6 reaches the target. In particular, the
// conversion to (ε, δ) at [DefaultOrders], whose largest order is 63, has a
// floor that even infinite noise cannot beat (about 0.1 at δ = 1e-5); a
// target at or below it is reported as unreachable.
func NoiseMultiplier(targetEps, delta, q float64, steps int) (float64, error) {
	switch {
	case !(targetEps > 0) || math.IsInf(targetEps, 1):
		return 0, fmt.Errorf("privacy: target epsilon = %v, want finite and > 0", targetEps)
	case !(delta > 0 && delta < 1):
		return 0, fmt.Errorf("privacy: delta = %v, want in (0, 1)", delta)
	case !(q > 0 && q <= 1):
		return 0, fmt.Errorf("privacy: sampling rate q = %v, want in (0, 1]", q)
	case steps < 1:
		return 0, fmt.Errorf("privacy: steps = %d, want >= 1", steps)
	}
	zero := make([]float64, len(accountingOrders))
	floor, _, err := Epsilon(accountingOrders, zero, delta)
	if err != nil {
		return 0, err
	}
	if targetEps <= floor {
		return 0, fmt.Errorf("privacy: target epsilon = %v unreachable at delta = %v: even infinite noise gives epsilon %.4g", targetEps, delta, floor)
	}

	// meets reports whether sigma keeps epsilon within the target.
	meets := func(sigma float64) (bool, error) {
		eps, err := EpsilonFor([]Entry{{Q: q, Sigma: sigma, Steps: steps}}, delta)
		return eps <= targetEps, err
	}
	// Invariant: lo misses the target (σ = 0 gives +Inf), hi meets it.
	lo, hi := 0.0, 1.0
	for {
		ok, err := meets(hi)
		if err != nil {
			return 0, err
		}
		if ok {
			break
		}
		if hi >= maxSigma {
			return 0, fmt.Errorf("privacy: target epsilon = %v unreachable at delta = %v, q = %v, steps = %d with noise multiplier <= %g", targetEps, delta, q, steps, float64(maxSigma))
		}
		lo, hi = hi, min(2*hi, maxSigma)
	}
	for hi-lo > sigmaTol*hi {
		mid := lo + (hi-lo)/2
		ok, err := meets(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}
