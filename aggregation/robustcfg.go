package aggregation

import (
	"fmt"
	"strconv"
	"strings"
)

// Robust is a plaintext study's robust aggregator, in place of the
// sample-weighted average: the coordinate-wise median, the trimmed mean
// (Trim values cut from each end of every coordinate) or Multi-Krum (at
// most F Byzantine updates; the n − F best-scored are averaged). Its
// string form, as configured and recorded on the study record, is
// "median", "trimmed-mean:T" or "multi-krum:F".
type Robust struct {
	Name string
	Trim int
	F    int
}

// Robust aggregator names.
const (
	RobustMedian      = "median"
	RobustTrimmedMean = "trimmed-mean"
	RobustMultiKrum   = "multi-krum"
)

// ParseRobust reads a robust aggregator's string form ("" is none).
func ParseRobust(s string) (*Robust, error) {
	if s == "" {
		return nil, nil
	}
	name, arg, hasArg := strings.Cut(s, ":")
	r := &Robust{Name: name}
	n := 0
	if hasArg {
		var err error
		if n, err = strconv.Atoi(arg); err != nil || n < 0 {
			return nil, fmt.Errorf("%w: robust aggregator %q: %q is not a count >= 0", ErrConfig, s, arg)
		}
	}
	switch name {
	case RobustMedian:
		if hasArg {
			return nil, fmt.Errorf("%w: robust aggregator %q: the median takes no parameter", ErrConfig, s)
		}
	case RobustTrimmedMean:
		if !hasArg || n < 1 {
			return nil, fmt.Errorf("%w: robust aggregator %q: want trimmed-mean:T, T >= 1 values cut from each end", ErrConfig, s)
		}
		r.Trim = n
	case RobustMultiKrum:
		if !hasArg || n < 1 {
			return nil, fmt.Errorf("%w: robust aggregator %q: want multi-krum:F, F >= 1 Byzantine updates tolerated", ErrConfig, s)
		}
		r.F = n
	default:
		return nil, fmt.Errorf("%w: unknown robust aggregator %q (want %s, %s:T or %s:F)", ErrConfig, s, RobustMedian, RobustTrimmedMean, RobustMultiKrum)
	}
	return r, nil
}

func (r *Robust) String() string {
	switch r.Name {
	case RobustTrimmedMean:
		return fmt.Sprintf("%s:%d", r.Name, r.Trim)
	case RobustMultiKrum:
		return fmt.Sprintf("%s:%d", r.Name, r.F)
	}
	return r.Name
}

// MinUpdates is the fewest updates the aggregator can combine: 2·Trim+1
// for the trimmed mean, 2·F+3 for Multi-Krum, 1 for the median.
func (r *Robust) MinUpdates() int {
	switch r.Name {
	case RobustTrimmedMean:
		return 2*r.Trim + 1
	case RobustMultiKrum:
		return 2*r.F + 3
	}
	return 1
}

// Aggregate combines the unweighted updates.
func (r *Robust) Aggregate(updates [][]float64) ([]float64, error) {
	switch r.Name {
	case RobustMedian:
		return CoordinateMedian(updates)
	case RobustTrimmedMean:
		return TrimmedMean(updates, r.Trim)
	case RobustMultiKrum:
		agg, _, err := MultiKrum(updates, r.F, len(updates)-r.F)
		return agg, err
	}
	return nil, fmt.Errorf("%w: unknown robust aggregator %q", ErrConfig, r.Name)
}
