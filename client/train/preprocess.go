package train

import (
	"fmt"
	"sort"
	"strings"
)

// Column kinds in a Preprocessing.
const (
	KindNumeric     = "numeric"
	KindCategorical = "categorical"
)

// Preprocessing is everything that turns a data file into model inputs: the
// label and which of its values are positive, the feature columns in input
// order with their encoding, missing-value handling, the train/test split,
// standardisation with the statistics it used, and the row counts at each
// step. LoadCSV and LoadHeart fill it in; a site's data manifest commits to
// it, so two loads with the same file and the same Preprocessing produced
// the same model inputs, and any change of setting changes it.
//
// It is a record of what was done, not a configuration: numeric: all is
// recorded as the columns it resolved to.
type Preprocessing struct {
	LabelColumn    string   `json:"label_column"`
	PositiveLabels []string `json:"positive_labels"`
	// Columns are the feature columns in input order: numeric ones first,
	// then categorical ones.
	Columns       []Column `json:"columns"`
	Missing       string   `json:"missing"` // drop | impute
	MissingTokens []string `json:"missing_tokens"`
	TestFraction  float64  `json:"test_fraction"`
	SplitSeed     int64    `json:"split_seed"`
	Standardize   bool     `json:"standardize"`
	// Mean and Std are, per input, the training split's mean and population
	// standard deviation that standardisation used (nil when it is off). A
	// constant input has Std 1: it is only centred.
	Mean []float64 `json:"mean,omitempty"`
	Std  []float64 `json:"std,omitempty"`
	// Consortium: Mean and Std are the consortium's pooled statistics
	// (Restandardize), not this site's.
	Consortium bool      `json:"consortium_standardization,omitempty"`
	Rows       RowCounts `json:"rows"`
}

// Column is one feature column and its encoding.
type Column struct {
	Name string `json:"name"`
	Kind string `json:"kind"` // KindNumeric or KindCategorical
	// Categories are a categorical column's levels, sorted; the first is
	// the reference level and gets no input, each other level one 0/1
	// input. With missing: impute, "(missing)" is a level like any other.
	Categories []string `json:"categories,omitempty"`
	// Imputed counts a numeric column's missing values replaced by
	// ImputedWith, the mean of its present values (missing: impute).
	Imputed     int     `json:"imputed,omitempty"`
	ImputedWith float64 `json:"imputed_with,omitempty"`
}

// RowCounts says what happened to the file's data rows.
type RowCounts struct {
	Read    int `json:"read"`     // data rows in the file
	NoLabel int `json:"no_label"` // skipped: missing label
	Dropped int `json:"dropped"`  // skipped: a missing feature (missing: drop)
	Train   int `json:"train"`
	Test    int `json:"test"`
	// TrainPositive and TestPositive count the positive rows of each split.
	TrainPositive int `json:"train_positive"`
	TestPositive  int `json:"test_positive"`
}

// Inputs are the model inputs a column encodes to, in order: its name for a
// numeric column, "name=level" for each non-reference level of a
// categorical one.
func (c Column) Inputs() []string {
	if c.Kind != KindCategorical {
		return []string{c.Name}
	}
	var out []string
	for _, l := range c.Categories[min(1, len(c.Categories)):] {
		out = append(out, c.Name+"="+l)
	}
	return out
}

// Features are the model inputs of every column, in order. Their number is
// the study's model.inputs.
func (p *Preprocessing) Features() []string {
	var out []string
	for _, c := range p.Columns {
		out = append(out, c.Inputs()...)
	}
	return out
}

// ColumnsOf returns the names of the columns of one kind, in order.
func (p *Preprocessing) ColumnsOf(kind string) []string {
	var out []string
	for _, c := range p.Columns {
		if c.Kind == kind {
			out = append(out, c.Name)
		}
	}
	return out
}

// ValueCount is a value of a column and the rows holding it.
type ValueCount struct {
	Value string
	Count int
}

// sortedCounts orders counts by decreasing count, then value.
func sortedCounts(m map[string]int) []ValueCount {
	out := make([]ValueCount, 0, len(m))
	for v, n := range m {
		out = append(out, ValueCount{v, n})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Count != out[j].Count {
			return out[i].Count > out[j].Count
		}
		return out[i].Value < out[j].Value
	})
	return out
}

// FormatCounts renders at most limit values as `"a" (12), "b" (3)`,
// followed by how many were left out.
func FormatCounts(vc []ValueCount, limit int) string {
	var parts []string
	for i, c := range vc {
		if i == limit {
			parts = append(parts, fmt.Sprintf("and %d more", len(vc)-limit))
			break
		}
		parts = append(parts, fmt.Sprintf("%q (%d)", c.Value, c.Count))
	}
	return strings.Join(parts, ", ")
}

// quoteList renders ["a", "b"].
func quoteList(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
