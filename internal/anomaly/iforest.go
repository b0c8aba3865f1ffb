package anomaly

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// EulerGamma is the Euler–Mascheroni constant, as used by Liu et al. to
// approximate harmonic numbers: H(i) ≈ ln(i) + EulerGamma.
const EulerGamma = 0.5772156649

// Isolation-forest defaults, used when the corresponding field is zero.
const (
	// DefaultTrees is the number of isolation trees (the paper's t = 100;
	// path lengths converge well before that).
	DefaultTrees = 100
	// DefaultPsi is the sub-sample size per tree (the paper's ψ = 256),
	// capped at the number of training rows.
	DefaultPsi = 256
	// DefaultForestThreshold is the isolation score above which an
	// observation is anomalous. The paper reads scores "very close to 1" as
	// anomalies and scores well below 0.5 as normal. In the simulated
	// federation (detector_test.go, forest trained on the history window
	// plus the scored round) one honest site-round in 10 000 scored above
	// 0.70 (maximum 0.72, 99.9th percentile ≈ 0.66, similar for 5 to 50
	// sites), while a never-seen combination of in-range values scored
	// 0.73–0.78 and clear outliers in a 2-D Gaussian sample score 0.70–0.75.
	DefaultForestThreshold = 0.70
)

// AveragePathLength is c(n), the average path length of an unsuccessful
// search in a binary search tree of n points, which the isolation forest
// uses to normalise path lengths (Liu, Ting and Zhou 2008, eq. 1):
//
//	c(n) = 2H(n−1) − 2(n−1)/n,  H(i) ≈ ln(i) + EulerGamma,  for n > 2
//	c(2) = 1, and c(n) = 0 for n <= 1.
//
// The special case c(2) = 1 is the exact value (H(1) = 1); it is how the
// authors' 2012 TKDD version and scikit-learn state it. For n > 2 the
// ln-approximation of H is used as in the paper, so e.g. c(256) ≈ 10.2448
// (with exact harmonic numbers it would be ≈ 10.2487).
func AveragePathLength(n int) float64 {
	switch {
	case n <= 1:
		return 0
	case n == 2:
		return 1
	}
	m := float64(n - 1)
	return 2*(math.Log(m)+EulerGamma) - 2*m/float64(n)
}

// IsolationForest is the isolation forest of Liu, Ting and Zhou (ICDM
// 2008). Fit builds Trees random isolation trees, each on a sub-sample of
// Psi training rows drawn without replacement and grown to the height limit
// ceil(log2 Psi); Score returns s = 2^(−E[h(x)]/c(Psi)), where h(x) is the
// path length of x in a tree (plus c(size) at an external node that still
// holds size > 1 training rows). Scores lie in (0,1): near 1 means easily
// isolated (anomalous), around 0.5 or below means ordinary.
//
// Each split picks a feature uniformly among those that are not constant
// in the node (a constant feature cannot separate anything), then a split
// point uniformly between that feature's minimum and maximum in the node.
//
// Missing values (NaN) are imputed with the feature's training median, in
// Fit and in Score. A feature that is missing in every training row is
// imputed as 0 and so never used for a split.
//
// Randomness comes only from a PCG generator seeded with Seed: the same
// Seed and training rows give the same forest and scores on every platform.
//
// An IsolationForest must not be fitted and scored concurrently; scoring a
// fitted forest from several goroutines is safe.
type IsolationForest struct {
	// Trees is the number of trees; 0 selects DefaultTrees.
	Trees int
	// Psi is the sub-sample size per tree; 0 selects DefaultPsi. It is
	// capped at the number of training rows and must be at least 2.
	Psi int
	// Seed seeds the random generator.
	Seed int64
	// Threshold is the score above which IsAnomaly reports an anomaly; 0
	// selects DefaultForestThreshold.
	Threshold float64

	nFeatures int
	psi       int
	norm      float64 // c(psi)
	medians   []float64
	trees     [][]iNode
}

// iNode is a node of an isolation tree. feature < 0 marks an external node.
type iNode struct {
	split       float64
	feature     int32
	left, right int32
	size        int32
}

// Fit builds the forest from training rows (one row per observation, one
// column per feature). It needs at least two rows, all of the same non-zero
// length and free of ±Inf.
func (f *IsolationForest) Fit(rows [][]float64) error {
	if f.Trees < 0 {
		return fmt.Errorf("anomaly: isolation forest Trees %d is negative", f.Trees)
	}
	if f.Psi < 0 || f.Psi == 1 {
		return fmt.Errorf("anomaly: isolation forest Psi %d must be at least 2 (0 selects %d)", f.Psi, DefaultPsi)
	}
	if t := f.Threshold; t < 0 || math.IsNaN(t) || math.IsInf(t, 0) {
		return fmt.Errorf("anomaly: isolation forest Threshold %v must be finite and >= 0 (0 selects %v)", t, DefaultForestThreshold)
	}
	if len(rows) < 2 {
		return fmt.Errorf("anomaly: isolation forest needs at least 2 training rows, got %d", len(rows))
	}
	d := len(rows[0])
	if d == 0 {
		return fmt.Errorf("anomaly: isolation forest training row 0 has no features")
	}
	for i, r := range rows {
		if len(r) != d {
			return fmt.Errorf("anomaly: isolation forest training row %d has %d values, want %d like row 0", i, len(r), d)
		}
		for j, v := range r {
			if math.IsInf(v, 0) {
				return fmt.Errorf("anomaly: isolation forest training row %d column %d is %v; only finite values, or NaN for missing, are allowed", i, j, v)
			}
		}
	}
	n := len(rows)

	// Per-feature medians of the non-missing training values.
	medians := make([]float64, d)
	col := make([]float64, 0, n)
	for j := 0; j < d; j++ {
		col = col[:0]
		for _, r := range rows {
			if !math.IsNaN(r[j]) {
				col = append(col, r[j])
			}
		}
		if len(col) > 0 {
			medians[j] = medianInPlace(col)
		}
	}
	// Imputed copy, column-major (a node scans one feature at a time).
	x := make([]float64, n*d)
	for i, r := range rows {
		for j, v := range r {
			if math.IsNaN(v) {
				v = medians[j]
			}
			x[j*n+i] = v
		}
	}

	trees := f.Trees
	if trees == 0 {
		trees = DefaultTrees
	}
	psi := f.Psi
	if psi == 0 {
		psi = DefaultPsi
	}
	psi = min(psi, n)

	b := &treeBuilder{
		x:     x,
		n:     n,
		d:     d,
		limit: int(math.Ceil(math.Log2(float64(psi)))),
		rng:   rand.New(rand.NewPCG(uint64(f.Seed), 0x9e3779b97f4a7c15)),
		order: make([]int, d),
	}
	for j := range b.order {
		b.order[j] = j
	}
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	sample := make([]int, psi)
	// A tree on psi rows has at most 2·psi−1 nodes; carve every tree out of
	// one allocation.
	all := make([]iNode, trees*(2*psi))
	f.trees = make([][]iNode, trees)
	for t := range f.trees {
		// Partial Fisher–Yates: the first psi entries of perm become a
		// uniform sample without replacement.
		for i := 0; i < psi; i++ {
			k := i + b.rng.IntN(n-i)
			perm[i], perm[k] = perm[k], perm[i]
		}
		copy(sample, perm[:psi])
		off := t * 2 * psi
		b.nodes = all[off:off:(off + 2*psi)]
		b.grow(sample, 0)
		f.trees[t] = b.nodes
	}
	f.nFeatures, f.psi, f.norm, f.medians = d, psi, AveragePathLength(psi), medians
	return nil
}

type treeBuilder struct {
	x     []float64 // training values, column-major: x[j*n+i]
	n, d  int
	limit int
	rng   *rand.Rand
	nodes []iNode
	order []int // feature order, reshuffled lazily at each node
}

// grow appends the subtree for the rows idx (reordering idx) and returns
// its node index.
func (b *treeBuilder) grow(idx []int, depth int) int32 {
	id := int32(len(b.nodes))
	b.nodes = append(b.nodes, iNode{feature: -1, size: int32(len(idx))})
	if len(idx) <= 1 || depth >= b.limit {
		return id
	}
	// Try the features in random order (a lazy Fisher–Yates shuffle); the
	// first that is not constant in this node is uniform among those that
	// are not. Only the tried features' ranges are computed.
	d := b.d
	q, lo, hi := -1, 0.0, 0.0
	for k := 0; k < d; k++ {
		r := k + b.rng.IntN(d-k)
		b.order[k], b.order[r] = b.order[r], b.order[k]
		j := b.order[k]
		col := b.x[j*b.n : (j+1)*b.n]
		lo = col[idx[0]]
		hi = lo
		for _, i := range idx[1:] {
			// No NaN here (imputed), so plain comparisons suffice.
			if v := col[i]; v < lo {
				lo = v
			} else if v > hi {
				hi = v
			}
		}
		if hi > lo {
			q = j
			break
		}
	}
	if q < 0 { // all rows identical: cannot be separated
		return id
	}
	u := b.rng.Float64()
	p := lo + u*(hi-lo)
	if math.IsInf(p, 0) || math.IsNaN(p) { // hi−lo overflowed
		p = lo*(1-u) + hi*u
	}
	// Keep lo < p <= hi so that both sides (x < p, x >= p) are non-empty.
	if !(p > lo) || p > hi {
		p = hi
	}
	// Partition: x < p to the front.
	k := 0
	for m, i := range idx {
		if b.x[q*b.n+i] < p {
			idx[k], idx[m] = idx[m], idx[k]
			k++
		}
	}
	left := b.grow(idx[:k], depth+1)
	right := b.grow(idx[k:], depth+1)
	b.nodes[id] = iNode{feature: int32(q), split: p, left: left, right: right, size: int32(len(idx))}
	return id
}

// Fitted reports whether Fit has succeeded.
func (f *IsolationForest) Fitted() bool { return f.trees != nil }

// SampleSize returns the sub-sample size ψ actually used by the fitted
// forest (Psi capped at the number of training rows), 0 before Fit.
func (f *IsolationForest) SampleSize() int { return f.psi }

// Medians returns a copy of the training medians used to impute missing
// values, nil before Fit.
func (f *IsolationForest) Medians() []float64 { return append([]float64(nil), f.medians...) }

// PathLength returns E[h(x)], the average path length of row over the
// trees, after imputing missing values.
func (f *IsolationForest) PathLength(row []float64) (float64, error) {
	if f.trees == nil {
		return 0, fmt.Errorf("anomaly: isolation forest is not fitted; call Fit first")
	}
	if len(row) != f.nFeatures {
		return 0, fmt.Errorf("anomaly: isolation forest row has %d values, want %d as in training", len(row), f.nFeatures)
	}
	for j, v := range row {
		if math.IsInf(v, 0) {
			return 0, fmt.Errorf("anomaly: isolation forest row column %d is %v; only finite values, or NaN for missing, are allowed", j, v)
		}
	}
	var total float64
	for _, nodes := range f.trees {
		n, depth := int32(0), 0
		for nodes[n].feature >= 0 {
			v := row[nodes[n].feature]
			if math.IsNaN(v) {
				v = f.medians[nodes[n].feature]
			}
			if v < nodes[n].split {
				n = nodes[n].left
			} else {
				n = nodes[n].right
			}
			depth++
		}
		total += float64(depth) + AveragePathLength(int(nodes[n].size))
	}
	return total / float64(len(f.trees)), nil
}

// Score returns the anomaly score s = 2^(−E[h(x)]/c(ψ)) of row, in (0,1).
// row must have as many values as the training rows; NaN values are
// imputed with the training medians.
func (f *IsolationForest) Score(row []float64) (float64, error) {
	h, err := f.PathLength(row)
	if err != nil {
		return 0, err
	}
	return math.Exp2(-h / f.norm), nil
}

func (f *IsolationForest) threshold() float64 {
	if f.Threshold == 0 {
		return DefaultForestThreshold
	}
	return f.Threshold
}

// IsAnomaly scores row and reports whether the score exceeds Threshold
// (strictly).
func (f *IsolationForest) IsAnomaly(row []float64) (bool, float64, error) {
	s, err := f.Score(row)
	if err != nil {
		return false, 0, err
	}
	return s > f.threshold(), s, nil
}
