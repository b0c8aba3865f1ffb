package privacy

import (
	"math"
	"strings"
	"testing"
)

// TestAccountantOpacus replays Opacus's test_rdp_accountant
// (pytorch/opacus, opacus/tests/accountants_test.py at commit
// 4d0ebc84613d214fbfd37fbfd1390e3747a625ce): int(90 / 0.04) = 2250 steps
// with noise multiplier 1.5 and sample rate 0.04, DEFAULT_ALPHAS, delta
// 1e-5 → epsilon 7.32911117143 (assertAlmostEqual, places=7).
func TestAccountantOpacus(t *testing.T) {
	var a Accountant
	for range 2250 {
		if err := a.Step(0.04, 1.5, 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := a.Entries(); len(got) != 1 || got[0] != (Entry{Q: 0.04, Sigma: 1.5, Steps: 2250}) {
		t.Errorf("Entries() = %v, want one entry of 2250 steps", got)
	}
	eps, err := a.Epsilon(1e-5)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(eps-7.32911117143) > 5e-8 {
		t.Errorf("epsilon = %.12g, want 7.32911117143", eps)
	}
}

// TestComposeHeterogeneous checks heterogeneous composition against
// published figures.
func TestComposeHeterogeneous(t *testing.T) {
	// The example in the docstring of pytorch/opacus
	// opacus/accountants/analysis/rdp.py (commit 4d0ebc8): parameters
	// [(1e-5, 1.0, 10), (1e-4, 3.0, 4)], orders range(2, 33), delta 1e-5
	// → (0.336, 23), a doctest to 3 decimals.
	orders := intOrders(2, 32)
	rdp, err := ComposeRDP([]Entry{{Q: 1e-5, Sigma: 1.0, Steps: 10}, {Q: 1e-4, Sigma: 3.0, Steps: 4}}, orders)
	if err != nil {
		t.Fatal(err)
	}
	eps, order, _ := Epsilon(orders, rdp, 1e-5)
	if math.Abs(eps-0.336) > 5e-4 || order != 23 {
		t.Errorf("Opacus example: eps, order = %.6g, %v; want 0.336, 23", eps, order)
	}

	// TF Privacy's
	// test_compute_heterogeneous_rdp_different_sampling_probabilities
	// (tensorflow/privacy, rdp_accountant_test.py at 385fefc): q [0, 1],
	// noise [10, 10], steps [1, 1], order 20 → RDP 0.1 exactly.
	rdp, err = ComposeRDP([]Entry{{Q: 0, Sigma: 10, Steps: 1}, {Q: 1, Sigma: 10, Steps: 1}}, []float64{20})
	if err != nil {
		t.Fatal(err)
	}
	if rdp[0] != 0.1 {
		t.Errorf("heterogeneous RDP = %v, want 0.1", rdp[0])
	}
}

// TestEpsilonForCanonical checks that EpsilonFor depends only on the
// multiset of steps, bit for bit, and agrees with the Accountant.
func TestEpsilonForCanonical(t *testing.T) {
	var a Accountant
	steps := []Entry{
		{Q: 0.01, Sigma: 1.1, Steps: 300},
		{Q: 0.02, Sigma: 0.9, Steps: 50},
		{Q: 0.01, Sigma: 1.1, Steps: 200},
		{Q: 0.005, Sigma: 2, Steps: 1000},
		{Q: 0.02, Sigma: 0.9, Steps: 0},
	}
	for _, e := range steps {
		if err := a.Step(e.Q, e.Sigma, e.Steps); err != nil {
			t.Fatal(err)
		}
	}
	want, err := a.Epsilon(1e-6)
	if err != nil {
		t.Fatal(err)
	}
	for _, entries := range [][]Entry{
		steps,
		{{Q: 0.005, Sigma: 2, Steps: 1000}, {Q: 0.02, Sigma: 0.9, Steps: 50}, {Q: 0.01, Sigma: 1.1, Steps: 500}},
		{{Q: 0.02, Sigma: 0.9, Steps: 25}, {Q: 0.01, Sigma: 1.1, Steps: 1}, {Q: 0.005, Sigma: 2, Steps: 1000},
			{Q: 0.01, Sigma: 1.1, Steps: 499}, {Q: 0.02, Sigma: 0.9, Steps: 25}},
	} {
		got, err := EpsilonFor(entries, 1e-6)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("EpsilonFor(%v) = %.17g, want %.17g", entries, got, want)
		}
	}
	if eps, err := EpsilonFor(nil, 1e-6); eps != 0 || err != nil {
		t.Errorf("EpsilonFor(nil) = %v, %v; want 0, nil", eps, err)
	}
	var empty Accountant
	if eps, err := empty.Epsilon(1e-6); eps != 0 || err != nil {
		t.Errorf("empty accountant: epsilon = %v, %v; want 0, nil", eps, err)
	}
}

// TestEpsilonMonotone checks that ε falls as the noise grows and rises with
// the number of steps and the sampling rate.
func TestEpsilonMonotone(t *testing.T) {
	eps := func(q, sigma float64, steps int) float64 {
		t.Helper()
		e, err := EpsilonFor([]Entry{{Q: q, Sigma: sigma, Steps: steps}}, 1e-5)
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	prev := math.Inf(1)
	for _, sigma := range []float64{0.5, 0.7, 1, 1.5, 2, 4, 8} {
		e := eps(0.01, sigma, 1000)
		if !(e < prev) {
			t.Errorf("sigma %v: eps %v, not below %v", sigma, e, prev)
		}
		prev = e
	}
	prev = 0
	for _, steps := range []int{1, 10, 100, 1000, 10000} {
		e := eps(0.01, 1, steps)
		if !(e > prev) {
			t.Errorf("%d steps: eps %v, not above %v", steps, e, prev)
		}
		prev = e
	}
	prev = 0
	for _, q := range []float64{0.001, 0.01, 0.1, 0.5, 1} {
		e := eps(q, 1, 100)
		if !(e > prev) {
			t.Errorf("q %v: eps %v, not above %v", q, e, prev)
		}
		prev = e
	}
	if e := eps(0.01, 0, 1); !math.IsInf(e, 1) {
		t.Errorf("sigma 0: eps %v, want +Inf", e)
	}
	if e := eps(0, 1, 1000); e != 0 {
		t.Errorf("q 0: eps %v, want 0", e)
	}
}

func TestAccountantErrors(t *testing.T) {
	var a Accountant
	if err := a.Step(0.01, 1, 10); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q, sigma float64
		steps    int
		want     string
	}{
		{2, 1, 1, "privacy: sampling rate q = 2, want in [0, 1]"},
		{0.1, -1, 1, "privacy: noise multiplier = -1, want finite and >= 0"},
		{0.1, 1, -1, "privacy: steps = -1, want >= 0"},
	} {
		if err := a.Step(tc.q, tc.sigma, tc.steps); err == nil || err.Error() != tc.want {
			t.Errorf("Step(%v, %v, %v) error = %v, want %q", tc.q, tc.sigma, tc.steps, err, tc.want)
		}
	}
	if err := a.Step(0.01, 1, math.MaxInt); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Errorf("overflowing Step: error = %v, want overflow", err)
	}
	if got := a.Entries(); len(got) != 1 || got[0].Steps != 10 {
		t.Errorf("after failed steps, Entries() = %v, want the first step only", got)
	}
	if _, err := a.Epsilon(0); err == nil || err.Error() != "privacy: delta = 0, want in (0, 1)" {
		t.Errorf("Epsilon(0) error = %v", err)
	}

	bad := []Entry{{Q: 0.1, Sigma: 1, Steps: 1}, {Q: 0.1, Sigma: math.NaN(), Steps: 1}}
	want := "privacy: entries[1]: noise multiplier = NaN, want finite and >= 0"
	if _, err := EpsilonFor(bad, 1e-5); err == nil || err.Error() != want {
		t.Errorf("EpsilonFor(%v) error = %v, want %q", bad, err, want)
	}
	overflow := []Entry{{Q: 0.1, Sigma: 1, Steps: math.MaxInt}, {Q: 0.1, Sigma: 1, Steps: 1}}
	if _, err := EpsilonFor(overflow, 1e-5); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Errorf("EpsilonFor(%v) error = %v, want overflow", overflow, err)
	}
}
