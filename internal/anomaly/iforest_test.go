package anomaly

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestAveragePathLength(t *testing.T) {
	// Hand-computed from c(n) = 2(ln(n−1) + 0.5772156649) − 2(n−1)/n:
	//   c(3)   = 2(0.6931471806 + 0.5772156649) − 4/3      = 1.2073924
	//   c(256) = 2(5.5412635452 + 0.5772156649) − 510/256  = 10.2447709
	// and the special cases c(0) = c(1) = 0, c(2) = 1.
	for _, tc := range []struct {
		n    int
		want float64
		tol  float64
	}{
		{-1, 0, 0}, {0, 0, 0}, {1, 0, 0}, {2, 1, 0},
		{3, 1.2073924, 1e-6},
		{256, 10.2448, 1e-3},
		{256, 10.2447709, 1e-6},
	} {
		if got := AveragePathLength(tc.n); math.Abs(got-tc.want) > tc.tol {
			t.Errorf("c(%d) = %.7f, want %.7f ± %g", tc.n, got, tc.want, tc.tol)
		}
	}
	// With exact harmonic numbers c(256) would be 10.2486899: the paper's
	// ln-approximation is what is implemented.
	if got := AveragePathLength(256); math.Abs(got-10.2486899) < 1e-3 {
		t.Errorf("c(256) = %v matches the exact-harmonic value, not the paper's approximation", got)
	}
	// c is increasing.
	for n := 2; n < 2000; n++ {
		if AveragePathLength(n+1) <= AveragePathLength(n) {
			t.Fatalf("c(%d) = %v <= c(%d) = %v", n+1, AveragePathLength(n+1), n, AveragePathLength(n))
		}
	}
}

// gaussianWithOutliers returns 500 standard-normal 2-D points followed by 5
// far outliers.
func gaussianWithOutliers(seed uint64) [][]float64 {
	rng := rand.New(rand.NewPCG(seed, 42))
	rows := make([][]float64, 0, 505)
	for i := 0; i < 500; i++ {
		rows = append(rows, []float64{rng.NormFloat64(), rng.NormFloat64()})
	}
	return append(rows, []float64{8, 8}, []float64{-9, 7}, []float64{10, 0}, []float64{0, -9}, []float64{7, -8})
}

func TestIsolationForestSeparatesOutliers(t *testing.T) {
	for seed := uint64(1); seed <= 3; seed++ {
		rows := gaussianWithOutliers(seed)
		f := &IsolationForest{Seed: int64(seed)}
		if err := f.Fit(rows); err != nil {
			t.Fatal(err)
		}
		if f.SampleSize() != 256 {
			t.Errorf("sample size %d, want 256", f.SampleSize())
		}
		scores := make([]float64, len(rows))
		for i, r := range rows {
			s, err := f.Score(r)
			if err != nil {
				t.Fatal(err)
			}
			if !(s > 0 && s < 1) {
				t.Fatalf("score of row %d = %v, not in (0,1)", i, s)
			}
			scores[i] = s
		}
		minOut := math.Inf(1)
		for _, s := range scores[500:] {
			minOut = min(minOut, s)
		}
		below, maxIn := 0, 0.0
		for _, s := range scores[:500] {
			if s < minOut {
				below++
			}
			maxIn = max(maxIn, s)
		}
		frac := float64(below) / 500
		t.Logf("seed %d: lowest outlier score %.3f, highest inlier %.3f; %.1f%% of inliers score below every outlier", seed, minOut, maxIn, 100*frac)
		if frac < 0.95 {
			t.Errorf("seed %d: only %.1f%% of inliers score below every outlier, want >= 95%%", seed, 100*frac)
		}
		// The paper's rule of thumb: anomalies score well above 0.5,
		// ordinary points around or below it.
		if minOut <= 0.6 {
			t.Errorf("seed %d: lowest outlier score %.3f, want > 0.6", seed, minOut)
		}
		if ok, s, err := f.IsAnomaly(rows[0]); ok || err != nil || s != scores[0] {
			t.Errorf("seed %d: IsAnomaly(inlier) = %v, %v, %v", seed, ok, s, err)
		}
	}
}

func TestIsolationForestDeterministic(t *testing.T) {
	rows := gaussianWithOutliers(7)
	fit := func(seed int64) []float64 {
		f := &IsolationForest{Trees: 50, Psi: 64, Seed: seed}
		if err := f.Fit(rows); err != nil {
			t.Fatal(err)
		}
		out := make([]float64, 0, 20)
		for _, r := range rows[490:] {
			s, err := f.Score(r)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	a, b, c := fit(11), fit(11), fit(12)
	differs := false
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, row %d: %v != %v", i, a[i], b[i])
		}
		differs = differs || a[i] != c[i]
	}
	if !differs {
		t.Errorf("seeds 11 and 12 gave identical scores")
	}
}

func TestIsolationForestKnownAnswers(t *testing.T) {
	// Identical rows cannot be split: every tree is one external node of
	// size ψ, so h = c(ψ) and s = 2^−1 = 0.5 for any row.
	same := [][]float64{{1, 2}, {1, 2}, {1, 2}, {1, 2}}
	f := &IsolationForest{}
	if err := f.Fit(same); err != nil {
		t.Fatal(err)
	}
	if f.SampleSize() != 4 {
		t.Errorf("ψ = %d, want 4 (capped at n)", f.SampleSize())
	}
	for _, r := range [][]float64{{1, 2}, {100, -100}} {
		if s, _ := f.Score(r); math.Abs(s-0.5) > 1e-12 {
			t.Errorf("score %v on constant training data = %v, want 0.5", r, s)
		}
	}
	// Two distinct rows: ψ = 2, height limit 1, each is isolated at depth 1,
	// h = 1 = c(2), s = 0.5.
	g := &IsolationForest{Seed: 3}
	if err := g.Fit([][]float64{{0, 0}, {1, 1}}); err != nil {
		t.Fatal(err)
	}
	if h, _ := g.PathLength([]float64{0, 0}); h != 1 {
		t.Errorf("path length %v, want 1", h)
	}
	if s, _ := g.Score([]float64{1, 1}); math.Abs(s-0.5) > 1e-12 {
		t.Errorf("score %v, want 0.5", s)
	}
}

func TestIsolationForestMissingValues(t *testing.T) {
	rows := gaussianWithOutliers(3)
	// Training NaNs are imputed too: blank a few cells.
	rows[0] = []float64{math.NaN(), rows[0][1]}
	rows[1] = []float64{rows[1][0], math.NaN()}
	f := &IsolationForest{Seed: 5}
	if err := f.Fit(rows); err != nil {
		t.Fatal(err)
	}
	med := f.Medians()
	col := make([]float64, 0, len(rows))
	for _, r := range rows[1:] { // column 0 without the NaN
		col = append(col, r[0])
	}
	if m := medianInPlace(col); med[0] != m {
		t.Errorf("imputation median of column 0 = %v, want %v", med[0], m)
	}
	for _, r := range [][]float64{{math.NaN(), 0.3}, {9, math.NaN()}, {math.NaN(), math.NaN()}} {
		imputed := []float64{r[0], r[1]}
		for j := range imputed {
			if math.IsNaN(imputed[j]) {
				imputed[j] = med[j]
			}
		}
		a, errA := f.Score(r)
		b, errB := f.Score(imputed)
		if errA != nil || errB != nil || a != b {
			t.Errorf("score %v = %v (%v), imputed %v = %v (%v): want equal", r, a, errA, imputed, b, errB)
		}
	}
	// A column missing everywhere is imputed as 0 and never split on.
	allMissing := [][]float64{{1, math.NaN()}, {2, math.NaN()}, {3, math.NaN()}}
	h := &IsolationForest{}
	if err := h.Fit(allMissing); err != nil {
		t.Fatal(err)
	}
	a, _ := h.Score([]float64{2, 1000})
	b, _ := h.Score([]float64{2, math.NaN()})
	if a != b {
		t.Errorf("all-missing training column influenced the score: %v vs %v", a, b)
	}
}

func TestIsolationForestErrors(t *testing.T) {
	ok := [][]float64{{1, 2}, {3, 4}, {5, 6}}
	for _, tc := range []struct {
		name string
		f    *IsolationForest
		rows [][]float64
		want string
	}{
		{"one row", &IsolationForest{}, ok[:1], "at least 2 training rows, got 1"},
		{"ragged", &IsolationForest{}, [][]float64{{1, 2}, {3, 4}, {5}}, "row 2 has 1 values, want 2"},
		{"no features", &IsolationForest{}, [][]float64{{}, {}}, "row 0 has no features"},
		{"infinite", &IsolationForest{}, [][]float64{{1, 2}, {3, math.Inf(-1)}}, "row 1 column 1 is -Inf"},
		{"psi 1", &IsolationForest{Psi: 1}, ok, "Psi 1"},
		{"negative trees", &IsolationForest{Trees: -3}, ok, "Trees -3"},
		{"bad threshold", &IsolationForest{Threshold: math.NaN()}, ok, "Threshold NaN"},
	} {
		err := tc.f.Fit(tc.rows)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	var f IsolationForest
	if _, err := f.Score([]float64{1, 2}); err == nil || !strings.Contains(err.Error(), "not fitted") {
		t.Errorf("score before fit: %v", err)
	}
	if err := f.Fit(ok); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Score([]float64{1}); err == nil || !strings.Contains(err.Error(), "1 values, want 2") {
		t.Errorf("short row: %v", err)
	}
	if _, err := f.Score([]float64{1, math.Inf(1)}); err == nil || !strings.Contains(err.Error(), "column 1 is +Inf") {
		t.Errorf("infinite row: %v", err)
	}
}
