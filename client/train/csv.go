package train

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// NumericAll, as the only entry of CSVConfig.Numeric (numeric: all in a
// configuration file), makes every column numeric that is not the label,
// not categorical and not excluded, in the header's order.
const NumericAll = "all"

// DefaultMissingTokens are the values that mean "missing" when
// CSVConfig.MissingTokens is nil.
var DefaultMissingTokens = []string{"", "?", "NA"}

// DefaultPositiveLabels are the positive label values when
// CSVConfig.PositiveLabels is nil.
var DefaultPositiveLabels = []string{"1"}

// CSVConfig describes a hospital's own CSV export.
//
// The file has a header row. LabelColumn holds the outcome: a row is
// positive when its label is one of PositiveLabels (default "1"), negative
// otherwise; every positive label must occur in the column, and both
// classes must be present, overall and in the training split. Numeric
// columns are parsed as numbers (Numeric = [NumericAll] takes every column
// not otherwise listed or in Exclude); Categorical columns are one-hot
// encoded with their levels sorted and the first level dropped (levels are
// taken from the whole file, so train and test agree). A value in
// MissingTokens (default "", "?", "NA") is missing: Missing "drop" drops the
// row, "impute" replaces a numeric value by the column's mean over the rows
// where it is present (categorical missing values become their own level).
// A row whose label is missing is skipped. TestFraction of the rows,
// shuffled with Seed, are held out for testing; Standardize rescales every
// input with the training split's mean and standard deviation.
type CSVConfig struct {
	Path           string
	LabelColumn    string
	PositiveLabels []string
	Numeric        []string
	Categorical    []string
	// Exclude lists columns numeric: all leaves out (identifiers, dates,
	// free text).
	Exclude       []string
	Missing       string
	MissingTokens []string
	TestFraction  float64
	Seed          int64
	Standardize   bool
}

// ErrCSV marks an unusable CSV file or configuration.
var ErrCSV = errors.New("train: csv")

func (c CSVConfig) numericAll() bool { return slices.Contains(c.Numeric, NumericAll) }

func (c CSVConfig) missingTokens() []string {
	if c.MissingTokens == nil {
		return DefaultMissingTokens
	}
	return c.MissingTokens
}

func (c CSVConfig) positiveLabels() []string {
	if c.PositiveLabels == nil {
		return DefaultPositiveLabels
	}
	return c.PositiveLabels
}

func (c CSVConfig) missingPolicy() string {
	if c.Missing == "" {
		return "drop"
	}
	return c.Missing
}

// Validate checks the configuration without reading the file.
func (c CSVConfig) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, fmt.Errorf("%w: path is empty", ErrCSV))
	}
	if c.LabelColumn == "" {
		errs = append(errs, fmt.Errorf("%w: label_column is empty", ErrCSV))
	}
	if c.PositiveLabels != nil && len(c.PositiveLabels) == 0 {
		errs = append(errs, fmt.Errorf("%w: positive_labels is empty", ErrCSV))
	}
	if len(c.Numeric)+len(c.Categorical) == 0 {
		errs = append(errs, fmt.Errorf("%w: no feature columns (numeric, categorical)", ErrCSV))
	}
	if c.numericAll() && len(c.Numeric) > 1 {
		errs = append(errs, fmt.Errorf("%w: numeric: %q must be alone (it means every column not listed elsewhere), got %s", ErrCSV, NumericAll, quoteList(c.Numeric)))
	}
	if len(c.Exclude) > 0 && !c.numericAll() {
		errs = append(errs, fmt.Errorf("%w: exclude is only used with numeric: %s (a listed numeric column is used, an unlisted one is not)", ErrCSV, NumericAll))
	}
	if c.Missing != "drop" && c.Missing != "impute" && c.Missing != "" {
		errs = append(errs, fmt.Errorf("%w: missing = %q, want drop or impute", ErrCSV, c.Missing))
	}
	if c.TestFraction < 0 || c.TestFraction >= 1 {
		errs = append(errs, fmt.Errorf("%w: test_fraction = %v, want [0, 1)", ErrCSV, c.TestFraction))
	}
	seen := map[string]bool{c.LabelColumn: true}
	cols := slices.Concat(c.Categorical, c.Exclude)
	if !c.numericAll() {
		cols = slices.Concat(c.Numeric, cols)
	}
	for _, col := range cols {
		if seen[col] {
			errs = append(errs, fmt.Errorf("%w: column %q listed twice (or is the label)", ErrCSV, col))
		}
		seen[col] = true
	}
	return errors.Join(errs...)
}

// LoadCSV reads, encodes, splits and (optionally) standardises a CSV export.
// Both datasets share one Preprocessing, the record of all of it. Every
// error names the file, and the line and column where there is one.
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

// columnList renders a header for an error message, at most 30 names.
func columnList(header []string) string {
	if len(header) > 30 {
		return strings.Join(header[:30], ", ") + fmt.Sprintf(", ... (%d in all)", len(header))
	}
	return strings.Join(header, ", ")
}

func parseCSV(cfg CSVConfig, r io.Reader) (train, test *Dataset, err error) {
	file := cfg.Path
	missing := cfg.missingTokens()
	positive := cfg.positiveLabels()
	cr := csv.NewReader(r)
	cr.TrimLeadingSpace = true
	header, err := cr.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s:1: header: %v", ErrCSV, file, err)
	}
	index := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		header[i] = h
		if j, dup := index[h]; dup {
			return nil, nil, fmt.Errorf("%w: %s:1: column %q appears twice in the header (columns %d and %d)", ErrCSV, file, h, j+1, i+1)
		}
		index[h] = i
	}
	col := func(name string) (int, error) {
		i, ok := index[name]
		if !ok {
			return 0, fmt.Errorf("%w: %s: no column %q (columns: %s)", ErrCSV, file, name, columnList(header))
		}
		return i, nil
	}
	labelIdx, err := col(cfg.LabelColumn)
	if err != nil {
		return nil, nil, err
	}
	for _, n := range slices.Concat(cfg.Categorical, cfg.Exclude) {
		if _, err := col(n); err != nil {
			return nil, nil, err
		}
	}
	numeric := cfg.Numeric
	if cfg.numericAll() {
		numeric = nil
		for _, h := range header {
			if h != cfg.LabelColumn && !slices.Contains(cfg.Categorical, h) && !slices.Contains(cfg.Exclude, h) {
				numeric = append(numeric, h)
			}
		}
		if len(numeric)+len(cfg.Categorical) == 0 {
			return nil, nil, fmt.Errorf("%w: %s: numeric: %s leaves no feature column (the label, categorical and exclude cover every column)", ErrCSV, file, NumericAll)
		}
	}
	numIdx := make([]int, len(numeric))
	for i, n := range numeric {
		if numIdx[i], err = col(n); err != nil {
			return nil, nil, err
		}
	}
	catIdx := make([]int, len(cfg.Categorical))
	for i, n := range cfg.Categorical {
		catIdx[i], _ = col(n)
	}
	isMissing := func(s string) bool { return slices.Contains(missing, s) }
	notNumber := func(line int, column, s, why string) error {
		hint := ""
		if cfg.numericAll() {
			hint = fmt.Sprintf(" (numeric: %s takes it as a number: list it under categorical or exclude)", NumericAll)
		}
		return fmt.Errorf("%w: %s:%d: column %q: %q is not %s%s", ErrCSV, file, line, column, s, why, hint)
	}

	prep := &Preprocessing{
		LabelColumn: cfg.LabelColumn, PositiveLabels: sortedSet(positive), Missing: cfg.missingPolicy(),
		MissingTokens: sortedSet(missing), TestFraction: cfg.TestFraction, SplitSeed: cfg.Seed, Standardize: cfg.Standardize,
	}
	type row struct {
		num  []float64
		have []bool
		cat  []string
		y    float64
	}
	var rows []row
	labels := map[string]int{}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %s:%d: %v", ErrCSV, file, line, err)
		}
		prep.Rows.Read++
		label := strings.TrimSpace(rec[labelIdx])
		if isMissing(label) {
			prep.Rows.NoLabel++
			continue // no outcome, nothing to learn from
		}
		labels[label]++
		r := row{num: make([]float64, len(numIdx)), have: make([]bool, len(numIdx)), cat: make([]string, len(catIdx))}
		r.y = b2f(slices.Contains(positive, label))
		drop := false
		for i, c := range numIdx {
			s := strings.TrimSpace(rec[c])
			if isMissing(s) {
				drop = drop || prep.Missing != "impute"
				continue
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, nil, notNumber(line, numeric[i], s, "a number")
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, nil, notNumber(line, numeric[i], s, "a finite number (list it in missing_tokens if it means missing)")
			}
			r.num[i], r.have[i] = v, true
		}
		for i, c := range catIdx {
			s := strings.TrimSpace(rec[c])
			if isMissing(s) {
				drop = drop || prep.Missing != "impute"
				s = "(missing)"
			}
			r.cat[i] = s
		}
		if drop {
			prep.Rows.Dropped++
			continue
		}
		rows = append(rows, r)
	}
	if err := checkPositiveLabels(file, cfg.LabelColumn, positive, labels); err != nil {
		return nil, nil, err
	}
	if len(rows) < 2 {
		return nil, nil, fmt.Errorf("%w: %s: %d usable rows, want at least 2 (%d read, %d without a label, %d dropped for a missing value)",
			ErrCSV, file, len(rows), prep.Rows.Read, prep.Rows.NoLabel, prep.Rows.Dropped)
	}
	npos := 0
	for _, r := range rows {
		npos += int(r.y)
	}
	if npos == 0 || npos == len(rows) {
		return nil, nil, fmt.Errorf("%w: %s: label column %q: all %d usable rows are %s; a model needs both classes (positive_labels: %s)",
			ErrCSV, file, cfg.LabelColumn, len(rows), className(npos > 0), quoteList(positive))
	}
	for i := range numIdx {
		c := Column{Name: numeric[i], Kind: KindNumeric}
		var sum float64
		var n int
		for _, r := range rows {
			if r.have[i] {
				sum += r.num[i]
				n++
			}
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("%w: %s: column %q has no values", ErrCSV, file, numeric[i])
		}
		for _, r := range rows {
			if !r.have[i] {
				r.num[i] = sum / float64(n)
				c.Imputed++
			}
		}
		if c.Imputed > 0 {
			c.ImputedWith = sum / float64(n)
		}
		prep.Columns = append(prep.Columns, c)
	}
	for i := range catIdx {
		set := map[string]bool{}
		for _, r := range rows {
			set[r.cat[i]] = true
		}
		c := Column{Name: cfg.Categorical[i], Kind: KindCategorical}
		for l := range set {
			c.Categories = append(c.Categories, l)
		}
		sort.Strings(c.Categories)
		prep.Columns = append(prep.Columns, c)
	}
	xs := make([][]float64, len(rows))
	ys := make([]float64, len(rows))
	for k, r := range rows {
		x := slices.Clone(r.num)
		for i, c := range prep.Columns[len(numIdx):] {
			for _, l := range c.Categories[1:] {
				x = append(x, b2f(r.cat[i] == l))
			}
		}
		xs[k], ys[k] = x, r.y
	}
	train, test = split(file, prep.Features(), xs, ys, 1-cfg.TestFraction, cfg.Seed)
	prep.Rows.Train, prep.Rows.Test = train.Len(), test.Len()
	prep.Rows.TrainPositive, prep.Rows.TestPositive = positives(train), positives(test)
	if p := prep.Rows.TrainPositive; p == 0 || p == train.Len() {
		return nil, nil, fmt.Errorf("%w: %s: label column %q: the training split (%d rows; test_fraction %v, seed %d) has only %s rows; a model needs both classes (more data, a smaller test_fraction or another seed)",
			ErrCSV, file, cfg.LabelColumn, train.Len(), cfg.TestFraction, cfg.Seed, className(p > 0))
	}
	if cfg.Standardize {
		prep.Mean, prep.Std = standardize(train, test)
	}
	train.Preprocessing, test.Preprocessing = prep, prep
	return train, test, nil
}

// checkPositiveLabels fails if a positive label never occurs among the
// label values seen (value -> rows): a label the data does not have would
// train on one class only.
func checkPositiveLabels(file, column string, positive []string, seen map[string]int) error {
	if len(seen) == 0 {
		return nil // no labelled row at all: reported as no usable rows
	}
	var absent []string
	for _, p := range positive {
		if seen[p] == 0 {
			absent = append(absent, fmt.Sprintf("%q", p))
		}
	}
	if len(absent) == 0 {
		return nil
	}
	what := "positive label " + absent[0] + " does not occur"
	if len(absent) > 1 {
		what = "positive labels " + strings.Join(absent, ", ") + " do not occur"
	}
	return fmt.Errorf("%w: %s: label column %q: %s (values seen: %s)", ErrCSV, file, column, what, FormatCounts(sortedCounts(seen), 6))
}

func className(positive bool) string {
	if positive {
		return "positive"
	}
	return "negative"
}

func positives(d *Dataset) int {
	n := 0
	for _, y := range d.Y {
		n += int(y)
	}
	return n
}

// sortedSet is ss sorted without duplicates: positive labels and missing
// tokens are sets, so their order in a configuration changes nothing.
func sortedSet(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return slices.Compact(out)
}
