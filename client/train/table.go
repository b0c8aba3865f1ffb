package train

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Table is a data set that another loader has already read column by
// column (client/fhir reads one from a FHIR Bulk Data export), before
// encoding: FromTable one-hot encodes, splits and standardises it exactly
// as LoadHeart and LoadCSV do, and records it in a Preprocessing.
type Table struct {
	// Name prefixes the datasets' names ("<Name>/train", "<Name>/test").
	Name string
	// Columns are the feature columns in input order: every numeric column
	// before every categorical one, as in Preprocessing. A categorical
	// column's Categories are its levels; the first is the reference level
	// and gets no input.
	Columns []Column
	// X holds one row per sample and one value per column: a numeric
	// column's value, or the index in Categories of a categorical column's
	// level. Rows with a missing value must already have been dropped.
	X [][]float64
	// Y holds the labels, 0 or 1.
	Y []float64
	// TrainFraction of the rows, rounded down, shuffled with Seed, are the
	// training split (LoadHeart uses 0.66 and HeartSplitSeed).
	TrainFraction float64
	Seed          int64
	// Standardize rescales every input with the training split's mean and
	// population standard deviation.
	Standardize bool
	// Record is copied into the datasets' Preprocessing. The caller fills
	// in what only it knows (LabelColumn, PositiveLabels, Missing,
	// MissingTokens, TestFraction, Rows.Read, Rows.NoLabel, Rows.Dropped);
	// FromTable sets Columns, SplitSeed, Standardize, Mean, Std and the
	// split's row counts.
	Record Preprocessing
}

// ErrTable marks a Table that cannot be turned into datasets.
var ErrTable = errors.New("train: table")

// FromTable encodes, splits and (optionally) standardises t. Both datasets
// share one Preprocessing. With LoadHeart's columns, rows, split and seed
// it gives LoadHeart's datasets bit for bit: the one-hot inputs are the
// same, and the split and the standardisation are LoadHeart's functions.
func FromTable(t *Table) (train, test *Dataset, err error) {
	if err := t.check(); err != nil {
		return nil, nil, err
	}
	prep := t.Record
	prep.Columns = slices.Clone(t.Columns)
	prep.SplitSeed, prep.Standardize = t.Seed, t.Standardize
	prep.Mean, prep.Std = nil, nil
	xs := make([][]float64, len(t.X))
	for i, row := range t.X {
		x := make([]float64, 0, len(prep.Features()))
		for j, c := range t.Columns {
			if c.Kind != KindCategorical {
				x = append(x, row[j])
				continue
			}
			for l := 1; l < len(c.Categories); l++ {
				x = append(x, b2f(int(row[j]) == l))
			}
		}
		xs[i] = x
	}
	npos := 0
	for _, y := range t.Y {
		npos += int(y)
	}
	if npos == 0 || npos == len(t.Y) {
		return nil, nil, fmt.Errorf("%w: %s: all %d rows are %s; a model needs both classes", ErrTable, t.Name, len(t.Y), className(npos > 0))
	}
	train, test = split(t.Name, prep.Features(), xs, slices.Clone(t.Y), t.TrainFraction, t.Seed)
	prep.Rows.Train, prep.Rows.Test = train.Len(), test.Len()
	prep.Rows.TrainPositive, prep.Rows.TestPositive = positives(train), positives(test)
	if p := prep.Rows.TrainPositive; p == 0 || p == train.Len() {
		return nil, nil, fmt.Errorf("%w: %s: the training split (%d rows; train fraction %v, seed %d) has only %s rows; a model needs both classes",
			ErrTable, t.Name, train.Len(), t.TrainFraction, t.Seed, className(p > 0))
	}
	if t.Standardize {
		prep.Mean, prep.Std = standardize(train, test)
	}
	p := &prep
	train.Preprocessing, test.Preprocessing = p, p
	return train, test, nil
}

func (t *Table) check() error {
	if !(t.TrainFraction > 0 && t.TrainFraction < 1) {
		return fmt.Errorf("%w: %s: train fraction %v, want (0, 1)", ErrTable, t.Name, t.TrainFraction)
	}
	if len(t.Columns) == 0 {
		return fmt.Errorf("%w: %s: no columns", ErrTable, t.Name)
	}
	if len(t.X) != len(t.Y) {
		return fmt.Errorf("%w: %s: %d rows of features and %d labels", ErrTable, t.Name, len(t.X), len(t.Y))
	}
	if len(t.Y) < 2 {
		return fmt.Errorf("%w: %s: %d rows, want at least 2", ErrTable, t.Name, len(t.Y))
	}
	seenCat := false
	for j, c := range t.Columns {
		switch c.Kind {
		case KindNumeric:
			if seenCat {
				return fmt.Errorf("%w: %s: numeric column %q after a categorical one (numeric columns come first)", ErrTable, t.Name, c.Name)
			}
		case KindCategorical:
			seenCat = true
			if len(c.Categories) < 2 {
				return fmt.Errorf("%w: %s: categorical column %q has %d levels, want at least 2", ErrTable, t.Name, c.Name, len(c.Categories))
			}
		default:
			return fmt.Errorf("%w: %s: column %d %q has kind %q, want %s or %s", ErrTable, t.Name, j, c.Name, c.Kind, KindNumeric, KindCategorical)
		}
	}
	for i, row := range t.X {
		if len(row) != len(t.Columns) {
			return fmt.Errorf("%w: %s: row %d has %d values, want %d", ErrTable, t.Name, i, len(row), len(t.Columns))
		}
		for j, v := range row {
			c := t.Columns[j]
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("%w: %s: row %d column %q is %v", ErrTable, t.Name, i, c.Name, v)
			}
			if c.Kind == KindCategorical && (v != math.Trunc(v) || v < 0 || int(v) >= len(c.Categories)) {
				return fmt.Errorf("%w: %s: row %d column %q: level index %v, want 0..%d", ErrTable, t.Name, i, c.Name, v, len(c.Categories)-1)
			}
		}
		if y := t.Y[i]; y != 0 && y != 1 {
			return fmt.Errorf("%w: %s: row %d label %v, want 0 or 1", ErrTable, t.Name, i, y)
		}
	}
	return nil
}
