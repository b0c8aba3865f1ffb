package privacy

import (
	"math"
	"testing"
)

// intOrders returns lo, lo+1, …, hi.
func intOrders(lo, hi int) []float64 {
	var o []float64
	for a := lo; a <= hi; a++ {
		o = append(o, float64(a))
	}
	return o
}

// tfCLIOrders are the orders of TF Privacy's compute_dp_sgd_privacy
// (tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_lib.py):
// [1.25, 1.5, 1.75, 2., 2.25, 2.5, 3., 3.5, 4., 4.5] + list(range(5, 64)) +
// [128, 256, 512].
func tfCLIOrders() []float64 {
	o := []float64{1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5}
	o = append(o, intOrders(5, 63)...)
	return append(o, 128, 256, 512)
}

// TestEpsilonPublished checks the Balle et al. conversion against TF
// Privacy's test_get_privacy_spent_check_target_delta, as rewritten for that
// conversion in tensorflow/privacy commit
// be8175bfaca97916417d6a251b00444577dbf197 ("Improved conversion from Renyi
// DP to approx DP"), file
// tensorflow_privacy/privacy/analysis/rdp_accountant_test.py.
func TestEpsilonPublished(t *testing.T) {
	// Constant RDP 1.1 at orders 2..32, delta 1e-5: the largest order
	// wins, eps = 1.32783806176 (assertAlmostEqual, places=7).
	orders := intOrders(2, 32)
	rdp := make([]float64, len(orders))
	for i := range rdp {
		rdp[i] = 1.1
	}
	eps, order, err := Epsilon(orders, rdp, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(eps-1.32783806176) > 5e-8 || order != 32 {
		t.Errorf("constant RDP: eps, order = %.12g, %v; want 1.32783806176, 32", eps, order)
	}

	// The Gaussian mechanism with sigma = 4.530877117, "chosen to obtain
	// exactly (1, 1e-6)-DP", over the orders 0.001*i for i in
	// range(1000, 100000): eps = 1 (places=7). TF gives order 1.0 an
	// infinite bound; RDP rejects it, so the grid starts at 1.001.
	orders = orders[:0]
	for i := 1001; i < 100000; i++ {
		orders = append(orders, 0.001*float64(i))
	}
	rdp, err = RDP(1, 4.530877117, 1, orders)
	if err != nil {
		t.Fatal(err)
	}
	if eps, _, _ = Epsilon(orders, rdp, 1e-6); math.Abs(eps-1) > 5e-8 {
		t.Errorf("Gaussian sigma 4.530877117: eps = %.12g, want 1", eps)
	}
}

// TestEpsilonClassicPublished checks Mironov's conversion against the
// figures TF Privacy's tests asserted before they moved to the tighter
// conversion: tensorflow/privacy commit
// e19c53a78c6b2820c5791a2a6c20f4356d6cc38f, file
// tensorflow_privacy/privacy/analysis/rdp_accountant_test.py.
func TestEpsilonClassicPublished(t *testing.T) {
	// test_get_privacy_spent_check_target_delta: compute_rdp(0.01, 4,
	// 10000, range(2, 33)), delta 1e-5 → eps 1.258575 (places=5), order
	// 20. (q = 0.01, sigma = 4 is Abadi et al.'s MNIST setting.)
	orders := intOrders(2, 32)
	rdp, err := RDP(0.01, 4, 10000, orders)
	if err != nil {
		t.Fatal(err)
	}
	eps, order, err := EpsilonClassic(orders, rdp, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(eps-1.258575) > 5e-6 || order != 20 {
		t.Errorf("q=0.01 sigma=4: eps, order = %.8g, %v; want 1.258575, 20", eps, order)
	}

	// test_check_composition: compute_rdp(1e-4, .4, 40000) +
	// compute_rdp(0.1, 2, 100) at the orders below, delta 1e-5 → eps
	// 8.509656 (places=5), order 2.5. Since be8175b the same test asserts
	// that the tighter conversion gives at most 8.509656.
	orders = []float64{1.25, 1.5, 1.75, 2., 2.5, 3., 4., 5., 6., 7., 8., 10., 12., 14., 16., 20., 24., 28., 32., 64., 256.}
	rdp, err = ComposeRDP([]Entry{{Q: 1e-4, Sigma: .4, Steps: 40000}, {Q: 0.1, Sigma: 2, Steps: 100}}, orders)
	if err != nil {
		t.Fatal(err)
	}
	eps, order, _ = EpsilonClassic(orders, rdp, 1e-5)
	if math.Abs(eps-8.509656) > 5e-6 || order != 2.5 {
		t.Errorf("composition: classic eps, order = %.8g, %v; want 8.509656, 2.5", eps, order)
	}
	if tight, _, _ := Epsilon(orders, rdp, 1e-5); !(tight <= 8.509656) {
		t.Errorf("composition: eps = %v, want <= 8.509656", tight)
	}
}

// TestComputeDPSGDPrivacy checks TF Privacy's test_compute_dp_sgd_privacy
// cases (tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py):
// q = batch/n, steps = ceil(epochs·n/batch) at tfCLIOrders. The classic
// figures are those of tensorflow/privacy commit
// 2007aac912faadbf0ae3af206f3fa100284b8e23; the tight ones of commit
// be8175bfaca97916417d6a251b00444577dbf197 (at commit
// 03035d5d4a271ac795dab80f5bc1cef82fc3d462, now computed by dp_accounting,
// Test1 and Test2 differ from these from the 13th significant digit on).
// The source asserts places=7 (|difference| < 5e-8).
func TestComputeDPSGDPrivacy(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		n, batch             int
		sigma, epochs, delta float64
		classic, tight       float64
		order                float64
	}{
		{"Test0", 60000, 150, 1.3, 15, 1e-5, 0.941870567, 0.7242234026109595, 19},
		{"Test1", 100000, 100, 1.0, 30, 1e-7, 1.70928734, 1.4154988495444845, 13},
		{"Test2", 100000000, 1024, 0.1, 10, 1e-7, 5907984.81339406, 5907982.31138195, 1.25},
	} {
		q := float64(tc.batch) / float64(tc.n)
		steps := int(math.Ceil(tc.epochs * float64(tc.n) / float64(tc.batch)))
		orders := tfCLIOrders()
		rdp, err := RDP(q, tc.sigma, steps, orders)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		// The classic figures are published to 9 significant digits.
		eps, order, _ := EpsilonClassic(orders, rdp, tc.delta)
		if !closeRel(eps, tc.classic, 1e-8) || order != tc.order {
			t.Errorf("%s: classic eps, order = %.12g, %v; want %.12g, %v", tc.name, eps, order, tc.classic, tc.order)
		}
		eps, order, _ = Epsilon(orders, rdp, tc.delta)
		if math.Abs(eps-tc.tight) > 5e-8 || order != tc.order {
			t.Errorf("%s: eps, order = %.16g, %v; want %.16g, %v", tc.name, eps, order, tc.tight, tc.order)
		}
	}
}

// TestTutorialFigures checks the ε that TF Privacy's MNIST tutorial
// reports (tensorflow/privacy tutorials/README.md at commit
// 0776ed124b4b5aa04d21db8b7cffcdf2b9e4312b, printed to 2 decimals, classic
// conversion at delta 1e-5, batch 256 of N = 60000).
func TestTutorialFigures(t *testing.T) {
	q := 256.0 / 60000
	// The command line: "compute_dp_sgd_privacy.py --N=60000
	// --batch_size=256 --noise_multiplier=1.1 --epochs=60 --delta=1e-5 ...
	// satisfies differential privacy with eps = 3.01", with the CLI's
	// orders and steps = ceil(60·60000/256).
	rdp, err := RDP(q, 1.1, 14063, tfCLIOrders())
	if err != nil {
		t.Fatal(err)
	}
	if eps, _, _ := EpsilonClassic(tfCLIOrders(), rdp, 1e-5); math.Abs(eps-3.01) > 0.005 {
		t.Errorf("CLI: eps = %.4g, want 3.01", eps)
	}
	// The training script's output ("For delta=1e-5, the current epsilon
	// is: 1.03 / 1.11 / 3.01" after epochs 1, 2, 60) and the README's
	// table (noise 1.3 for 15 epochs: 1.19; noise 0.7 for 45 epochs:
	// 7.10). The script uses DefaultOrders and 60000 // 256 = 234 steps
	// per epoch (mnist_dpsgd_tutorial.py at the same commit).
	for _, tc := range []struct {
		sigma  float64
		epochs int
		want   float64
	}{{1.1, 1, 1.03}, {1.1, 2, 1.11}, {1.1, 60, 3.01}, {1.3, 15, 1.19}, {0.7, 45, 7.10}} {
		rdp, err := RDP(q, tc.sigma, 234*tc.epochs, DefaultOrders)
		if err != nil {
			t.Fatal(err)
		}
		if eps, _, _ := EpsilonClassic(DefaultOrders, rdp, 1e-5); math.Abs(eps-tc.want) > 0.005 {
			t.Errorf("sigma %v, %d epochs: eps = %.4g, want %.2f", tc.sigma, tc.epochs, eps, tc.want)
		}
	}
}

// TestEpsilonAboveOptimal checks that the RDP bound for the plain Gaussian
// mechanism never beats the exact (ε, δ) curve of Balle and Wang (ICML
// 2018, Theorem 8), as TF Privacy's test_get_privacy_spent_gaussian does
// (tensorflow/privacy commit be8175b, rdp_accountant_test.py), and that it
// is not far above it.
func TestEpsilonAboveOptimal(t *testing.T) {
	var orders []float64
	for x := 11; x < 505; x++ {
		orders = append(orders, 0.1*float64(x))
	}
	rdp, err := RDP(1, 1, 1, orders)
	if err != nil {
		t.Fatal(err)
	}
	// Exact δ(ε) of the Gaussian mechanism with sensitivity 1, sigma 1.
	exact := func(eps float64) float64 {
		return math.Erfc((eps-.5)/math.Sqrt2)/2 - math.Exp(eps)*math.Erfc((eps+.5)/math.Sqrt2)/2
	}
	for _, delta := range []float64{0.1, 1e-2, 1e-3, 1e-5, 1e-8, 1e-12} {
		eps, _, err := Epsilon(orders, rdp, delta)
		if err != nil {
			t.Fatal(err)
		}
		if d := exact(eps); d > delta {
			t.Errorf("delta %v: eps = %v, but the exact delta there is %v", delta, eps, d)
		}
		// The exact ε is below the bound, but not by a factor 1.5: the
		// bound is 1.43 times it at delta 0.1 and 1.08 times at 1e-5.
		if d := exact(eps / 1.5); d <= delta {
			t.Errorf("delta %v: eps = %v is loose: eps/1.5 already has delta %v", delta, eps, d)
		}
		classic, _, _ := EpsilonClassic(orders, rdp, delta)
		if classic < eps {
			t.Errorf("delta %v: classic eps %v below tight eps %v", delta, classic, eps)
		}
	}
}

func TestEpsilonEdgeCases(t *testing.T) {
	inf := math.Inf(1)
	// Never negative: a large delta would make the bound negative.
	if eps, _, _ := Epsilon([]float64{2, 3}, []float64{0, 0}, 0.9); eps != 0 {
		t.Errorf("zero RDP at delta 0.9: eps = %v, want 0", eps)
	}
	// At order +Inf the bound is the RDP itself.
	eps, order, _ := Epsilon([]float64{2, inf}, []float64{10, 0.5}, 1e-5)
	if eps != 0.5 || order != inf {
		t.Errorf("order +Inf: eps, order = %v, %v; want 0.5, +Inf", eps, order)
	}
	// No privacy at all.
	eps, order, _ = Epsilon([]float64{2, 3}, []float64{inf, inf}, 1e-5)
	if eps != inf || order != 2 {
		t.Errorf("infinite RDP: eps, order = %v, %v; want +Inf, 2", eps, order)
	}
}

func TestEpsilonErrors(t *testing.T) {
	nan := math.NaN()
	for _, tc := range []struct {
		orders, rdp []float64
		delta       float64
		want        string
	}{
		{nil, nil, 1e-5, "privacy: no orders"},
		{[]float64{2, 3}, []float64{1}, 1e-5, "privacy: len(orders) = 2, len(rdp) = 1, want equal"},
		{[]float64{2}, []float64{1}, 0, "privacy: delta = 0, want in (0, 1)"},
		{[]float64{2}, []float64{1}, 1, "privacy: delta = 1, want in (0, 1)"},
		{[]float64{2}, []float64{1}, nan, "privacy: delta = NaN, want in (0, 1)"},
		{[]float64{1}, []float64{1}, 1e-5, "privacy: orders[0] = 1, want > 1"},
		{[]float64{2, 3}, []float64{1, -1}, 1e-5, "privacy: rdp[1] = -1, want >= 0"},
		{[]float64{2}, []float64{nan}, 1e-5, "privacy: rdp[0] = NaN, want >= 0"},
	} {
		for name, f := range map[string]func([]float64, []float64, float64) (float64, float64, error){
			"Epsilon": Epsilon, "EpsilonClassic": EpsilonClassic,
		} {
			if _, _, err := f(tc.orders, tc.rdp, tc.delta); err == nil || err.Error() != tc.want {
				t.Errorf("%s(%v, %v, %v) error = %v, want %q", name, tc.orders, tc.rdp, tc.delta, err, tc.want)
			}
		}
	}
}
