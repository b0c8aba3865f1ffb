package aggregation

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Robust aggregators for plaintext studies, where the coordinator sees each
// hospital's update. They replace the sample-weighted average by a rule
// that a minority of faulty or malicious hospitals cannot drag far from the
// honest updates.
//
// Each takes the hospitals' unweighted updates Δ_i = w_local,i − w_parent,
// all of one length d; a payload in the wire encoding
// (EncodingWeightedDelta) holds n_i·Δ_i and must be divided by n_i first.
// Sample counts are deliberately not used: a hospital chooses the n_i it
// reports, so weighting by it would hand an attacker the very leverage
// these rules take away.
//
// All are pure and deterministic: inputs are never modified, ties are
// broken by the lower index, and products are rounded on their own (the
// float64 conversions forbid fused multiply-adds) so every CPU computes the
// same bits. Malformed updates (none, unequal lengths, a NaN or infinite
// entry) are refused with an error wrapping [ErrUpdate] that names the
// update and coordinate; invalid parameters (trim, f, m) with an error
// wrapping [ErrConfig].

// CoordinateMedian returns the coordinate-wise median of the updates
// (Yin, Chen, Ramchandran and Bartlett, "Byzantine-Robust Distributed
// Learning: Towards Optimal Statistical Rates", ICML 2018): coordinate j of
// the result is the median of the updates' j-th entries, the mean of the
// two middle values when their number is even. It tolerates fewer than
// half the updates being arbitrary.
func CoordinateMedian(updates [][]float64) ([]float64, error) {
	d, err := checkUpdates(updates)
	if err != nil {
		return nil, err
	}
	n := len(updates)
	out := make([]float64, d)
	col := make([]float64, n)
	for j := range out {
		sortedColumn(updates, j, col)
		if n%2 == 1 {
			out[j] = col[n/2]
		} else {
			out[j] = robustMean(col[n/2-1 : n/2+1])
		}
	}
	return out, nil
}

// TrimmedMean returns the coordinate-wise trimmed mean of the updates (Yin
// et al., ICML 2018): for each coordinate it drops the trim largest and the
// trim smallest entries and averages the n − 2·trim that remain. It
// tolerates up to trim arbitrary updates; trim = 0 is the plain mean. trim
// must satisfy 0 ≤ trim and 2·trim < n.
func TrimmedMean(updates [][]float64, trim int) ([]float64, error) {
	d, err := checkUpdates(updates)
	if err != nil {
		return nil, err
	}
	n := len(updates)
	if trim < 0 || 2*trim >= n {
		return nil, fmt.Errorf("%w: trimmed mean of %d updates cannot trim %d from each end (want 0 <= trim and 2*trim < %d)", ErrConfig, n, trim, n)
	}
	out := make([]float64, d)
	col := make([]float64, n)
	for j := range out {
		sortedColumn(updates, j, col)
		out[j] = robustMean(col[trim : n-trim])
	}
	return out, nil
}

// MultiKrum is Multi-Krum (Blanchard, El Mhamdi, Guerraoui and Stainer,
// "Machine Learning with Adversaries: Byzantine Tolerant Gradient
// Descent", NeurIPS 2017) for at most f Byzantine updates among n. Each
// update's score is the sum of its squared Euclidean distances to its
// n − f − 2 nearest other updates; the m updates with the lowest scores
// are selected and averaged coordinate-wise. m = 1 is Krum, which returns
// the selected update itself. It requires n > 2f + 2, f ≥ 0 and
// 1 ≤ m ≤ n.
//
// selected lists the chosen indices by increasing score, ties broken by
// the lower index; agg is their mean. Squared distances beyond the float64
// range count as +Inf, which only ranks such an update last.
func MultiKrum(updates [][]float64, f, m int) (agg []float64, selected []int, err error) {
	d, err := checkUpdates(updates)
	if err != nil {
		return nil, nil, err
	}
	n := len(updates)
	if f < 0 || n <= 2*f+2 {
		return nil, nil, fmt.Errorf("%w: Krum with f = %d needs more than 2f+2 = %d updates, got %d (f >= 0)", ErrConfig, f, 2*f+2, n)
	}
	if m < 1 || m > n {
		return nil, nil, fmt.Errorf("%w: Multi-Krum cannot select m = %d of %d updates (want 1 <= m <= %d)", ErrConfig, m, n, n)
	}
	scores := krumScores(updates, n-f-2)
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int {
		return cmp.Or(cmp.Compare(scores[a], scores[b]), cmp.Compare(a, b))
	})
	selected = order[:m:m]
	agg = make([]float64, d)
	col := make([]float64, m)
	for j := range agg {
		for k, i := range selected {
			col[k] = updates[i][j]
		}
		agg[j] = robustMean(col)
	}
	return agg, selected, nil
}

// krumScores returns, for each update, the sum of its squared distances to
// its k nearest other updates.
func krumScores(updates [][]float64, k int) []float64 {
	n := len(updates)
	dist := make([][]float64, n)
	for i := range dist {
		dist[i] = make([]float64, n)
	}
	for i := range n {
		for l := i + 1; l < n; l++ {
			dist[i][l] = squaredDistance(updates[i], updates[l])
			dist[l][i] = dist[i][l]
		}
	}
	scores := make([]float64, n)
	others := make([]float64, 0, n-1)
	for i := range n {
		others = others[:0]
		for l := range n {
			if l != i {
				others = append(others, dist[i][l])
			}
		}
		slices.Sort(others)
		for _, v := range others[:k] {
			scores[i] += v
		}
	}
	return scores
}

func squaredDistance(a, b []float64) float64 {
	s := 0.0
	for j := range a {
		e := a[j] - b[j]
		s += float64(e * e)
	}
	return s
}

// FLTrust aggregates the updates against root, the coordinator's own
// update on the consortium's clean root dataset (Cao, Fang, Liu and Gong,
// "FLTrust: Byzantine-robust Federated Learning via Trust Bootstrapping",
// NDSS 2021). Update i gets the trust score
//
//	TS_i = ReLU(cos(Δ_i, g0)),  g0 = root,
//
// is rescaled to the root's norm, and the result is
//
//	Σ TS_i·(‖g0‖/‖Δ_i‖)·Δ_i / Σ TS_i,
//
// so an update pointing away from the root counts for nothing and none,
// however large, counts for more than the root's magnitude. trust holds
// TS_i per update. An update of norm zero gets trust 0. If every trust
// score is 0 (all updates point away from or orthogonally to the root, or
// the root itself is zero) the result is the zero vector: the round leaves
// the model unchanged.
func FLTrust(updates [][]float64, root []float64) (agg []float64, trust []float64, err error) {
	d, err := checkUpdates(updates)
	if err != nil {
		return nil, nil, err
	}
	if len(root) != d {
		return nil, nil, fmt.Errorf("%w: root update has %d values, the updates %d", ErrUpdate, len(root), d)
	}
	for j, v := range root {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, nil, fmt.Errorf("%w: root update, coordinate %d is %v", ErrUpdate, j, v)
		}
	}
	// Work with unit vectors: cosines and the rescaled sum then stay in
	// range whatever the updates' magnitudes.
	rootUnit, rootNorm := unitVector(root)
	trust = make([]float64, len(updates))
	sum := make([]float64, d)
	total := 0.0
	for i, u := range updates {
		unit, norm := unitVector(u)
		if norm == 0 || rootNorm == 0 {
			continue
		}
		cos := 0.0
		for j := range unit {
			cos += float64(unit[j] * rootUnit[j])
		}
		ts := min(max(cos, 0), 1) // ReLU; the clamp at 1 only absorbs rounding
		if ts == 0 {
			continue
		}
		trust[i] = ts
		total += ts
		for j := range sum {
			sum[j] += float64(ts * unit[j])
		}
	}
	agg = make([]float64, d)
	if total == 0 {
		return agg, trust, nil
	}
	for j := range agg {
		agg[j] = float64(rootNorm*sum[j]) / total
	}
	return agg, trust, nil
}

// ClipToNorm returns a copy of update scaled down, if need be, to L2 norm
// at most bound, and the update's original L2 norm. An update within the
// bound is copied unchanged. bound is meant to be positive; a bound that is
// not (zero, negative or NaN) clips every update to the zero vector, as
// does an update with a NaN or infinite entry, whose norm is then reported
// as NaN or +Inf. The norm is computed without overflow, but may itself
// exceed the float64 range and be reported as +Inf; the clipped copy is
// right even then.
func ClipToNorm(update []float64, bound float64) ([]float64, float64) {
	scale, r := scaledNorm(update)
	norm := float64(scale * r)
	out := make([]float64, len(update))
	switch {
	case math.IsNaN(r) || math.IsInf(scale, 0):
		return out, norm
	case norm <= bound:
		copy(out, update)
		return out, norm
	case !(bound > 0):
		return out, norm
	}
	// x·bound/‖x‖ = (x/scale)·(bound/r), computed so as not to overflow.
	k := bound / r
	for j, v := range update {
		out[j] = float64(v/scale) * k
	}
	return out, norm
}

// checkUpdates checks that there is at least one update, that all have the
// same length, and that every entry is finite; it returns the length.
func checkUpdates(updates [][]float64) (int, error) {
	if len(updates) == 0 {
		return 0, fmt.Errorf("%w: no updates to aggregate", ErrUpdate)
	}
	d := len(updates[0])
	for i, u := range updates {
		if len(u) != d {
			return 0, fmt.Errorf("%w: update %d has %d values, update 0 has %d", ErrUpdate, i, len(u), d)
		}
		for j, v := range u {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return 0, fmt.Errorf("%w: update %d, coordinate %d is %v", ErrUpdate, i, j, v)
			}
		}
	}
	return d, nil
}

// sortedColumn fills col with the updates' j-th entries, sorted.
func sortedColumn(updates [][]float64, j int, col []float64) {
	for i, u := range updates {
		col[i] = u[j]
	}
	slices.Sort(col)
}

// robustMean is the mean of finite values, summed in order. If the sum
// overflows it divides each value first, which cannot.
func robustMean(xs []float64) float64 {
	k := float64(len(xs))
	s := 0.0
	for _, v := range xs {
		s += v
	}
	if m := s / k; !math.IsInf(m, 0) {
		return m
	}
	s = 0
	for _, v := range xs {
		s += v / k
	}
	return s
}

// scaledNorm returns scale and r with ‖x‖ = scale·r, scale the largest
// absolute entry, so that the sum of squares cannot overflow. Both are 0
// for a zero vector; r is NaN if an entry is NaN and scale is +Inf if one
// is infinite.
func scaledNorm(x []float64) (scale, r float64) {
	for _, v := range x {
		if a := math.Abs(v); a > scale || math.IsNaN(a) {
			scale = a
			if math.IsNaN(a) {
				return 0, a
			}
		}
	}
	if scale == 0 {
		return 0, 0
	}
	if math.IsInf(scale, 0) {
		return scale, 1
	}
	ssq := 0.0
	for _, v := range x {
		q := v / scale
		ssq += float64(q * q)
	}
	return scale, math.Sqrt(ssq)
}

// unitVector returns x/‖x‖ and ‖x‖ for a finite x (a nil vector and 0 if x
// is zero). The norm may be +Inf past the float64 range; the unit vector is
// right even then.
func unitVector(x []float64) ([]float64, float64) {
	scale, r := scaledNorm(x)
	if scale == 0 {
		return nil, 0
	}
	out := make([]float64, len(x))
	for j, v := range x {
		out[j] = float64(v/scale) / r
	}
	return out, float64(scale * r)
}

// Drift is parent − initial: how far the global model has moved, the
// public direction the norm check blends into its own.
func Drift(parent, initial []float64) ([]float64, error) {
	if len(parent) != len(initial) {
		return nil, fmt.Errorf("%w: a parent of %d parameters, an initial model of %d", ErrUpdate, len(parent), len(initial))
	}
	out := make([]float64, len(parent))
	for i := range out {
		out[i] = parent[i] - initial[i]
	}
	return out, nil
}
