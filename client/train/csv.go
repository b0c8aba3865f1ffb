package train

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// CSVConfig describes a hospital's own CSV export.
//
// The file has a header row. LabelColumn holds the outcome: a row is
// positive when its label is one of PositiveLabels (default "1"), negative
// otherwise. Numeric columns are parsed as numbers; Categorical columns are
// one-hot encoded with their levels sorted and the first level dropped
// (levels are taken from the whole file, so train and test agree). A value in
// MissingTokens (default "", "?", "NA") is missing: Missing "drop" drops the
// row, "impute" replaces a numeric value by the column's mean over the rows
// where it is present (categorical missing values become their own level).
type CSVConfig struct {
	Path           string
	LabelColumn    string
	PositiveLabels []string
	Numeric        []string
	Categorical    []string
	Missing        string
	MissingTokens  []string
	TestFraction   float64
	Seed           int64
	Standardize    bool
}

// ErrCSV marks an unusable CSV file or configuration.
var ErrCSV = errors.New("train: csv")

// Validate checks the configuration without reading the file.
func (c CSVConfig) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, fmt.Errorf("%w: path is empty", ErrCSV))
	}
	if c.LabelColumn == "" {
		errs = append(errs, fmt.Errorf("%w: label_column is empty", ErrCSV))
	}
	if len(c.Numeric)+len(c.Categorical) == 0 {
		errs = append(errs, fmt.Errorf("%w: no feature columns (numeric, categorical)", ErrCSV))
	}
	if c.Missing != "drop" && c.Missing != "impute" && c.Missing != "" {
		errs = append(errs, fmt.Errorf("%w: missing = %q, want drop or impute", ErrCSV, c.Missing))
	}
	if c.TestFraction < 0 || c.TestFraction >= 1 {
		errs = append(errs, fmt.Errorf("%w: test_fraction = %v, want [0, 1)", ErrCSV, c.TestFraction))
	}
	seen := map[string]bool{c.LabelColumn: true}
	for _, col := range append(slices.Clone(c.Numeric), c.Categorical...) {
		if seen[col] {
			errs = append(errs, fmt.Errorf("%w: column %q listed twice (or is the label)", ErrCSV, col))
		}
		seen[col] = true
	}
	return errors.Join(errs...)
}

// LoadCSV reads, encodes, splits and (optionally) standardises a CSV export.
// Every error names the file, and the line and column where there is one.
func LoadCSV(cfg CSVConfig) (train, test *Dataset, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	f, err := os.Open(cfg.Path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrCSV, err)
	}
	defer f.Close()
	return parseCSV(cfg, f)
}

func parseCSV(cfg CSVConfig, r io.Reader) (train, test *Dataset, err error) {
	file := cfg.Path
	missing := cfg.MissingTokens
	if missing == nil {
		missing = []string{"", "?", "NA"}
	}
	positive := cfg.PositiveLabels
	if positive == nil {
		positive = []string{"1"}
	}
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s:1: header: %v", ErrCSV, file, err)
	}
	index := map[string]int{}
	for i, h := range header {
		index[strings.TrimSpace(h)] = i
	}
	col := func(name string) (int, error) {
		i, ok := index[name]
		if !ok {
			return 0, fmt.Errorf("%w: %s: no column %q (columns: %s)", ErrCSV, file, name, strings.Join(header, ", "))
		}
		return i, nil
	}
	labelIdx, err := col(cfg.LabelColumn)
	if err != nil {
		return nil, nil, err
	}
	numIdx := make([]int, len(cfg.Numeric))
	for i, n := range cfg.Numeric {
		if numIdx[i], err = col(n); err != nil {
			return nil, nil, err
		}
	}
	catIdx := make([]int, len(cfg.Categorical))
	for i, n := range cfg.Categorical {
		if catIdx[i], err = col(n); err != nil {
			return nil, nil, err
		}
	}
	isMissing := func(s string) bool { return slices.Contains(missing, strings.TrimSpace(s)) }

	type row struct {
		num  []float64
		have []bool
		cat  []string
		y    float64
	}
	var rows []row
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s:%d: %v", ErrCSV, file, line, err)
		}
		if isMissing(rec[labelIdx]) {
			continue // no outcome, nothing to learn from
		}
		r := row{num: make([]float64, len(numIdx)), have: make([]bool, len(numIdx)), cat: make([]string, len(catIdx))}
		r.y = b2f(slices.Contains(positive, strings.TrimSpace(rec[labelIdx])))
		drop := false
		for i, c := range numIdx {
			s := strings.TrimSpace(rec[c])
			if isMissing(s) {
				drop = drop || cfg.Missing != "impute"
				continue
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: %s:%d: column %q: %q is not a number", ErrCSV, file, line, cfg.Numeric[i], s)
			}
			r.num[i], r.have[i] = v, true
		}
		for i, c := range catIdx {
			s := strings.TrimSpace(rec[c])
			if isMissing(s) {
				drop = drop || cfg.Missing != "impute"
				s = "(missing)"
			}
			r.cat[i] = s
		}
		if !drop {
			rows = append(rows, r)
		}
	}
	if len(rows) < 2 {
		return nil, nil, fmt.Errorf("%w: %s: %d usable rows, want at least 2", ErrCSV, file, len(rows))
	}
	// Impute numeric columns with the mean of present values.
	for i := range numIdx {
		var sum float64
		var n int
		for _, r := range rows {
			if r.have[i] {
				sum += r.num[i]
				n++
			}
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("%w: %s: column %q has no values", ErrCSV, file, cfg.Numeric[i])
		}
		for _, r := range rows {
			if !r.have[i] {
				r.num[i] = sum / float64(n)
			}
		}
	}
	features := slices.Clone(cfg.Numeric)
	levels := make([][]string, len(catIdx))
	for i := range catIdx {
		set := map[string]bool{}
		for _, r := range rows {
			set[r.cat[i]] = true
		}
		for l := range set {
			levels[i] = append(levels[i], l)
		}
		sort.Strings(levels[i])
		for _, l := range levels[i][1:] {
			features = append(features, cfg.Categorical[i]+"="+l)
		}
	}
	xs := make([][]float64, len(rows))
	ys := make([]float64, len(rows))
	for k, r := range rows {
		x := slices.Clone(r.num)
		for i := range catIdx {
			for _, l := range levels[i][1:] {
				x = append(x, b2f(r.cat[i] == l))
			}
		}
		xs[k], ys[k] = x, r.y
	}
	train, test = split(file, features, xs, ys, 1-cfg.TestFraction, cfg.Seed)
	if cfg.Standardize {
		standardize(train, test)
	}
	return train, test, nil
}
