package train

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// maxTracked bounds the distinct values a profile keeps per column, so a
// pass over a large export runs in memory bounded by its width.
const maxTracked = 100

// maxLevels is the most levels a column may have to be guessed categorical;
// more, and it is taken for free text or an identifier and excluded.
const maxLevels = 50

// missingLike are spellings of "missing" that exports use besides the
// default tokens. A column whose only non-numbers are these is numeric with
// missing values, and the spellings join missing_tokens.
var missingLike = []string{"NaN", "nan", "NULL", "null", "None", "N/A", "n/a", "na", "#N/A", "-", ".", "missing"}

// labelNames are column names taken for the label when none is given.
var labelNames = []string{"outcome", "label", "target", "diagnosis", "class", "y"}

// Profile is what one streaming pass over a CSV export learns about its
// columns: enough to propose a CSVConfig (Guess), never the rows
// themselves.
type Profile struct {
	Path    string
	Header  []string
	Rows    int
	Columns []ColumnProfile
}

// ColumnProfile summarises one column.
type ColumnProfile struct {
	Name             string
	Present, Missing int
	// Values are the distinct present values with their counts, by
	// decreasing count; nil when there are more than maxTracked.
	Values []ValueCount
	// NonNumeric are the distinct present values that are not finite
	// numbers (nil when there are more than maxTracked).
	NonNumeric []ValueCount
	// ManyValues and ManyNonNumeric say the counts above overflowed.
	ManyValues, ManyNonNumeric bool
}

// Numeric reports whether every present value is a finite number.
func (c *ColumnProfile) Numeric() bool { return len(c.NonNumeric) == 0 && !c.ManyNonNumeric }

// AllDistinct reports whether no present value repeats (false when there
// were too many distinct values to tell).
func (c *ColumnProfile) AllDistinct() bool { return !c.ManyValues && len(c.Values) == c.Present }

// ProfileCSV reads a CSV export once, streaming, and profiles every column.
// tokens are the values that mean missing (nil: DefaultMissingTokens).
// Errors name the file and line.
func ProfileCSV(path string, tokens []string) (*Profile, error) {
	if tokens == nil {
		tokens = DefaultMissingTokens
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCSV, err)
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.TrimLeadingSpace = true
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: %s:1: header: %v", ErrCSV, path, err)
	}
	p := &Profile{Path: path}
	seen := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		if j, dup := seen[h]; dup {
			return nil, fmt.Errorf("%w: %s:1: column %q appears twice in the header (columns %d and %d)", ErrCSV, path, h, j+1, i+1)
		}
		seen[h] = i
		p.Header = append(p.Header, h)
	}
	type acc struct{ values, nonNum map[string]int }
	accs := make([]acc, len(header))
	for i := range accs {
		accs[i] = acc{map[string]int{}, map[string]int{}}
	}
	p.Columns = make([]ColumnProfile, len(header))
	for i, h := range p.Header {
		p.Columns[i].Name = h
	}
	for line := 2; ; line++ {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s:%d: %v", ErrCSV, path, line, err)
		}
		p.Rows++
		for i, v := range rec {
			c, a := &p.Columns[i], accs[i]
			v = strings.TrimSpace(v)
			if slices.Contains(tokens, v) {
				c.Missing++
				continue
			}
			c.Present++
			if !c.ManyValues {
				if _, ok := a.values[v]; ok {
					a.values[v]++
				} else if len(a.values) < maxTracked {
					a.values[strings.Clone(v)] = 1 // not a slice of the whole line
				} else {
					c.ManyValues, a.values = true, nil
				}
			}
			if x, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(x) && !math.IsInf(x, 0) {
				continue
			}
			if !c.ManyNonNumeric {
				if _, ok := a.nonNum[v]; ok {
					a.nonNum[v]++
				} else if len(a.nonNum) < maxTracked {
					a.nonNum[strings.Clone(v)] = 1
				} else {
					c.ManyNonNumeric, a.nonNum = true, nil
				}
			}
		}
	}
	for i := range p.Columns {
		c := &p.Columns[i]
		if !c.ManyValues {
			c.Values = sortedCounts(accs[i].values)
		}
		if !c.ManyNonNumeric {
			c.NonNumeric = sortedCounts(accs[i].nonNum)
		}
	}
	return p, nil
}

// Column returns the named column's profile, or nil.
func (p *Profile) Column(name string) *ColumnProfile {
	for i := range p.Columns {
		if p.Columns[i].Name == name {
			return &p.Columns[i]
		}
	}
	return nil
}

// Guess is a proposed configuration for a profiled export, with what the
// operator should know about it.
type Guess struct {
	Config CSVConfig
	// PositiveGuessed says the positive label was inferred from the label
	// values (0/1, false/true, no/yes, ...), not given.
	PositiveGuessed bool
	// LabelGuessed says the label column was inferred from its name.
	LabelGuessed bool
	// Excluded are the columns left out, with why.
	Excluded []Excluded
	// AddedTokens are missing-value spellings found in numeric columns
	// and added to the default missing tokens.
	AddedTokens []string
}

// Excluded is a column a Guess leaves out.
type Excluded struct{ Column, Reason string }

// ErrLabel marks a label column or positive label the operator must name.
var ErrLabel = errors.New("train: label")

// LabelQuestion is the error when the positive label cannot be guessed:
// the label column's values, for the operator to choose from.
type LabelQuestion struct {
	File, Column string
	Values       []ValueCount // nil when the column has too many values
	Reason       string
}

func (e *LabelQuestion) Error() string {
	vals := FormatCounts(e.Values, 12)
	if e.Values == nil {
		vals = fmt.Sprintf("more than %d distinct values", maxTracked)
	}
	return fmt.Sprintf("%s: %s: label column %q has %s: %s; name the positive ones with --positive VALUE[,VALUE...]", ErrLabel, e.File, e.Column, vals, e.Reason)
}

func (e *LabelQuestion) Unwrap() error { return ErrLabel }

// binaryPairs are label value pairs whose positive member is unambiguous,
// compared in lower case.
var binaryPairs = [][2]string{{"0", "1"}, {"false", "true"}, {"no", "yes"}, {"n", "y"}, {"negative", "positive"}, {"absent", "present"}}

// Guess proposes a CSVConfig for the profiled file: the label column
// (label, or a column named like one of labelNames), its positive values
// (positive, or the positive member of an unambiguous pair such as 0/1 or
// no/yes; otherwise a *LabelQuestion), and each other column's type:
// numeric when every present value is a finite number (or one of the
// missingLike spellings, which then join the missing tokens), categorical
// otherwise; identifiers (a name ending in "id" with every value distinct),
// free text (every value distinct, or more than maxLevels levels) and empty
// columns are excluded. Columns are listed in header order; missing is the
// missing-value policy to write.
func (p *Profile) Guess(label string, positive []string, missing string) (*Guess, error) {
	g := &Guess{Config: CSVConfig{Path: p.Path, Missing: missing}}
	if label == "" {
		var found []string
		for _, h := range p.Header {
			if slices.Contains(labelNames, strings.ToLower(h)) {
				found = append(found, h)
			}
		}
		if len(found) != 1 {
			return nil, fmt.Errorf("%w: %s: which column is the outcome? Name it with --label COLUMN (columns with 2 to 10 values: %s)", ErrLabel, p.Path, p.fewValued())
		}
		label, g.LabelGuessed = found[0], true
	}
	lc := p.Column(label)
	if lc == nil {
		return nil, fmt.Errorf("%w: %s: no column %q (columns: %s)", ErrCSV, p.Path, label, columnList(p.Header))
	}
	g.Config.LabelColumn = label
	if len(positive) > 0 {
		g.Config.PositiveLabels = positive
	} else {
		pos, reason := guessPositive(lc)
		if pos == "" {
			return nil, &LabelQuestion{File: p.Path, Column: label, Values: lc.Values, Reason: reason}
		}
		g.Config.PositiveLabels, g.PositiveGuessed = []string{pos}, true
	}
	var tokens []string
	for i := range p.Columns {
		c := &p.Columns[i]
		if c.Name == label {
			continue
		}
		markers, onlyMarkers := onlyMissingLike(c)
		switch {
		case c.Present == 0:
			g.Excluded = append(g.Excluded, Excluded{c.Name, "no values"})
		case onlyMarkers:
			g.Excluded = append(g.Excluded, Excluded{c.Name, "no values, only missing markers such as " + fmt.Sprintf("%q", c.NonNumeric[0].Value)})
		case isIdentifier(c):
			g.Excluded = append(g.Excluded, Excluded{c.Name, "an identifier (every value distinct)"})
		case c.Numeric():
			g.Config.Numeric = append(g.Config.Numeric, c.Name)
		case markers:
			g.Config.Numeric = append(g.Config.Numeric, c.Name)
			for _, v := range c.NonNumeric {
				if !slices.Contains(tokens, v.Value) {
					tokens = append(tokens, v.Value)
				}
			}
		case c.ManyValues || len(c.Values) > maxLevels:
			g.Excluded = append(g.Excluded, Excluded{c.Name, fmt.Sprintf("text with more than %d distinct values, so free text or an identifier", maxLevels)})
		case c.AllDistinct() && c.Present > 2:
			g.Excluded = append(g.Excluded, Excluded{c.Name, "text with every value distinct, so free text, a date or an identifier"})
		default:
			g.Config.Categorical = append(g.Config.Categorical, c.Name)
		}
	}
	if len(tokens) > 0 {
		slices.Sort(tokens)
		g.AddedTokens = tokens
		g.Config.MissingTokens = slices.Concat(DefaultMissingTokens, tokens)
	}
	if len(g.Config.Numeric)+len(g.Config.Categorical) == 0 {
		return nil, fmt.Errorf("%w: %s: no usable feature column besides the label %q", ErrCSV, p.Path, label)
	}
	return g, nil
}

// guessPositive returns the positive value of an unambiguous binary label,
// or "" and why it is ambiguous.
func guessPositive(c *ColumnProfile) (string, string) {
	switch {
	case c.Values == nil:
		return "", "too many values for a binary outcome"
	case len(c.Values) == 0:
		return "", "no values"
	case len(c.Values) == 1:
		return "", "only one value, so nothing to learn"
	case len(c.Values) > 2:
		return "", "more than two values"
	}
	a, b := c.Values[0].Value, c.Values[1].Value
	for _, pair := range binaryPairs {
		la, lb := strings.ToLower(a), strings.ToLower(b)
		switch {
		case la == pair[0] && lb == pair[1]:
			return b, ""
		case la == pair[1] && lb == pair[0]:
			return a, ""
		}
	}
	return "", "which of the two is positive is not evident"
}

// isIdentifier: named id, *_id, *-id, "* id" or *ID, and no value repeats
// (or too many to tell).
func isIdentifier(c *ColumnProfile) bool {
	n := c.Name
	named := strings.EqualFold(n, "id") || strings.HasSuffix(n, "ID")
	for _, suffix := range []string{"_id", "-id", " id"} {
		named = named || strings.HasSuffix(strings.ToLower(n), suffix)
	}
	return named && c.Present > 1 && (c.AllDistinct() || c.ManyValues)
}

// onlyMissingLike reports whether a column's non-numbers are all missing
// spellings (missingLike); all tells whether there are no numbers at all.
func onlyMissingLike(c *ColumnProfile) (only, all bool) {
	if c.ManyNonNumeric || len(c.NonNumeric) == 0 {
		return false, false
	}
	n := 0
	for _, v := range c.NonNumeric {
		if !slices.Contains(missingLike, v.Value) {
			return false, false
		}
		n += v.Count
	}
	return true, n == c.Present
}

// fewValued lists the columns with 2 to 10 distinct values, label
// candidates.
func (p *Profile) fewValued() string {
	var out []string
	for _, c := range p.Columns {
		if !c.ManyValues && len(c.Values) >= 2 && len(c.Values) <= 10 {
			out = append(out, fmt.Sprintf("%s (%d)", c.Name, len(c.Values)))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
