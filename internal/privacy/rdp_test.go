package privacy

import (
	"math"
	"testing"
)

// closeRel reports whether got is within relative tolerance rel of want.
func closeRel(got, want, rel float64) bool {
	if math.IsInf(want, 0) {
		return got == want
	}
	return math.Abs(got-want) <= rel*math.Abs(want)
}

// TestRDPPublished checks RDP against the expected values of TensorFlow
// Privacy's tests in tensorflow/privacy,
// tensorflow_privacy/privacy/analysis/rdp_accountant_test.py, at commit
// 385fefc85e80dacd262cc63fb485a42062983622 unless noted.
func TestRDPPublished(t *testing.T) {
	inf := math.Inf(1)
	for _, tc := range []struct {
		name   string
		q      float64
		sigma  float64
		steps  int
		orders []float64
		want   []float64
		// abs or rel is the tolerance of the source's assertion; both
		// zero means exact equality.
		abs, rel float64
	}{
		// test_compute_rdp_no_data: compute_rdp(0, 10, 1, 20) == 0.
		{"no_data", 0, 10, 1, []float64{20}, []float64{0}, 0, 0},
		// test_compute_rdp_no_sampling: compute_rdp(1, 10, 1, 20) == 0.1.
		{"no_sampling", 1, 10, 1, []float64{20}, []float64{0.1}, 0, 0},
		// test_compute_rdp_scalar: compute_rdp(0.1, 2, 10, 5) ≈ 0.07737
		// (places=5).
		{"scalar", 0.1, 2, 10, []float64{5}, []float64{0.07737}, 5e-6, 0},
		// test_compute_rdp_sequence: compute_rdp(0.01, 2.5, 50, [1.5, 2.5,
		// 5, 50, 100, inf]) ≈ [6.5007e-04, 1.0854e-03, 2.1808e-03,
		// 2.3846e-02, 1.6742e+02, inf] (rtol=1e-4).
		{"sequence", 0.01, 2.5, 50,
			[]float64{1.5, 2.5, 5, 50, 100, inf},
			[]float64{6.5007e-04, 1.0854e-03, 2.1808e-03, 2.3846e-02, 1.6742e+02, inf},
			0, 1e-4},
		// The same test at commit 09270afed61a4e9ef6295217b53731f7515f0350
		// published [0.00065, 0.001085, 0.00218075, 0.023846, 167.416307,
		// inf] (delta=1e-5); the last three have enough digits for a
		// relative tolerance of 1e-5.
		{"sequence_09270af", 0.01, 2.5, 50,
			[]float64{1.5, 2.5, 5, 50, 100, inf},
			[]float64{0.00065, 0.001085, 0.00218075, 0.023846, 167.416307, inf},
			1e-5, 0},
		{"sequence_09270af_precise", 0.01, 2.5, 50,
			[]float64{5, 50, 100},
			[]float64{0.00218075, 0.023846, 167.416307},
			0, 1e-5},
	} {
		got, err := RDP(tc.q, tc.sigma, tc.steps, tc.orders)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		for i, want := range tc.want {
			ok := got[i] == want ||
				(tc.abs > 0 && math.Abs(got[i]-want) <= tc.abs) ||
				(tc.rel > 0 && closeRel(got[i], want, tc.rel))
			if !ok {
				t.Errorf("%s: RDP at order %v = %.10g, want %.10g", tc.name, tc.orders[i], got[i], want)
			}
		}
	}
}

// logAQuadrature computes log(A_α) = log ∫ μ0(z) (μ(z)/μ0(z))^α dz, with
// μ0 = N(0, σ²) and μ = (1−q)μ0 + q N(1, σ²), by the trapezoidal rule in log
// space. It is independent of the series in rdp.go: TF Privacy's test
// test_compute_log_a_equals_mp makes the same comparison with mpmath.
func logAQuadrature(q, sigma, alpha float64) float64 {
	h := sigma / 100
	lo, hi := -40*sigma-2, alpha+40*sigma+2
	n := int((hi-lo)/h) + 1
	logF := make([]float64, n)
	peak := math.Inf(-1)
	for k := range logF {
		z := lo + float64(k)*h
		logMu0 := -z*z/(2*sigma*sigma) - math.Log(sigma*math.Sqrt(2*math.Pi))
		logRatio := logAdd(math.Log1p(-q), math.Log(q)+(2*z-1)/(2*sigma*sigma))
		logF[k] = logMu0 + alpha*logRatio
		peak = max(peak, logF[k])
	}
	sum := 0.0
	for _, l := range logF {
		sum += math.Exp(l - peak)
	}
	return peak + math.Log(sum*h)
}

// TestLogAMatchesQuadrature compares log(A_α), integer and fractional, with
// numerical integration at the parameters of TF Privacy's
// test_compute_log_a_equals_mp (tensorflow/privacy,
// tensorflow_privacy/privacy/analysis/rdp_accountant_test.py at 385fefc),
// with that test's rtol=1e-4, and at a few more.
func TestLogAMatchesQuadrature(t *testing.T) {
	for _, p := range []struct{ q, sigma, alpha, rel float64 }{
		{1e-7, .1, 1.01, 1e-4},
		{1e-6, .1, 256, 1e-4},
		{1e-5, .1, 256.1, 1e-4},
		{1e-6, 1, 27, 1e-4},
		{1e-4, 1., 1.5, 1e-4},
		{1e-3, 1., 2, 1e-4},
		{.01, 10, 20, 1e-4},
		{.1, 100, 20.5, 1e-4},
		{.99, .1, 256, 1e-4},
		{.999, 100, 256.1, 1e-4},
		// Further cases, not from TF Privacy, where log A is not tiny and
		// the quadrature is accurate enough for a tighter tolerance.
		{.04, 1.5, 10.9, 1e-9},
		{.3, .7, 3.3, 1e-9},
		{.5, 2, 7.7, 1e-9},
		{.9, .5, 1.1, 1e-9},
		{.01, 1, 1.5, 1e-7},
	} {
		var got float64
		if p.alpha == math.Trunc(p.alpha) {
			got = logAInt(p.q, p.sigma, int(p.alpha))
		} else {
			var err error
			if got, err = logAFrac(p.q, p.sigma, p.alpha); err != nil {
				t.Fatal(err)
			}
		}
		want := logAQuadrature(p.q, p.sigma, p.alpha)
		if !closeRel(got, want, p.rel) {
			t.Errorf("log A(q=%v, sigma=%v, alpha=%v) = %.10g, quadrature %.10g", p.q, p.sigma, p.alpha, got, want)
		}
	}
}

func TestRDPSpecialCases(t *testing.T) {
	inf := math.Inf(1)
	orders := []float64{1.5, 2, 32, inf}
	for _, tc := range []struct {
		name     string
		q, sigma float64
		steps    int
		want     []float64
	}{
		{"q=0", 0, 1, 5, []float64{0, 0, 0, 0}},
		{"q=0 sigma=0", 0, 0, 5, []float64{0, 0, 0, 0}},
		{"sigma=0", 0.5, 0, 5, []float64{inf, inf, inf, inf}},
		{"q=1", 1, 2, 3, []float64{3 * 1.5 / 8, 3 * 2.0 / 8, 3 * 32.0 / 8, inf}},
		{"order=inf", 0.5, 2, 1, nil},
		{"steps=0", 0.5, 0, 0, []float64{0, 0, 0, 0}},
	} {
		got, err := RDP(tc.q, tc.sigma, tc.steps, orders)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.want == nil {
			if got[3] != inf {
				t.Errorf("%s: RDP at order +Inf = %v, want +Inf", tc.name, got[3])
			}
			continue
		}
		for i := range orders {
			if got[i] != tc.want[i] {
				t.Errorf("%s: RDP at order %v = %v, want %v", tc.name, orders[i], got[i], tc.want[i])
			}
		}
	}
}

// TestRDPLinearInSteps checks that composing steps multiplies RDP.
func TestRDPLinearInSteps(t *testing.T) {
	one, err := RDP(0.02, 1.1, 1, DefaultOrders)
	if err != nil {
		t.Fatal(err)
	}
	many, err := RDP(0.02, 1.1, 700, DefaultOrders)
	if err != nil {
		t.Fatal(err)
	}
	for i := range one {
		if !closeRel(many[i], 700*one[i], 1e-12) {
			t.Errorf("order %v: 700 steps = %v, want 700 × %v", DefaultOrders[i], many[i], one[i])
		}
	}
}

// TestRDPMonotone checks that per-step RDP grows with the order and the
// sampling rate and shrinks with the noise multiplier.
func TestRDPMonotone(t *testing.T) {
	base, err := RDP(0.05, 1.2, 1, DefaultOrders)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(base); i++ {
		if !(base[i] > base[i-1]) {
			t.Errorf("RDP at order %v = %v, not above %v at order %v", DefaultOrders[i], base[i], base[i-1], DefaultOrders[i-1])
		}
	}
	moreQ, _ := RDP(0.06, 1.2, 1, DefaultOrders)
	moreSigma, _ := RDP(0.05, 1.3, 1, DefaultOrders)
	for i := range base {
		if !(moreQ[i] > base[i]) {
			t.Errorf("order %v: q 0.06 gives %v, not above %v at q 0.05", DefaultOrders[i], moreQ[i], base[i])
		}
		if !(moreSigma[i] < base[i]) {
			t.Errorf("order %v: sigma 1.3 gives %v, not below %v at sigma 1.2", DefaultOrders[i], moreSigma[i], base[i])
		}
	}
}

func TestRDPErrors(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, tc := range []struct {
		q, sigma float64
		steps    int
		orders   []float64
		want     string
	}{
		{-0.1, 1, 1, []float64{2}, "privacy: sampling rate q = -0.1, want in [0, 1]"},
		{1.5, 1, 1, []float64{2}, "privacy: sampling rate q = 1.5, want in [0, 1]"},
		{nan, 1, 1, []float64{2}, "privacy: sampling rate q = NaN, want in [0, 1]"},
		{0.1, -1, 1, []float64{2}, "privacy: noise multiplier = -1, want finite and >= 0"},
		{0.1, inf, 1, []float64{2}, "privacy: noise multiplier = +Inf, want finite and >= 0"},
		{0.1, nan, 1, []float64{2}, "privacy: noise multiplier = NaN, want finite and >= 0"},
		{0.1, 1, -3, []float64{2}, "privacy: steps = -3, want >= 0"},
		{0.1, 1, 1, []float64{2, 1}, "privacy: orders[1] = 1, want > 1"},
		{0.1, 1, 1, []float64{0.5}, "privacy: orders[0] = 0.5, want > 1"},
		{0.1, 1, 1, []float64{nan}, "privacy: orders[0] = NaN, want > 1"},
		{0.1, 1, 1, []float64{2e6}, "privacy: orders[0] = 2e+06, want <= 1e+06 or +Inf"},
	} {
		_, err := RDP(tc.q, tc.sigma, tc.steps, tc.orders)
		if err == nil || err.Error() != tc.want {
			t.Errorf("RDP(%v, %v, %v, %v) error = %v, want %q", tc.q, tc.sigma, tc.steps, tc.orders, err, tc.want)
		}
	}
}

// TestDefaultOrders checks the list against Opacus's DEFAULT_ALPHAS
// (pytorch/opacus, opacus/accountants/rdp.py: [1 + x / 10.0 for x in
// range(1, 100)] + list(range(12, 64))) and that changing it changes
// nothing.
func TestDefaultOrders(t *testing.T) {
	if n := len(DefaultOrders); n != 99+52 {
		t.Fatalf("len(DefaultOrders) = %d, want 151", n)
	}
	for i, want := range map[int]float64{0: 1.1, 1: 1.2, 9: 2, 97: 10.8, 98: 10.9, 99: 12, 150: 63} {
		if DefaultOrders[i] != want {
			t.Errorf("DefaultOrders[%d] = %v, want %v", i, DefaultOrders[i], want)
		}
	}
	entries := []Entry{{Q: 0.01, Sigma: 1, Steps: 1000}}
	before, err := EpsilonFor(entries, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	saved := DefaultOrders
	t.Cleanup(func() { DefaultOrders = saved })
	DefaultOrders = []float64{2}
	if after, _ := EpsilonFor(entries, 1e-5); after != before {
		t.Errorf("after replacing DefaultOrders, EpsilonFor = %v, want %v", after, before)
	}
}

// TestLogErfc checks log erfc on both sides of the switch to the
// asymptotic series, where math.Erfc is still a normal float64.
func TestLogErfc(t *testing.T) {
	for _, x := range []float64{-30, -3, 0, 0.5, 3, 10, 24.99, 25, 25.5, 26} {
		want := math.Log(math.Erfc(x))
		if !closeRel(logErfc(x), want, 1e-13) {
			t.Errorf("logErfc(%v) = %.17g, want %.17g", x, logErfc(x), want)
		}
	}
	// Beyond underflow, compare with Laplace's continued fraction
	// erfc(x) = exp(−x²)/√π / (x + (1/2)/(x + (2/2)/(x + (3/2)/(x + …)))).
	for _, x := range []float64{25, 30, 100, 1e4} {
		cf := x
		for k := 200; k >= 1; k-- {
			cf = x + float64(k)/2/cf
		}
		want := -x*x - 0.5*math.Log(math.Pi) - math.Log(cf)
		if !closeRel(logErfc(x), want, 1e-14) {
			t.Errorf("logErfc(%v) = %.17g, want %.17g", x, logErfc(x), want)
		}
	}
}

// TestRDPContinuousInOrder checks that the fractional series agrees with
// the integer sum next to integer orders.
func TestRDPContinuousInOrder(t *testing.T) {
	for _, p := range []struct{ q, sigma float64 }{{0.01, 1}, {0.1, 0.8}, {0.5, 2}, {0.9, 5}} {
		for _, a := range []float64{2, 3, 10, 40} {
			got, err := RDP(p.q, p.sigma, 1, []float64{a - 1e-9, a, a + 1e-9})
			if err != nil {
				t.Fatal(err)
			}
			if !closeRel(got[0], got[1], 1e-6) || !closeRel(got[2], got[1], 1e-6) {
				t.Errorf("q %v, sigma %v: RDP near order %v = %v, want continuous", p.q, p.sigma, a, got)
			}
		}
	}
}

// TestRDPTiny checks that RDP stays nonnegative and finite where it is
// below rounding (a huge sigma or a tiny q), so that ε stays computable.
func TestRDPTiny(t *testing.T) {
	for _, q := range []float64{1e-7, 1e-4, 0.01, 0.3} {
		for _, sigma := range []float64{1e4, 1e5, 1e6} {
			rdp, err := RDP(q, sigma, 1000, DefaultOrders)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range rdp {
				if !(r >= 0 && r < 1e-3) {
					t.Errorf("q %v, sigma %v: RDP at order %v = %v, want tiny and >= 0", q, sigma, DefaultOrders[i], r)
				}
			}
			if _, err := EpsilonFor([]Entry{{Q: q, Sigma: sigma, Steps: 1000}}, 1e-5); err != nil {
				t.Errorf("q %v, sigma %v: %v", q, sigma, err)
			}
		}
	}
}
