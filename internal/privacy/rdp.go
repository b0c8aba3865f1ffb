package privacy

import (
	"errors"
	"fmt"
	"math"
)

// DefaultOrders are the Rényi orders α at which [Accountant], [EpsilonFor]
// and [NoiseMultiplier] evaluate RDP: 1.1, 1.2, …, 10.9, then 12, 13, …, 63.
// It is Opacus's RDPAccountant.DEFAULT_ALPHAS (pytorch/opacus,
// opacus/accountants/rdp.py: [1 + x / 10.0 for x in range(1, 100)] +
// list(range(12, 64))), which TensorFlow Privacy's MNIST tutorials also use.
//
// DefaultOrders is a copy: changing it does not change what the package
// computes, so every node audits with the same orders.
var DefaultOrders = defaultOrders()

// accountingOrders is the package's own copy of DefaultOrders.
var accountingOrders = defaultOrders()

func defaultOrders() []float64 {
	o := make([]float64, 0, 99+52)
	for x := 1; x < 100; x++ {
		o = append(o, 1+float64(x)/10)
	}
	for a := 12; a < 64; a++ {
		o = append(o, float64(a))
	}
	return o
}

// maxOrder bounds finite orders: the integer-order sum has α+1 terms.
const maxOrder = 1e6

// maxTerms bounds the fractional-order series, which in extreme settings
// (q near 1/2 with a huge sigma) converges only polynomially.
const maxTerms = 1 << 24

// RDP returns the Rényi differential privacy, at each of orders, of steps
// compositions of the sampled Gaussian mechanism with sampling rate q and
// noise multiplier sigma (noise standard deviation over L2 sensitivity).
//
// It is a port of compute_rdp from TensorFlow Privacy's rdp_accountant.py
// (and Opacus's accountants/analysis/rdp.py), after Mironov, Talwar and Zhang
// (arXiv:1908.10530, Section 3.3): per step, RDP(α) = log(A_α)/(α−1), where
// A_α is a binomial sum for integer α and two rapidly converging series with
// log erfc terms for fractional α, all evaluated in log space. Special cases:
// q = 0 gives 0, sigma = 0 gives +Inf, q = 1 gives the plain Gaussian
// mechanism's α/(2σ²), and α = +Inf gives +Inf. steps = 0 gives 0.
// Per-step values below about q·1e-16 are rounding noise, clamped at 0.
//
// Orders must be greater than 1, and finite ones at most 1e6; the work for
// an integer order grows linearly with it.
func RDP(q, sigma float64, steps int, orders []float64) ([]float64, error) {
	if err := checkStep(q, sigma, steps); err != nil {
		return nil, err
	}
	if err := checkOrders(orders); err != nil {
		return nil, err
	}
	rdp := make([]float64, len(orders))
	if steps == 0 {
		return rdp, nil
	}
	for i, a := range orders {
		r, err := rdpStep(q, sigma, a)
		if err != nil {
			return nil, err
		}
		rdp[i] = r * float64(steps)
	}
	return rdp, nil
}

// checkStep validates the parameters of the sampled Gaussian mechanism.
func checkStep(q, sigma float64, steps int) error {
	if p := stepProblem(q, sigma, steps); p != "" {
		return errors.New("privacy: " + p)
	}
	return nil
}

// stepProblem describes what is wrong with the parameters, or returns "".
func stepProblem(q, sigma float64, steps int) string {
	switch {
	case !(q >= 0 && q <= 1):
		return fmt.Sprintf("sampling rate q = %v, want in [0, 1]", q)
	case !(sigma >= 0) || math.IsInf(sigma, 1):
		return fmt.Sprintf("noise multiplier = %v, want finite and >= 0", sigma)
	case steps < 0:
		return fmt.Sprintf("steps = %d, want >= 0", steps)
	}
	return ""
}

// checkOrders validates Rényi orders.
func checkOrders(orders []float64) error {
	for i, a := range orders {
		if !(a > 1) {
			return fmt.Errorf("privacy: orders[%d] = %v, want > 1", i, a)
		}
		if a > maxOrder && !math.IsInf(a, 1) {
			return fmt.Errorf("privacy: orders[%d] = %v, want <= %g or +Inf", i, a, float64(maxOrder))
		}
	}
	return nil
}

// rdpStep is the RDP at order alpha of one step; TF Privacy's _compute_rdp.
func rdpStep(q, sigma, alpha float64) (float64, error) {
	switch {
	case q == 0:
		return 0, nil
	case sigma == 0:
		return math.Inf(1), nil
	case q == 1:
		return alpha / (2 * sigma * sigma), nil
	case math.IsInf(alpha, 1):
		return math.Inf(1), nil
	}
	var logA float64
	if alpha == math.Trunc(alpha) {
		logA = logAInt(q, sigma, int(alpha))
	} else {
		var err error
		if logA, err = logAFrac(q, sigma, alpha); err != nil {
			return 0, err
		}
	}
	// RDP is nonnegative. When it is tiny next to q (a huge sigma or a
	// tiny q), log(A_α) is rounding noise of about q·1e-16 that can fall
	// below zero; such values are far too small to matter for ε.
	return max(logA/(alpha-1), 0), nil
}

// logAInt is log(A_α) for integer α (TF Privacy's _compute_log_a_int):
//
//	A_α = Σ_{i=0..α} C(α, i) q^i (1−q)^(α−i) exp((i²−i)/(2σ²)).
func logAInt(q, sigma float64, alpha int) float64 {
	logQ, log1mQ := math.Log(q), math.Log1p(-q)
	a := float64(alpha)
	logA := math.Inf(-1)
	logBinom := 0.0 // log C(α, i), updated incrementally
	for i := 0; i <= alpha; i++ {
		fi := float64(i)
		s := logBinom + fi*logQ + (a-fi)*log1mQ + (fi*fi-fi)/(2*sigma*sigma)
		logA = logAdd(logA, s)
		logBinom += math.Log(a-fi) - math.Log(fi+1)
	}
	return logA
}

// logAFrac is log(A_α) for fractional α (TF Privacy's _compute_log_a_frac):
// A_α split at z0 = σ² log(1/q − 1) + 1/2 into two series whose terms carry
// the generalised binomial coefficient C(α, i), alternating in sign once
// i > α, and Gaussian tail masses written with erfc.
func logAFrac(q, sigma, alpha float64) (float64, error) {
	logQ, log1mQ := math.Log(q), math.Log1p(-q)
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	twoVar := 2 * sigma * sigma
	scale := math.Sqrt2 * sigma
	logHalf := math.Log(0.5)

	logA0, logA1 := math.Inf(-1), math.Inf(-1)
	logCoef, negative := 0.0, false // log|C(α, i)| and its sign
	for i := 0; ; i++ {
		if i == maxTerms {
			return 0, fmt.Errorf("privacy: RDP series for q = %v, noise multiplier = %v, order = %v did not converge in %d terms", q, sigma, alpha, maxTerms)
		}
		fi := float64(i)
		j := alpha - fi

		logT0 := logCoef + fi*logQ + j*log1mQ
		logT1 := logCoef + j*logQ + fi*log1mQ
		logE0 := logHalf + logErfc((fi-z0)/scale)
		logE1 := logHalf + logErfc((z0-j)/scale)
		logS0 := logT0 + (fi*fi-fi)/twoVar + logE0
		logS1 := logT1 + (j*j-j)/twoVar + logE1

		if negative {
			var ok0, ok1 bool
			logA0, ok0 = logSub(logA0, logS0)
			logA1, ok1 = logSub(logA1, logS1)
			if !ok0 || !ok1 {
				return 0, fmt.Errorf("privacy: RDP series for q = %v, noise multiplier = %v, order = %v lost precision (negative partial sum)", q, sigma, alpha)
			}
		} else {
			logA0 = logAdd(logA0, logS0)
			logA1 = logAdd(logA1, logS1)
		}
		if math.Max(logS0, logS1) < -30 {
			break
		}
		// C(α, i+1) = C(α, i)·(α−i)/(i+1).
		logCoef += math.Log(math.Abs(j)) - math.Log(fi+1)
		if j < 0 {
			negative = !negative
		}
	}
	return logAdd(logA0, logA1), nil
}

// logAdd returns log(exp(x) + exp(y)).
func logAdd(x, y float64) float64 {
	a, b := math.Min(x, y), math.Max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub returns log(exp(x) − exp(y)), and false if that is negative.
func logSub(x, y float64) (float64, bool) {
	switch {
	case x < y:
		return 0, false
	case math.IsInf(y, -1):
		return x, true
	case x == y:
		return math.Inf(-1), true
	}
	d := math.Expm1(x - y)
	if math.IsInf(d, 1) {
		return x, true
	}
	return math.Log(d) + y, true
}

// logErfc returns log(erfc(x)), accurate also where erfc(x) underflows.
func logErfc(x float64) float64 {
	if x < 25 {
		return math.Log(math.Erfc(x))
	}
	// Asymptotic expansion at infinity:
	//   erfc(x) = exp(−x²)/(x√π) · Σ_k (−1)^k (2k−1)!!/(2x²)^k.
	// For x ≥ 25 the terms after k = 8 are below 1e-20.
	inv := 1 / (2 * x * x)
	term, sum := 1.0, 0.0
	for k := 1; k <= 8; k++ {
		term *= -float64(2*k-1) * inv
		sum += term
	}
	return -x*x - math.Log(x) - 0.5*math.Log(math.Pi) + math.Log1p(sum)
}
