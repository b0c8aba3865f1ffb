package privacy

import (
	"math"
	"testing"
)

// moments returns the sample mean and standard deviation of v.
func moments(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)-1))
}

// TestNormalDistribution checks 400k draws. The bounds are about 6 or more
// standard errors wide, so a correct sampler fails with probability below
// 1e-8, while a wrong spread, shift or shape fails.
func TestNormalDistribution(t *testing.T) {
	const n = 400_000
	g := NewGaussian()
	v := make([]float64, n)
	for i := range v {
		v[i] = g.Normal()
	}
	mean, std := moments(v)
	// Standard errors: mean 0.0016, std 0.0011.
	if math.Abs(mean) > 0.01 {
		t.Errorf("mean = %v, want 0 ± 0.01", mean)
	}
	if math.Abs(std-1) > 0.01 {
		t.Errorf("std = %v, want 1 ± 1%%", std)
	}
	// Shape: the mass within 1 and 2 standard deviations (standard errors
	// 0.0007 and 0.0003), and the kurtosis (standard error 0.004).
	var in1, in2 int
	var m4 float64
	for _, x := range v {
		if math.Abs(x) < 1 {
			in1++
		}
		if math.Abs(x) < 2 {
			in2++
		}
		m4 += x * x * x * x
	}
	if p := float64(in1) / n; math.Abs(p-0.682689) > 0.005 {
		t.Errorf("P(|x| < 1) = %v, want 0.6827 ± 0.005", p)
	}
	if p := float64(in2) / n; math.Abs(p-0.954500) > 0.002 {
		t.Errorf("P(|x| < 2) = %v, want 0.9545 ± 0.002", p)
	}
	if k := m4 / n; math.Abs(k-3) > 0.06 {
		t.Errorf("E[x⁴] = %v, want 3 ± 0.06", k)
	}
	// Consecutive draws, including the two of each polar pair, are
	// uncorrelated (standard error 0.0016).
	var c float64
	for i := 1; i < n; i++ {
		c += v[i] * v[i-1]
	}
	if c /= n - 1; math.Abs(c) > 0.01 {
		t.Errorf("lag-1 correlation = %v, want 0 ± 0.01", c)
	}
}

// TestAdd checks that Add adds noise of the requested standard deviation.
func TestAdd(t *testing.T) {
	const n, base, std = 200_000, 5.0, 3.5
	v := make([]float64, n)
	for i := range v {
		v[i] = base
	}
	var g Gaussian // the zero value works
	g.Add(v, std)
	for i := range v {
		v[i] -= base
	}
	mean, got := moments(v)
	if math.Abs(mean) > 6*std/math.Sqrt(n) {
		t.Errorf("mean of added noise = %v, want 0 ± %v", mean, 6*std/math.Sqrt(n))
	}
	if math.Abs(got-std) > 0.01*std {
		t.Errorf("std of added noise = %v, want %v ± 1%%", got, std)
	}

	w := []float64{1, 2, 3}
	g.Add(w, 0)
	if w[0] != 1 || w[1] != 2 || w[2] != 3 {
		t.Errorf("Add with std 0 changed the vector: %v", w)
	}
	for _, bad := range []float64{-1, math.NaN(), math.Inf(1)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Add(std = %v) did not panic", bad)
				}
			}()
			g.Add(w, bad)
		}()
	}
}

// TestGaussiansDiffer checks that two sources give different streams, as
// they must if both read crypto/rand.
func TestGaussiansDiffer(t *testing.T) {
	a, b := NewGaussian(), NewGaussian()
	same := 0
	for range 64 {
		if a.Normal() == b.Normal() {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d of 64 draws equal across two Gaussians", same)
	}
}

// TestUniform checks the uniform variates behind the transform: within
// [-1, 1), with 53-bit resolution, and spread over the whole range.
func TestUniform(t *testing.T) {
	var g Gaussian
	lo, hi := 1.0, -1.0
	frac := false
	for range 100_000 {
		u := g.uniform()
		if !(u >= -1 && u < 1) {
			t.Fatalf("uniform() = %v, want in [-1, 1)", u)
		}
		lo, hi = min(lo, u), max(hi, u)
		// A multiple of 2^-52 with a low bit set shows the fine bits are used.
		if m := math.Mod(u*0x1p52, 2); m != 0 {
			frac = true
		}
	}
	if lo > -0.999 || hi < 0.999 {
		t.Errorf("uniform() range [%v, %v], want about [-1, 1)", lo, hi)
	}
	if !frac {
		t.Error("uniform() never used its lowest bit")
	}
}
