package aggregation

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

// robustClose reports whether got and want have the same length and agree
// to within 1e-12 in every coordinate.
func robustClose(got, want []float64) bool {
	if len(got) != len(want) {
		return false
	}
	for j := range got {
		if math.Abs(got[j]-want[j]) > 1e-12 {
			return false
		}
	}
	return true
}

func cloneUpdates(u [][]float64) [][]float64 {
	out := make([][]float64, len(u))
	for i := range u {
		out[i] = slices.Clone(u[i])
	}
	return out
}

func unmodified(t *testing.T, name string, got, want [][]float64) {
	t.Helper()
	if !slices.EqualFunc(got, want, slices.Equal[[]float64]) {
		t.Fatalf("%s modified its input: %v, was %v", name, got, want)
	}
}

func distance(a, b []float64) float64 {
	s := 0.0
	for j := range a {
		s += (a[j] - b[j]) * (a[j] - b[j])
	}
	return math.Sqrt(s)
}

func TestCoordinateMedian(t *testing.T) {
	for _, c := range []struct {
		name    string
		updates [][]float64
		want    []float64
	}{
		// Columns {1,3,2} → 2 and {10,−2,5} → 5.
		{"odd", [][]float64{{1, 10}, {3, -2}, {2, 5}}, []float64{2, 5}},
		// Sorted columns {1,2,4,10} → (2+4)/2 = 3 and {−1,0,3,4} → (0+3)/2 = 1.5.
		{"even", [][]float64{{1, 4}, {4, -1}, {2, 0}, {10, 3}}, []float64{3, 1.5}},
		{"single", [][]float64{{7, -7}}, []float64{7, -7}},
	} {
		in := cloneUpdates(c.updates)
		got, err := CoordinateMedian(in)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !robustClose(got, c.want) {
			t.Errorf("%s: median %v, want %v", c.name, got, c.want)
		}
		unmodified(t, "CoordinateMedian", in, c.updates)
	}
}

func TestTrimmedMean(t *testing.T) {
	// The outlier is largest in coordinate 0 and smallest in coordinate 1,
	// so each tail's trimming is exercised.
	updates := [][]float64{{1, 2}, {2, 3}, {1e9, -1e9}, {3, 4}, {4, 5}}
	in := cloneUpdates(updates)
	got, err := TrimmedMean(in, 1)
	if err != nil {
		t.Fatal(err)
	}
	// Coordinate 0: {1,2,3,4,1e9} minus 1 and 1e9 → (2+3+4)/3 = 3.
	// Coordinate 1: {−1e9,2,3,4,5} minus −1e9 and 5 → (2+3+4)/3 = 3.
	if want := []float64{3, 3}; !robustClose(got, want) {
		t.Fatalf("trimmed mean %v, want %v", got, want)
	}
	unmodified(t, "TrimmedMean", in, updates)

	// The outlier has no effect: any other value beyond the honest range
	// gives the same bits.
	tame := cloneUpdates(updates)
	tame[2] = []float64{5, 1}
	if again, _ := TrimmedMean(tame, 1); !slices.Equal(again, got) {
		t.Fatalf("outlier 1e9 gave %v, outlier 5 gave %v", got, again)
	}
	// Untrimmed, the outlier dominates: (1e9+10)/5.
	plain, err := TrimmedMean(updates, 0)
	if err != nil || !robustClose(plain, []float64{(1e9 + 10) / 5, (-1e9 + 14) / 5}) {
		t.Fatalf("trim 0 (plain mean): %v %v", plain, err)
	}

	for _, c := range []struct{ n, trim int }{{5, -1}, {5, 3}, {4, 2}, {1, 1}} {
		_, err := TrimmedMean(updates[:c.n], c.trim)
		if !errors.Is(err, ErrConfig) {
			t.Errorf("trim %d of %d updates: %v, want ErrConfig", c.trim, c.n, err)
		}
	}
	if _, err := TrimmedMean(updates[:3], 1); err != nil {
		t.Errorf("trim 1 of 3 updates (2·1 < 3): %v", err)
	}
}

// krumUpdates: four clustered honest updates and one far attacker at
// index 2. With n = 5, f = 1 each score sums the n−f−2 = 2 smallest squared
// distances to the others:
//
//	      u0    u1    u2     u3    u4
//	u0     –     5  19801     1     1   → score 1+1 = 2
//	u1     5     –  19604     4     2   → score 2+4 = 6
//	u2 19801 19604     –  20000 19602   → score 19602+19604 = 39206
//	u3     1     4  20000     –     2   → score 1+2 = 3
//	u4     1     2  19602     2     –   → score 1+2 = 3
//
// Krum picks u0; Multi-Krum with m = 3 picks u0, then u3 and u4 (tied at 3,
// lower index first).
var krumUpdates = [][]float64{{1, 0}, {0, 2}, {100, 100}, {0, 0}, {1, 1}}

func TestKrum(t *testing.T) {
	in := cloneUpdates(krumUpdates)
	agg, sel, err := MultiKrum(in, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sel, []int{0}) || !slices.Equal(agg, krumUpdates[0]) {
		t.Fatalf("Krum selected %v with %v, want [0] with %v", sel, agg, krumUpdates[0])
	}
	unmodified(t, "MultiKrum", in, krumUpdates)
	agg[0] = 42 // the result is a copy, not update 0 itself
	unmodified(t, "MultiKrum's result", in, krumUpdates)
}

func TestMultiKrum(t *testing.T) {
	agg, sel, err := MultiKrum(cloneUpdates(krumUpdates), 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Mean of (1,0), (0,0), (1,1).
	if want := []float64{2.0 / 3, 1.0 / 3}; !slices.Equal(sel, []int{0, 3, 4}) || !robustClose(agg, want) {
		t.Fatalf("Multi-Krum selected %v with %v, want [0 3 4] with %v", sel, agg, want)
	}
	// m = n averages everything, by increasing score.
	agg, sel, err = MultiKrum(krumUpdates, 1, 5)
	if err != nil || !slices.Equal(sel, []int{0, 3, 4, 1, 2}) || !robustClose(agg, []float64{102.0 / 5, 103.0 / 5}) {
		t.Fatalf("m = n: %v %v %v", sel, agg, err)
	}
	for _, c := range []struct{ n, f, m int }{
		{5, -1, 1}, // negative f
		{4, 1, 1},  // n = 2f+2
		{5, 2, 1},  // n < 2f+2
		{5, 1, 0},  // m too small
		{5, 1, 6},  // m > n
		{2, 0, 1},  // n = 2f+2 with f = 0
	} {
		if _, _, err := MultiKrum(krumUpdates[:c.n], c.f, c.m); !errors.Is(err, ErrConfig) {
			t.Errorf("n=%d f=%d m=%d: %v, want ErrConfig", c.n, c.f, c.m, err)
		}
	}
}

func TestFLTrust(t *testing.T) {
	root := []float64{3, 4} // ‖g0‖ = 5
	updates := [][]float64{
		{-3, -4}, // opposite the root: cos −1, trust 0
		{30, 40}, // aligned, ×10: cos 1, rescaled to (3,4)
		{4, 3},   // cos (12+12)/25 = 0.96, norm 5: rescaled to itself
		{0, 0},   // zero norm: trust 0
		{0, -8},  // cos −32/40 = −0.8: trust 0
	}
	in, rootIn := cloneUpdates(updates), slices.Clone(root)
	agg, trust, err := FLTrust(in, rootIn)
	if err != nil {
		t.Fatal(err)
	}
	if want := []float64{0, 1, 0.96, 0, 0}; !robustClose(trust, want) {
		t.Fatalf("trust %v, want %v", trust, want)
	}
	// (1·(3,4) + 0.96·(4,3)) / (1 + 0.96).
	want := []float64{(3 + 0.96*4) / 1.96, (4 + 0.96*3) / 1.96}
	if !robustClose(agg, want) {
		t.Fatalf("FLTrust %v, want %v", agg, want)
	}
	unmodified(t, "FLTrust", in, updates)
	unmodified(t, "FLTrust (root)", [][]float64{rootIn}, [][]float64{root})

	// Rescaled to ‖g0‖, a lone aligned ×10 update reproduces the root
	// (unrescaled it would give (30,40)).
	agg, trust, err = FLTrust([][]float64{{30, 40}}, root)
	if err != nil || !robustClose(agg, root) || !robustClose(trust, []float64{1}) {
		t.Fatalf("lone ×10 update: %v %v %v, want %v", agg, trust, err, root)
	}

	// No update points with the root (negative or orthogonal cosines): the
	// zero vector.
	agg, trust, err = FLTrust([][]float64{{-3, -4}, {4, -3}, {-1, 0}}, root)
	if err != nil || !slices.Equal(agg, []float64{0, 0}) || !slices.Equal(trust, []float64{0, 0, 0}) {
		t.Fatalf("all against the root: %v %v %v, want zero vector and zero trust", agg, trust, err)
	}
	// A zero root trusts nothing.
	agg, _, err = FLTrust([][]float64{{1, 2}}, []float64{0, 0})
	if err != nil || !slices.Equal(agg, []float64{0, 0}) {
		t.Fatalf("zero root: %v %v", agg, err)
	}
}

// TestRobustAgainstScaledAttacker: one hospital sends 10× the honest mean
// (a boosting attack). The plain mean moves by more than 4; every robust
// rule stays within 0.3 of the honest mean, which the honest updates
// themselves are within (they lie at distance √0.08 ≈ 0.283 or less from
// it). Run with 3 honest updates + 1 attacker (Krum with f = 0, the most
// that n = 4 allows) and with 4 + 1 (f = 1).
func TestRobustAgainstScaledAttacker(t *testing.T) {
	const bound = 0.3
	honestMean := []float64{1, 2}
	attacker := []float64{10, 20}
	root := []float64{0.95, 2.05} // the coordinator's update on its own clean data
	for _, c := range []struct {
		honest [][]float64
		f      int
	}{
		{[][]float64{{1.2, 1.8}, {0.8, 2.2}, {1, 2}}, 0},
		{[][]float64{{1.2, 1.8}, {0.8, 2.2}, {1.1, 2.1}, {0.9, 1.9}}, 1},
	} {
		updates := append(cloneUpdates(c.honest), attacker)
		n := len(updates)
		mean, err := TrimmedMean(updates, 0)
		if err != nil {
			t.Fatal(err)
		}
		if d := distance(mean, honestMean); d < 4 {
			t.Fatalf("n=%d: the plain mean moved only %v", n, d)
		}
		results := map[string][]float64{}
		results["median"], err = CoordinateMedian(updates)
		if err != nil {
			t.Fatal(err)
		}
		results["trimmed mean"], err = TrimmedMean(updates, 1)
		if err != nil {
			t.Fatal(err)
		}
		var sel []int
		results["Krum"], sel, err = MultiKrum(updates, c.f, 1)
		if err != nil {
			t.Fatal(err)
		}
		if sel[0] == n-1 {
			t.Errorf("n=%d: Krum selected the attacker", n)
		}
		results["Multi-Krum"], sel, err = MultiKrum(updates, c.f, n-1-c.f)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Contains(sel, n-1) {
			t.Errorf("n=%d: Multi-Krum selected the attacker: %v", n, sel)
		}
		results["FLTrust"], _, err = FLTrust(updates, root)
		if err != nil {
			t.Fatal(err)
		}
		for name, r := range results {
			d := distance(r, honestMean)
			t.Logf("n=%d: %s is %.4f from the honest mean (plain mean: %.4f)", n, name, d, distance(mean, honestMean))
			if d > bound {
				t.Errorf("n=%d: %s %v is %v from the honest mean, want <= %v", n, name, r, d, bound)
			}
		}
	}
}

// TestRobustBadInputs: every aggregator refuses malformed input with an
// error wrapping ErrUpdate that names the update and coordinate.
func TestRobustBadInputs(t *testing.T) {
	root := []float64{1, 1}
	aggregators := map[string]func([][]float64) error{
		"CoordinateMedian": func(u [][]float64) error { _, err := CoordinateMedian(u); return err },
		"TrimmedMean":      func(u [][]float64) error { _, err := TrimmedMean(u, 0); return err },
		"MultiKrum":        func(u [][]float64) error { _, _, err := MultiKrum(u, 0, 1); return err },
		"FLTrust":          func(u [][]float64) error { _, _, err := FLTrust(u, root); return err },
	}
	for _, c := range []struct {
		name    string
		updates [][]float64
		want    string
	}{
		{"none", nil, "no updates"},
		{"short", [][]float64{{1, 2}, {3, 4}, {5}}, "update 2 has 1 values, update 0 has 2"},
		{"NaN", [][]float64{{1, 2}, {3, math.NaN()}, {5, 6}}, "update 1, coordinate 1 is NaN"},
		{"+Inf", [][]float64{{math.Inf(1), 2}, {3, 4}, {5, 6}}, "update 0, coordinate 0 is +Inf"},
		{"-Inf", [][]float64{{1, 2}, {3, 4}, {5, math.Inf(-1)}}, "update 2, coordinate 1 is -Inf"},
	} {
		for name, agg := range aggregators {
			err := agg(c.updates)
			if !errors.Is(err, ErrUpdate) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s, %s: %v, want ErrUpdate saying %q", name, c.name, err, c.want)
			}
		}
	}
	good := [][]float64{{1, 2}, {3, 4}}
	for _, c := range []struct {
		root []float64
		want string
	}{
		{[]float64{1}, "root update has 1 values, the updates 2"},
		{[]float64{1, math.NaN()}, "root update, coordinate 1 is NaN"},
	} {
		if _, _, err := FLTrust(good, c.root); !errors.Is(err, ErrUpdate) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("FLTrust root %v: %v, want ErrUpdate saying %q", c.root, err, c.want)
		}
	}
}

// TestRobustDeterministic: the same input gives the same bits.
func TestRobustDeterministic(t *testing.T) {
	u := [][]float64{{0.1, 0.7, -0.3}, {0.2, 0.5, -0.1}, {0.3, 0.1, 0.9}, {-0.4, 0.2, 0.2}, {9, 9, 9}}
	root := []float64{0.1, 0.3, 0.1}
	m1, _ := CoordinateMedian(u)
	t1, _ := TrimmedMean(u, 1)
	k1, s1, _ := MultiKrum(u, 1, 2)
	f1, ts1, _ := FLTrust(u, root)
	for range 3 {
		m2, _ := CoordinateMedian(cloneUpdates(u))
		t2, _ := TrimmedMean(cloneUpdates(u), 1)
		k2, s2, _ := MultiKrum(cloneUpdates(u), 1, 2)
		f2, ts2, _ := FLTrust(cloneUpdates(u), slices.Clone(root))
		if !slices.Equal(m1, m2) || !slices.Equal(t1, t2) || !slices.Equal(k1, k2) || !slices.Equal(s1, s2) ||
			!slices.Equal(f1, f2) || !slices.Equal(ts1, ts2) {
			t.Fatal("robust aggregation is not deterministic")
		}
	}
}

func TestClipToNorm(t *testing.T) {
	u := []float64{3, 4} // norm 5
	in := slices.Clone(u)

	// Below and at the bound: an unchanged copy.
	for _, bound := range []float64{10, 5, math.Inf(1)} {
		got, norm := ClipToNorm(in, bound)
		if !slices.Equal(got, u) || norm != 5 {
			t.Fatalf("bound %v: %v norm %v, want %v norm 5", bound, got, norm, u)
		}
		got[0] = 42
		if in[0] != 3 {
			t.Fatal("ClipToNorm returned its input, not a copy")
		}
	}

	// Above: scaled to exactly the bound, same direction.
	got, norm := ClipToNorm(in, 1)
	if !robustClose(got, []float64{0.6, 0.8}) || norm != 5 {
		t.Fatalf("bound 1: %v norm %v, want [0.6 0.8] norm 5", got, norm)
	}
	if n := math.Hypot(got[0], got[1]); math.Abs(n-1) > 1e-15 {
		t.Fatalf("clipped norm %v, want 1", n)
	}
	if !slices.Equal(in, u) {
		t.Fatalf("ClipToNorm modified its input: %v", in)
	}

	// Huge entries: the norm (√2·1e308) does not overflow, the clipped copy
	// is right.
	big := []float64{1e308, -1e308}
	got, norm = ClipToNorm(big, 2)
	if !robustClose(got, []float64{math.Sqrt2, -math.Sqrt2}) || math.Abs(norm/1e308-math.Sqrt2) > 1e-15 {
		t.Fatalf("huge update: %v norm %v", got, norm)
	}

	// Fail closed: a non-positive or NaN bound, or a non-finite update,
	// clips to zero.
	for _, bound := range []float64{0, -1, math.NaN()} {
		if got, norm := ClipToNorm(in, bound); !slices.Equal(got, []float64{0, 0}) || norm != 5 {
			t.Errorf("bound %v: %v norm %v, want zero vector norm 5", bound, got, norm)
		}
	}
	if got, norm := ClipToNorm([]float64{1, math.NaN()}, 10); !slices.Equal(got, []float64{0, 0}) || !math.IsNaN(norm) {
		t.Errorf("NaN entry: %v norm %v", got, norm)
	}
	if got, norm := ClipToNorm([]float64{math.Inf(-1), 1}, 10); !slices.Equal(got, []float64{0, 0}) || !math.IsInf(norm, 1) {
		t.Errorf("-Inf entry: %v norm %v", got, norm)
	}
	if got, norm := ClipToNorm(nil, 1); len(got) != 0 || norm != 0 {
		t.Errorf("empty update: %v norm %v", got, norm)
	}
}
