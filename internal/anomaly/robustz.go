package anomaly

import (
	"fmt"
	"math"
	"sort"
	"strings"
)

// MADConsistency scales the median absolute deviation so that it estimates
// the standard deviation of normally distributed data: 1/Φ⁻¹(3/4) ≈ 1.4826.
const MADConsistency = 1.4826

// Defaults used when the corresponding RobustZ field is zero.
const (
	// DefaultZThreshold is the robust z-score at or above which a feature is
	// flagged. 6 is deliberately conservative: with a handful of features,
	// heterogeneous sites pooled into one reference and tens of site-rounds
	// per round, a 3-sigma rule would flag honest sites every few rounds.
	// Under a normal model P(|z| >= 6) ≈ 2e-9; the slack absorbs the heavier
	// tails of a pooled, heterogeneous federation (see the simulation test).
	DefaultZThreshold = 6.0
	// DefaultMinHistory is the number of non-missing reference values a
	// feature needs before it is scored at all. Below about 20 values the
	// median and MAD are too noisy to flag on.
	DefaultMinHistory = 20
)

// RobustZ flags an observation whose value on any feature lies Threshold or
// more robust z-scores from the reference median of that feature:
//
//	z = |x − median| / max(1.4826·MAD, MinScale[j])
//
// The reference for feature j of site s in the current round is every
// non-missing value of feature j in history (all sites, previous rounds)
// plus the current round's other sites — never s's own current value, so
// that a wild value cannot inflate its own scale.
//
// The zero values of Threshold and MinHistory select DefaultZThreshold and
// DefaultMinHistory.
type RobustZ struct {
	// Features names the features, in the order of Observation.Values.
	Features []string
	// Threshold is the robust z-score at or above which a feature flags
	// (z >= Threshold flags; computed as |x−median| >= Threshold·scale so
	// that a value exactly Threshold scales away flags).
	Threshold float64
	// MinScale optionally floors the scale, per feature (same order as
	// Features; nil means no floor). A floor stops a constant or nearly
	// constant feature, e.g. a retry count that is almost always 0, from
	// turning noise into huge z-scores. Without a floor, a feature whose
	// MAD is 0 scores +Inf for any value that differs from the median.
	MinScale []float64
	// MinHistory is the number of non-missing reference values a feature
	// needs before it is scored; with fewer it never flags.
	MinHistory int
}

// FeatureScore is the robust z-score of one feature of one observation,
// with the reference statistics behind it.
type FeatureScore struct {
	Value  float64 // the observed value (NaN if missing)
	Median float64 // reference median
	MAD    float64 // reference median absolute deviation, unscaled
	Scale  float64 // max(1.4826·MAD, MinScale)
	N      int     // number of non-missing reference values
	// Z is |Value−Median|/Scale; NaN if Value is missing or N < MinHistory;
	// +Inf if Scale is 0 and Value differs from Median.
	Z float64
	// Flagged reports |Value−Median| >= Threshold·Scale (and > 0).
	Flagged bool
}

func (d *RobustZ) threshold() float64 {
	if d.Threshold == 0 {
		return DefaultZThreshold
	}
	return d.Threshold
}

func (d *RobustZ) minHistory() int {
	if d.MinHistory == 0 {
		return DefaultMinHistory
	}
	return d.MinHistory
}

func (d *RobustZ) validate() error {
	if err := checkFeatures(d.Features); err != nil {
		return err
	}
	if t := d.Threshold; t < 0 || math.IsNaN(t) || math.IsInf(t, 0) {
		return fmt.Errorf("anomaly: RobustZ threshold %v must be a positive finite number (0 selects the default %v)", t, DefaultZThreshold)
	}
	if d.MinHistory < 0 {
		return fmt.Errorf("anomaly: RobustZ MinHistory %d is negative", d.MinHistory)
	}
	if d.MinScale != nil && len(d.MinScale) != len(d.Features) {
		return fmt.Errorf("anomaly: RobustZ has %d MinScale entries for %d features %q", len(d.MinScale), len(d.Features), d.Features)
	}
	for j, s := range d.MinScale {
		if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
			return fmt.Errorf("anomaly: RobustZ MinScale for feature %q is %v; want a finite value >= 0", d.Features[j], s)
		}
	}
	return nil
}

// checkCurrent validates one round's observations: values, non-empty and
// unique site names, and a single round number.
func checkCurrent(current []Observation, features []string) error {
	seen := make(map[string]bool, len(current))
	for i, o := range current {
		if o.Site == "" {
			return fmt.Errorf("anomaly: observation %d of round %d has an empty site name", i, o.Round)
		}
		if seen[o.Site] {
			return fmt.Errorf("anomaly: site %q appears twice in round %d", o.Site, o.Round)
		}
		seen[o.Site] = true
		if o.Round != current[0].Round {
			return fmt.Errorf("anomaly: %s is not in the current round %d (site %q); score one round at a time", describe(o), current[0].Round, current[0].Site)
		}
		if err := checkValues(func() string { return describe(o) }, o.Values, features); err != nil {
			return err
		}
	}
	return nil
}

// Scores returns the per-feature robust z-scores of every current
// observation: Scores(...)[i][j] is feature j of current[i]. It validates
// its input like Score.
func (d *RobustZ) Scores(history, current []Observation) ([][]FeatureScore, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	nf := len(d.Features)
	for _, o := range history {
		if err := checkValues(func() string { return "history " + describe(o) }, o.Values, d.Features); err != nil {
			return nil, err
		}
	}
	if err := checkCurrent(current, d.Features); err != nil {
		return nil, err
	}
	t, minHist := d.threshold(), d.minHistory()

	// Non-missing history values, per feature.
	hist := make([][]float64, nf)
	for j := range hist {
		hist[j] = make([]float64, 0, len(history))
	}
	for _, o := range history {
		for j, v := range o.Values {
			if !math.IsNaN(v) {
				hist[j] = append(hist[j], v)
			}
		}
	}

	out := make([][]FeatureScore, len(current))
	buf := make([]float64, 0, len(history)+len(current))
	for i, o := range current {
		out[i] = make([]FeatureScore, nf)
		for j := 0; j < nf; j++ {
			fs := &out[i][j]
			fs.Value = o.Values[j]
			fs.Median, fs.MAD, fs.Scale, fs.Z = math.NaN(), math.NaN(), math.NaN(), math.NaN()
			buf = append(buf[:0], hist[j]...)
			for k, other := range current {
				if k != i && !math.IsNaN(other.Values[j]) {
					buf = append(buf, other.Values[j])
				}
			}
			fs.N = len(buf)
			if fs.N == 0 || fs.N < minHist {
				continue
			}
			fs.Median, fs.MAD = medianMAD(buf)
			fs.Scale = MADConsistency * fs.MAD
			if d.MinScale != nil && d.MinScale[j] > fs.Scale {
				fs.Scale = d.MinScale[j]
			}
			if math.IsNaN(fs.Value) {
				continue
			}
			dev := math.Abs(fs.Value - fs.Median)
			switch {
			case dev == 0:
				fs.Z = 0
			case fs.Scale == 0:
				fs.Z = math.Inf(1)
			default:
				fs.Z = dev / fs.Scale
			}
			fs.Flagged = dev > 0 && dev >= t*fs.Scale
		}
	}
	return out, nil
}

// Score returns one Flag per current observation with at least one feature
// at or beyond the threshold, in the order of current. Score and Z are the
// largest robust z-score over the features; Isolation is NaN.
//
// current must be one round: distinct non-empty site names sharing one
// Round. Every observation (history included) must carry one value per
// feature and no ±Inf; the error names the offending site and round.
// Features whose value is NaN are ignored, as are features with fewer than
// MinHistory reference values.
func (d *RobustZ) Score(history, current []Observation) ([]Flag, error) {
	scores, err := d.Scores(history, current)
	if err != nil {
		return nil, err
	}
	var flags []Flag
	for i, fs := range scores {
		names, reason := flaggedFeatures(d.Features, fs)
		if len(names) == 0 {
			continue
		}
		z := maxZ(fs)
		flags = append(flags, Flag{
			Site:      current[i].Site,
			Round:     current[i].Round,
			Score:     z,
			Features:  names,
			Reason:    reason,
			Z:         z,
			Isolation: math.NaN(),
		})
	}
	return flags, nil
}

// maxZ returns the largest non-NaN Z, or NaN if there is none.
func maxZ(fs []FeatureScore) float64 {
	m := math.NaN()
	for _, f := range fs {
		if !math.IsNaN(f.Z) && (math.IsNaN(m) || f.Z > m) {
			m = f.Z
		}
	}
	return m
}

// byZ returns the indices of the features satisfying keep, ordered by
// decreasing Z (ties by feature order).
func byZ(fs []FeatureScore, keep func(FeatureScore) bool) []int {
	var idx []int
	for j, f := range fs {
		if keep(f) {
			idx = append(idx, j)
		}
	}
	sort.SliceStable(idx, func(a, b int) bool { return fs[idx[a]].Z > fs[idx[b]].Z })
	return idx
}

// flaggedFeatures returns the names of the flagged features, most anomalous
// first, and a reason describing them.
func flaggedFeatures(features []string, fs []FeatureScore) ([]string, string) {
	idx := byZ(fs, func(f FeatureScore) bool { return f.Flagged })
	if len(idx) == 0 {
		return nil, ""
	}
	names := make([]string, len(idx))
	parts := make([]string, len(idx))
	for k, j := range idx {
		names[k] = features[j]
		parts[k] = describeZ(features[j], fs[j])
	}
	return names, strings.Join(parts, "; ")
}

func describeZ(name string, f FeatureScore) string {
	return fmt.Sprintf("%s=%.4g is %.3g robust z from median %.4g (scale %.3g, n=%d)", name, f.Value, f.Z, f.Median, f.Scale, f.N)
}
