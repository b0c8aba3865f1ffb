package privacy

import (
	"fmt"
	"math"
)

// Epsilon converts RDP values, rdp[i] at order orders[i], to an ε such that
// the mechanism is (ε, delta)-DP: the smallest that the bound below gives
// at any of the orders. It also returns the order attaining it. The bound
// is the conversion of Balle et al., "Hypothesis Testing
// Interpretations and Rényi Differential Privacy" (AISTATS 2020, Theorem 21
// of arXiv:1905.09982), as Opacus's get_privacy_spent does:
//
//	ε = min over α of  rdp(α) − (log δ + log α)/(α − 1) + log((α − 1)/α),
//
// clamped below at 0. At α = +Inf the bound is rdp(α). Ties go to the
// earliest order; if every bound is +Inf, ε is +Inf and the order is
// orders[0].
func Epsilon(orders, rdp []float64, delta float64) (eps, order float64, err error) {
	logDelta := math.Log(delta)
	return convert(orders, rdp, delta, func(a, r float64) float64 {
		if math.IsInf(a, 1) {
			return r
		}
		return r - (logDelta+math.Log(a))/(a-1) + math.Log((a-1)/a)
	})
}

// EpsilonClassic is [Epsilon] with Mironov's original conversion
// ("Rényi Differential Privacy", CSF 2017, Proposition 3):
//
//	ε = min over α of  rdp(α) + log(1/δ)/(α − 1).
//
// It is looser; it reproduces figures published with it, such as those of
// TensorFlow Privacy's tutorials and of its tests before December 2020.
func EpsilonClassic(orders, rdp []float64, delta float64) (eps, order float64, err error) {
	logInvDelta := -math.Log(delta)
	return convert(orders, rdp, delta, func(a, r float64) float64 {
		if math.IsInf(a, 1) {
			return r
		}
		return r + logInvDelta/(a-1)
	})
}

// convert validates its arguments and minimises bound over the orders.
func convert(orders, rdp []float64, delta float64, bound func(a, r float64) float64) (eps, order float64, err error) {
	if len(orders) == 0 {
		return 0, 0, fmt.Errorf("privacy: no orders")
	}
	if len(orders) != len(rdp) {
		return 0, 0, fmt.Errorf("privacy: len(orders) = %d, len(rdp) = %d, want equal", len(orders), len(rdp))
	}
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("privacy: delta = %v, want in (0, 1)", delta)
	}
	if err := checkOrders(orders); err != nil {
		return 0, 0, err
	}
	for i, r := range rdp {
		if !(r >= 0) {
			return 0, 0, fmt.Errorf("privacy: rdp[%d] = %v, want >= 0", i, r)
		}
	}
	eps, order = math.Inf(1), orders[0]
	for i, a := range orders {
		if e := bound(a, rdp[i]); e < eps {
			eps, order = e, a
		}
	}
	return max(eps, 0), order, nil
}
