package train

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Consortium-wide standardisation.
//
// Standardising each hospital's inputs with its own statistics centres
// every site on itself, which removes real differences between sites: on
// the heart-disease data, Switzerland's and VA's patients have a much lower
// maximum heart rate, and after per-site standardisation one global model
// predicts about half of every site positive (0.50 of Switzerland's, which
// are all positive). The standard remedy is one standardisation for the
// whole consortium, from the pooled training rows' mean and standard
// deviation. Those need no row to leave a hospital: each sends a Summary
// (its row count and, per input, the sum and the sum of squares), and the
// pooled statistics follow from the sums (PoolSummaries).

// Summary is one site's contribution to the consortium's statistics, over
// its training split, in the raw (unstandardised) inputs.
type Summary struct {
	Features []string  `json:"features"`
	N        int       `json:"n"`
	Sum      []float64 `json:"sum"`
	SumSq    []float64 `json:"sum_sq"`
}

// Standardization is the consortium's mean and standard deviation per
// input.
type Standardization struct {
	Features []string  `json:"features"`
	Mean     []float64 `json:"mean"`
	Std      []float64 `json:"std"`
}

// ErrStandardization marks statistics that cannot standardise a dataset.
var ErrStandardization = errors.New("train: standardisation")

// raw returns the dataset's rows in raw units, undoing the standardisation
// its preprocessing record says was applied.
func raw(d *Dataset) ([][]float64, error) {
	p := d.Preprocessing
	if p == nil || !p.Standardize || len(p.Mean) != len(d.Features) || len(p.Std) != len(d.Features) {
		return nil, fmt.Errorf("%w: %s has no record of its standardisation", ErrStandardization, d.Name)
	}
	out := make([][]float64, len(d.X))
	for i, row := range d.X {
		r := make([]float64, len(row))
		for j, v := range row {
			r[j] = v*p.Std[j] + p.Mean[j]
		}
		out[i] = r
	}
	return out, nil
}

// Summarize is the site's Summary of its training split (loaded with
// standardisation on, as LoadHeart and LoadCSV with Standardize do).
func Summarize(train *Dataset) (Summary, error) {
	rows, err := raw(train)
	if err != nil {
		return Summary{}, err
	}
	s := Summary{Features: slices.Clone(train.Features), N: len(rows), Sum: make([]float64, len(train.Features)), SumSq: make([]float64, len(train.Features))}
	for _, r := range rows {
		for j, v := range r {
			s.Sum[j] += v
			s.SumSq[j] += float64(v * v)
		}
	}
	return s, nil
}

// PoolSummaries is the consortium's standardisation from every site's
// Summary: the pooled mean and population standard deviation per input (a
// constant input gets std 1, as in per-site standardisation).
func PoolSummaries(ss ...Summary) (Standardization, error) {
	if len(ss) == 0 {
		return Standardization{}, fmt.Errorf("%w: no summaries", ErrStandardization)
	}
	f := ss[0].Features
	sum, sq := make([]float64, len(f)), make([]float64, len(f))
	n := 0
	for i, s := range ss {
		if !slices.Equal(s.Features, f) || len(s.Sum) != len(f) || len(s.SumSq) != len(f) || s.N < 1 {
			return Standardization{}, fmt.Errorf("%w: summary %d does not have the first one's %d inputs or has no rows", ErrStandardization, i, len(f))
		}
		n += s.N
		for j := range f {
			sum[j] += s.Sum[j]
			sq[j] += s.SumSq[j]
		}
	}
	out := Standardization{Features: slices.Clone(f), Mean: make([]float64, len(f)), Std: make([]float64, len(f))}
	for j := range f {
		m := sum[j] / float64(n)
		v := sq[j]/float64(n) - float64(m*m)
		std := math.Sqrt(max(v, 0))
		if std < 1e-12 {
			std = 1
		}
		out.Mean[j], out.Std[j] = m, std
	}
	return out, out.check(f)
}

func (s Standardization) check(features []string) error {
	if !slices.Equal(s.Features, features) || len(s.Mean) != len(features) || len(s.Std) != len(features) {
		return fmt.Errorf("%w: statistics for inputs %v, the data has %v", ErrStandardization, s.Features, features)
	}
	for j := range s.Std {
		if !(s.Std[j] > 0) || math.IsInf(s.Std[j], 0) || math.IsNaN(s.Mean[j]) || math.IsInf(s.Mean[j], 0) {
			return fmt.Errorf("%w: input %s has mean %v and std %v", ErrStandardization, s.Features[j], s.Mean[j], s.Std[j])
		}
	}
	return nil
}

// Restandardize rescales a site's train and test splits (loaded with
// per-site standardisation) to the consortium's statistics, and records
// them in the preprocessing record, so a data manifest says which
// standardisation a model was trained on.
func Restandardize(train, test *Dataset, s Standardization) error {
	if err := s.check(train.Features); err != nil {
		return err
	}
	var rows [2][][]float64
	for i, d := range []*Dataset{train, test} {
		r, err := raw(d)
		if err != nil {
			return err
		}
		rows[i] = r
	}
	for i, d := range []*Dataset{train, test} {
		for k, r := range rows[i] {
			for j, v := range r {
				d.X[k][j] = (v - s.Mean[j]) / s.Std[j]
			}
		}
	}
	p := *train.Preprocessing
	p.Mean, p.Std, p.Consortium = slices.Clone(s.Mean), slices.Clone(s.Std), true
	train.Preprocessing, test.Preprocessing = &p, &p
	return nil
}
