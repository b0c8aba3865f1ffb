package privacy

import (
	"math"
	"strings"
	"testing"
)

// TestNoiseMultiplierRoundTrip checks that the calibrated σ meets the
// target and that σ less 1e-4 relative no longer does.
func TestNoiseMultiplierRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		eps, delta, q float64
		steps         int
	}{
		{1, 1e-5, 0.01, 1000},
		{8, 1e-5, 0.04, 2250},
		{3, 1e-6, 0.1, 50},
		{0.5, 1e-5, 1, 1},
		{50, 1e-5, 0.5, 10},
	} {
		sigma, err := NoiseMultiplier(tc.eps, tc.delta, tc.q, tc.steps)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		at := func(s float64) float64 {
			e, err := EpsilonFor([]Entry{{Q: tc.q, Sigma: s, Steps: tc.steps}}, tc.delta)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}
		if e := at(sigma); !(e <= tc.eps) || e < 0.99*tc.eps {
			t.Errorf("%+v: sigma %v gives eps %v, want in [0.99·target, target]", tc, sigma, e)
		}
		if e := at(sigma * (1 - 1e-4)); !(e > tc.eps) {
			t.Errorf("%+v: sigma %v is not minimal: %v gives eps %v", tc, sigma, sigma*(1-1e-4), e)
		}
	}
}

// TestNoiseMultiplierOpacus compares with Opacus's
// test_get_noise_multiplier_rdp_epochs and _steps (pytorch/opacus,
// opacus/tests/accountants_test.py at commit 4d0ebc8): target ε 8, δ 1e-5,
// sample rate 0.04, over 90 epochs (2250 steps) → 1.416, and over 2000
// steps → 1.3562 (places=4). Opacus bisects until ε is within 0.01 below
// the target, so its σ meets the target and ours, the smallest that does,
// is no larger and close to it.
func TestNoiseMultiplierOpacus(t *testing.T) {
	for _, tc := range []struct {
		steps  int
		opacus float64
	}{{2250, 1.416}, {2000, 1.3562}} {
		e, err := EpsilonFor([]Entry{{Q: 0.04, Sigma: tc.opacus, Steps: tc.steps}}, 1e-5)
		if err != nil {
			t.Fatal(err)
		}
		if !(e <= 8 && e >= 7.99) {
			t.Errorf("%d steps: Opacus's sigma %v gives eps %v, want in [7.99, 8]", tc.steps, tc.opacus, e)
		}
		sigma, err := NoiseMultiplier(8, 1e-5, 0.04, tc.steps)
		if err != nil {
			t.Fatal(err)
		}
		if !(sigma <= tc.opacus+5e-5 && sigma >= 0.999*tc.opacus) {
			t.Errorf("%d steps: sigma = %v, want just below Opacus's %v", tc.steps, sigma, tc.opacus)
		}
	}
}

func TestNoiseMultiplierErrors(t *testing.T) {
	for _, tc := range []struct {
		eps, delta, q float64
		steps         int
		want          string
	}{
		{0, 1e-5, 0.01, 10, "privacy: target epsilon = 0, want finite and > 0"},
		{math.Inf(1), 1e-5, 0.01, 10, "privacy: target epsilon = +Inf, want finite and > 0"},
		{1, 0, 0.01, 10, "privacy: delta = 0, want in (0, 1)"},
		{1, 1e-5, 0, 10, "privacy: sampling rate q = 0, want in (0, 1]"},
		{1, 1e-5, 1.1, 10, "privacy: sampling rate q = 1.1, want in (0, 1]"},
		{1, 1e-5, 0.01, 0, "privacy: steps = 0, want >= 1"},
		// With DefaultOrders, even infinite noise leaves ε ≈ 0.1 at δ = 1e-5.
		{0.05, 1e-5, 0.01, 10, "privacy: target epsilon = 0.05 unreachable at delta = 1e-05: even infinite noise gives epsilon 0.1"},
	} {
		_, err := NoiseMultiplier(tc.eps, tc.delta, tc.q, tc.steps)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("NoiseMultiplier(%v, %v, %v, %v) error = %v, want %q", tc.eps, tc.delta, tc.q, tc.steps, err, tc.want)
		}
	}

	// Just above the floor, the σ needed exceeds the search range.
	floor, _, err := Epsilon(DefaultOrders, make([]float64, len(DefaultOrders)), 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	target := floor * (1 + 1e-13)
	_, err = NoiseMultiplier(target, 1e-5, 1, 1)
	if err == nil || !strings.Contains(err.Error(), "with noise multiplier <= 1e+06") {
		t.Errorf("NoiseMultiplier(%v, ...) error = %v, want out of range", target, err)
	}
}
