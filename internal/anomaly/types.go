package anomaly

import (
	"fmt"
	"math"
)

// Observation is one site's signals in one round.
type Observation struct {
	Site  string
	Round uint64
	// Values holds one value per feature, in the detector's feature order.
	// NaN means the signal is missing; ±Inf is rejected as malformed.
	Values []float64
}

// Flag is one anomaly: which site and round, how strongly, the features
// that drove it and a short human-readable reason.
type Flag struct {
	Site  string
	Round uint64
	// Score is the headline number used to rank flags. For RobustZ.Score it
	// is the largest robust z-score over the features (Z). For
	// Detector.Observe it is the severity max(Z/ZThreshold,
	// Isolation/ForestThreshold): a flag always has Score >= 1 there.
	Score float64
	// Features names the features that drove the flag, most anomalous
	// first.
	Features []string
	// Reason is a short explanation, e.g.
	// "update_norm=10.2 is 48.1 robust z from median 1.01 (scale 0.19)".
	Reason string
	// Z is the largest robust z-score over the features, NaN if no feature
	// had enough history.
	Z float64
	// Isolation is the isolation-forest score in (0,1), NaN if the forest
	// was not run (RobustZ alone, or still warming up).
	Isolation float64
}

// checkValues reports an error if vals does not have one value per feature
// or holds an infinite value. what describes the owner for the message; it
// is only called on error.
func checkValues(what func() string, vals []float64, features []string) error {
	if len(vals) != len(features) {
		return fmt.Errorf("anomaly: %s has %d values, want %d (features %q)", what(), len(vals), len(features), features)
	}
	for j, v := range vals {
		if math.IsInf(v, 0) {
			return fmt.Errorf("anomaly: %s: feature %q is %v; only finite values, or NaN for missing, are allowed", what(), features[j], v)
		}
	}
	return nil
}

func describe(o Observation) string {
	return fmt.Sprintf("site %q round %d", o.Site, o.Round)
}

// checkFeatures validates a feature list: non-empty, names non-empty and
// unique.
func checkFeatures(features []string) error {
	if len(features) == 0 {
		return fmt.Errorf("anomaly: no features configured")
	}
	seen := make(map[string]int, len(features))
	for j, f := range features {
		if f == "" {
			return fmt.Errorf("anomaly: feature %d has an empty name", j)
		}
		if k, dup := seen[f]; dup {
			return fmt.Errorf("anomaly: feature %q appears twice (positions %d and %d)", f, k, j)
		}
		seen[f] = j
	}
	return nil
}
