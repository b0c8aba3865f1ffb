package audit

import (
	"errors"
	"fmt"
	"math"
	"strconv"
)

// ParamNormBound is a study's bound on every hospital's update norm; see
// coordinator.StudyConfig.NormBound.
const ParamNormBound = "norm_bound"

// MetricProjectionPrefix names, on a round record of a bounded study, the
// disclosed projection of a site's contribution (MetricProjectionPrefix +
// site), as the coordinator opened it with t key holders.
const MetricProjectionPrefix = "projection:"

// ParamExcluded lists, on a round record, the sites whose contributions
// were left out for being past the norm bound.
const ParamExcluded = "norm_excluded"

// ParamAnomalyPrefix names, on a round record, an anomaly flag on a site's
// signals of the round (ParamAnomalyPrefix + site), with the detector's
// reason: the coordinator's word, signed with the record.
const ParamAnomalyPrefix = "anomaly:"

// ErrNormBound: a round of a bounded study includes a contribution past
// the bound, or does not state the projections it was checked with.
var ErrNormBound = errors.New("audit: the round does not respect the study's norm bound")

// normBound reads a study record's norm bound (0: none).
func normBound(study *Record) (float64, error) {
	v := study.Param(ParamNormBound)
	if v == "" {
		return 0, nil
	}
	b, err := strconv.ParseFloat(v, 64)
	if err != nil || !(b > 0) || math.IsInf(b, 0) {
		return 0, fmt.Errorf("%w: %s = %q, want a finite number > 0", ErrStudyRules, ParamNormBound, v)
	}
	return b, nil
}

// checkBound holds a completed round of a study with norm bound b (secure
// mode) to it: every contribution it aggregates carries its disclosed
// projection, within n·b (the encrypted vector is the weighted update
// n·Δ), with the slack the opening's noise needs.
func checkBound(b float64, rec *Record) error {
	proj := map[string]float64{}
	for _, m := range rec.Metrics {
		if len(m.Name) > len(MetricProjectionPrefix) && m.Name[:len(MetricProjectionPrefix)] == MetricProjectionPrefix {
			proj[m.Name[len(MetricProjectionPrefix):]] = m.Value
		}
	}
	for _, c := range rec.Contributions {
		p, ok := proj[c.Site]
		switch {
		case !ok:
			return fmt.Errorf("%w: no disclosed projection for %q's contribution to round %d", ErrNormBound, c.Site, rec.Round)
		case math.IsNaN(p) || math.Abs(p) > float64(c.Samples)*b*(1+1e-4):
			return fmt.Errorf("%w: %q's contribution to round %d projects to %v, past its bound %v (%d samples × %g)", ErrNormBound, c.Site, rec.Round, p, float64(c.Samples)*b, c.Samples, b)
		}
	}
	return nil
}
