package anomaly

import (
	"fmt"
	"math"
	"strings"
)

// Detector defaults (see also DefaultZThreshold, DefaultMinHistory,
// DefaultTrees, DefaultPsi and DefaultForestThreshold), chosen with the
// simulation in sim_test.go: 20 heterogeneous but stationary sites × 30
// rounds, six signals. Over 5 seeds they gave 0 false positives in 2 500
// honest site-rounds after warm-up and flagged a site whose update norm is
// ×10 in 105 of 105 malicious rounds (×3: 88 of 105; see TestSweep). Over
// 20 seeds (10 000 honest site-rounds after warm-up) the largest robust z
// was 5.4 (threshold 6) and one site-round had an isolation score above
// 0.70 (maximum 0.72).
const (
	// DefaultMinHistoryRounds is the warm-up: the Detector flags nothing
	// until this many rounds are in its history.
	DefaultMinHistoryRounds = 5
	// DefaultWindow is the number of most recent rounds kept as history
	// (for the robust z reference and the forest's training set). A window
	// lets the reference follow slow, legitimate drift (the validation loss
	// falls as training converges) and bounds the cost per round.
	DefaultWindow = 10
	// DefaultSeed seeds the isolation forest.
	DefaultSeed = 1
	// attributionZ: when only the forest flags, features at or above this
	// robust z-score are named as the likely drivers.
	attributionZ = 2.0
)

// Option configures a Detector.
type Option func(*Detector)

// WithZThreshold sets the robust z-score threshold (default
// DefaultZThreshold).
func WithZThreshold(z float64) Option { return func(d *Detector) { d.zThreshold = z } }

// WithMinScale floors the robust scale of the named feature (default: no
// floor). Use it for features that are constant most of the time, such as
// retry or refusal counts, so that one retry is not an infinite z-score.
func WithMinScale(feature string, floor float64) Option {
	return func(d *Detector) {
		if d.minScale == nil {
			d.minScale = make(map[string]float64)
		}
		d.minScale[feature] = floor
	}
}

// WithMinHistory sets the warm-up in rounds (default
// DefaultMinHistoryRounds).
func WithMinHistory(rounds int) Option { return func(d *Detector) { d.minRounds = rounds } }

// WithMinValues sets how many non-missing reference values a feature needs
// before robust z scores it (default DefaultMinHistory).
func WithMinValues(n int) Option { return func(d *Detector) { d.minValues = n } }

// WithWindow sets how many recent rounds are kept as history (default
// DefaultWindow); 0 keeps every round.
func WithWindow(rounds int) Option { return func(d *Detector) { d.window = rounds } }

// WithForest sets the number of trees and the sub-sample size of the
// isolation forest (0 keeps a default).
func WithForest(trees, psi int) Option {
	return func(d *Detector) { d.trees, d.psi = trees, psi }
}

// WithForestThreshold sets the isolation score above which a site-round is
// flagged (default DefaultForestThreshold). A threshold >= 1 disables the
// forest, since scores are always below 1.
func WithForestThreshold(s float64) Option { return func(d *Detector) { d.forestThreshold = s } }

// WithForestOnHistoryOnly trains each round's forest on the history window
// only, instead of the window plus the round being scored (the default).
//
// An isolation forest can only isolate a point quickly if the point is in
// its training data: a new point beyond every training value follows the
// path of the most extreme training point, and a new point in an empty
// corner of the training data is separated no sooner than its neighbours.
// In the simulations, a site reporting a never-seen combination of
// in-range values scored 0.60–0.64 against history only (honest sites in
// the same rounds up to 0.62) but 0.73–0.78 when the scored round was in
// the training set (honest sites still up to 0.62). Training on history
// only is the strict "fit on the past, score the new" protocol; it leaves
// the forest nearly blind at the default threshold.
func WithForestOnHistoryOnly() Option { return func(d *Detector) { d.forestHistoryOnly = true } }

// WithSeed seeds the isolation forest (default DefaultSeed). The forest of
// round r is seeded from (seed, r), so results do not depend on how many
// rounds were observed before.
func WithSeed(seed int64) Option { return func(d *Detector) { d.seed = seed } }

// Detector runs RobustZ and an IsolationForest over a federation's rounds.
// A site-round is flagged if any feature's robust z-score reaches the
// z threshold, or its isolation score exceeds the forest threshold, once
// at least MinHistory rounds are in the history.
//
// For each round, the robust z reference of a site is the history window
// (all sites) plus the round's other sites, and the forest is refitted on
// the history window plus the round itself (one row per site-round; see
// WithForestOnHistoryOnly) and scores the round's observations. Only then
// is the round added to the history, flagged observations included: a
// Detector does not decide which sites to trust, and median/MAD and the
// forest's sub-sampling tolerate a minority of bad rows.
//
// What each half catches: robust z catches any single signal far outside
// the federation's spread (a boosted update norm, a stalled upload, a
// burst of retries) and names it; the forest catches a combination of
// in-range values that no site has shown (e.g. a large site's update norm
// with a small site's upload time), and the flag then names the features
// with the largest robust z as likely drivers. Neither catches a site that
// stays inside the honest sites' joint distribution, nor a deviation that
// is small relative to the spread between honest sites.
//
// A Detector is not safe for concurrent use.
type Detector struct {
	features        []string
	zThreshold      float64
	minScale        map[string]float64
	minRounds       int
	minValues       int
	window          int
	trees, psi      int
	forestThreshold float64
	// forestHistoryOnly trains the forest on the history window alone
	// instead of the window plus the round being scored.
	forestHistoryOnly bool
	seed              int64

	history   [][]Observation // one entry per round with observations, oldest first
	lastRound uint64
	started   bool
}

// NewDetector returns a Detector for the given features (the order of
// Observation.Values). Invalid options are reported by the first Observe.
func NewDetector(features []string, opts ...Option) *Detector {
	d := &Detector{
		features:        append([]string(nil), features...),
		zThreshold:      DefaultZThreshold,
		minRounds:       DefaultMinHistoryRounds,
		minValues:       DefaultMinHistory,
		window:          DefaultWindow,
		trees:           DefaultTrees,
		psi:             DefaultPsi,
		forestThreshold: DefaultForestThreshold,
		seed:            DefaultSeed,
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Features returns a copy of the detector's feature names.
func (d *Detector) Features() []string { return append([]string(nil), d.features...) }

// HistoryRounds returns the number of rounds currently in the history.
func (d *Detector) HistoryRounds() int { return len(d.history) }

func (d *Detector) validate() error {
	if err := checkFeatures(d.features); err != nil {
		return err
	}
	if z := d.zThreshold; !(z > 0) || math.IsInf(z, 0) {
		return fmt.Errorf("anomaly: detector z threshold %v must be positive and finite", z)
	}
	if s := d.forestThreshold; !(s > 0) || math.IsInf(s, 0) {
		return fmt.Errorf("anomaly: detector forest threshold %v must be positive and finite", s)
	}
	if d.minRounds < 1 {
		return fmt.Errorf("anomaly: detector min history %d rounds must be at least 1", d.minRounds)
	}
	if d.minValues < 1 {
		return fmt.Errorf("anomaly: detector min values %d must be at least 1", d.minValues)
	}
	if d.window < 0 {
		return fmt.Errorf("anomaly: detector window %d rounds is negative", d.window)
	}
	if d.window > 0 && d.window < d.minRounds {
		return fmt.Errorf("anomaly: detector window of %d rounds is shorter than its min history of %d rounds, so it would never flag", d.window, d.minRounds)
	}
	if d.trees < 0 || d.psi < 0 || d.psi == 1 {
		return fmt.Errorf("anomaly: detector forest of %d trees with sub-sample %d: want trees >= 0 and sub-sample 0 or >= 2", d.trees, d.psi)
	}
	known := make(map[string]bool, len(d.features))
	for _, f := range d.features {
		known[f] = true
	}
	for f, s := range d.minScale {
		if !known[f] {
			return fmt.Errorf("anomaly: detector min scale given for unknown feature %q (features %q)", f, d.features)
		}
		if !(s >= 0) || math.IsInf(s, 0) {
			return fmt.Errorf("anomaly: detector min scale %v for feature %q must be finite and >= 0", s, f)
		}
	}
	return nil
}

// Observe scores the observations of one round against the history, then
// adds the round to the history. Every observation must carry this round
// number, a distinct non-empty site name and one value per feature (NaN for
// missing, no ±Inf); rounds must be observed in increasing order. On error
// nothing is recorded. Flags are returned in the order of obs.
func (d *Detector) Observe(round uint64, obs []Observation) ([]Flag, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	if d.started && round <= d.lastRound {
		return nil, fmt.Errorf("anomaly: round %d observed after round %d; rounds must increase", round, d.lastRound)
	}
	for i, o := range obs {
		if o.Round != round {
			return nil, fmt.Errorf("anomaly: observation %d (site %q) is for round %d, but round %d is being observed", i, o.Site, o.Round, round)
		}
	}
	if err := checkCurrent(obs, d.features); err != nil {
		return nil, err
	}

	var flags []Flag
	if len(d.history) >= d.minRounds && len(obs) > 0 {
		var err error
		flags, err = d.score(round, obs)
		if err != nil {
			return nil, err
		}
	}

	d.started, d.lastRound = true, round
	if len(obs) > 0 {
		cp := make([]Observation, len(obs))
		for i, o := range obs {
			cp[i] = Observation{Site: o.Site, Round: o.Round, Values: append([]float64(nil), o.Values...)}
		}
		d.history = append(d.history, cp)
		if d.window > 0 && len(d.history) > d.window {
			d.history = append(d.history[:0:0], d.history[len(d.history)-d.window:]...)
		}
	}
	return flags, nil
}

func (d *Detector) score(round uint64, obs []Observation) ([]Flag, error) {
	var hist []Observation
	for _, r := range d.history {
		hist = append(hist, r...)
	}
	rz := RobustZ{Features: d.features, Threshold: d.zThreshold, MinHistory: d.minValues}
	if len(d.minScale) > 0 {
		rz.MinScale = make([]float64, len(d.features))
		for j, f := range d.features {
			rz.MinScale[j] = d.minScale[f]
		}
	}
	zs, err := rz.Scores(hist, obs)
	if err != nil {
		return nil, err
	}

	iso := make([]float64, len(obs))
	for i := range iso {
		iso[i] = math.NaN()
	}
	if d.forestThreshold < 1 && len(hist) >= 2 {
		rows := make([][]float64, len(hist))
		for i, o := range hist {
			rows[i] = o.Values
		}
		if !d.forestHistoryOnly {
			for _, o := range obs {
				rows = append(rows, o.Values)
			}
		}
		forest := IsolationForest{Trees: d.trees, Psi: d.psi, Seed: roundSeed(d.seed, round)}
		if err := forest.Fit(rows); err != nil {
			return nil, fmt.Errorf("anomaly: round %d: %w", round, err)
		}
		for i, o := range obs {
			if iso[i], err = forest.Score(o.Values); err != nil {
				return nil, fmt.Errorf("anomaly: %s: %w", describe(o), err)
			}
		}
	}

	var flags []Flag
	for i, o := range obs {
		fs := zs[i]
		names, reason := flaggedFeatures(d.features, fs)
		byForest := iso[i] > d.forestThreshold
		if len(names) == 0 && !byForest {
			continue
		}
		z := maxZ(fs)
		if byForest {
			part := fmt.Sprintf("isolation score %.3f > %.3g", iso[i], d.forestThreshold)
			if len(names) == 0 {
				// Name the features that deviate most as the likely drivers.
				idx := byZ(fs, func(f FeatureScore) bool { return f.Z >= attributionZ })
				if len(idx) == 0 {
					idx = byZ(fs, func(f FeatureScore) bool { return !math.IsNaN(f.Z) })
					if len(idx) > 1 {
						idx = idx[:1]
					}
				}
				var drv []string
				for _, j := range idx {
					names = append(names, d.features[j])
					drv = append(drv, fmt.Sprintf("%s (z %.3g)", d.features[j], fs[j].Z))
				}
				if len(drv) > 0 {
					part += "; largest deviations: " + strings.Join(drv, ", ")
				}
				reason = part
			} else {
				reason += "; " + part
			}
		}
		severity := z / d.zThreshold
		if math.IsNaN(severity) || iso[i]/d.forestThreshold > severity {
			severity = iso[i] / d.forestThreshold
		}
		// A z-flag means |x−median| >= threshold·scale; dividing may round
		// just below 1.
		severity = max(severity, 1)
		flags = append(flags, Flag{
			Site:      o.Site,
			Round:     round,
			Score:     severity,
			Features:  names,
			Reason:    reason,
			Z:         z,
			Isolation: iso[i],
		})
	}
	return flags, nil
}

// roundSeed derives the forest seed of a round (SplitMix64 finaliser), so
// that each round's forest is independent yet reproducible.
func roundSeed(seed int64, round uint64) int64 {
	x := uint64(seed) ^ (round * 0x9e3779b97f4a7c15)
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return int64(x)
}
