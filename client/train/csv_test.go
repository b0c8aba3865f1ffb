package train

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func csvCfg(file string) CSVConfig {
	return CSVConfig{
		Path: filepath.Join("testdata", "csv", file), LabelColumn: "outcome",
		Numeric: []string{"age", "chol"}, Categorical: []string{"sex", "cp"},
		Missing: "drop", TestFraction: 0.34, Seed: 1, Standardize: true,
	}
}

func TestLoadCSV(t *testing.T) {
	tr, te, err := LoadCSV(csvCfg("good.csv"))
	if err != nil {
		t.Fatal(err)
	}
	// 6 rows, one with a missing chol dropped -> 5; floor(5 * 0.66) = 3 train.
	if tr.Len() != 3 || te.Len() != 2 {
		t.Fatalf("split %d/%d, want 3/2", tr.Len(), te.Len())
	}
	want := []string{"age", "chol", "sex=M", "cp=none", "cp=typical"}
	if strings.Join(tr.Features, ",") != strings.Join(want, ",") {
		t.Fatalf("features %v, want %v", tr.Features, want)
	}
	cfg := csvCfg("good.csv")
	cfg.Missing = "impute"
	tr, te, err = LoadCSV(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Len()+te.Len() != 6 {
		t.Fatalf("impute kept %d rows, want 6", tr.Len()+te.Len())
	}
}

func TestBadCSV(t *testing.T) {
	cases := []struct {
		name string
		cfg  func(CSVConfig) CSVConfig
		file string
		want string
	}{
		{"not a number", nil, "not-a-number.csv", `not-a-number.csv:3: column "chol": "abc" is not a number`},
		{"short row", nil, "short-row.csv", "short-row.csv:3"},
		{"no data rows", nil, "header-only.csv", "0 usable rows"},
		{"missing file", nil, "absent.csv", "absent.csv"},
		{"unknown label", func(c CSVConfig) CSVConfig { c.LabelColumn = "diagnosis"; return c }, "good.csv", `no column "diagnosis" (columns: age, sex, chol, cp, outcome)`},
		{"unknown feature", func(c CSVConfig) CSVConfig { c.Numeric = []string{"age", "bmi"}; return c }, "good.csv", `no column "bmi"`},
		{"label as feature", func(c CSVConfig) CSVConfig { c.Numeric = []string{"age", "outcome"}; return c }, "good.csv", `"outcome" listed twice`},
		{"bad missing policy", func(c CSVConfig) CSVConfig { c.Missing = "guess"; return c }, "good.csv", `missing = "guess"`},
		{"all mixed with names", func(c CSVConfig) CSVConfig { c.Numeric = []string{"all", "age"}; return c }, "good.csv", `numeric: "all" must be alone`},
		{"exclude without all", func(c CSVConfig) CSVConfig { c.Exclude = []string{"age"}; return c }, "good.csv", "exclude is only used with numeric: all"},
		{"unknown excluded column", func(c CSVConfig) CSVConfig { c.Numeric, c.Exclude = []string{"all"}, []string{"bmi"}; return c }, "good.csv", `no column "bmi"`},
		{"all takes a text column", func(c CSVConfig) CSVConfig { c.Numeric, c.Categorical = []string{"all"}, []string{"sex"}; return c }, "good.csv",
			`good.csv:2: column "cp": "typical" is not a number (numeric: all takes it as a number: list it under categorical or exclude)`},
		{"all leaves nothing", func(c CSVConfig) CSVConfig {
			c.Numeric, c.Categorical, c.Exclude = []string{"all"}, nil, []string{"age", "sex", "chol", "cp"}
			return c
		}, "good.csv", "numeric: all leaves no feature column"},
		{"excluded label", func(c CSVConfig) CSVConfig { c.Numeric, c.Exclude = []string{"all"}, []string{"outcome"}; return c }, "good.csv", `"outcome" listed twice`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := csvCfg(tc.file)
			if tc.cfg != nil {
				cfg = tc.cfg(cfg)
			}
			_, _, err := LoadCSV(cfg)
			if err == nil || !errors.Is(err, ErrCSV) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want ErrCSV containing %q", err, tc.want)
			}
		})
	}
}

// writeCSV writes text to a file in a temporary directory and returns its
// path.
func writeCSV(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "export.csv")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// tumours has 7 benign and 5 malignant rows; one malignant row lacks its
// size.
const tumours = `id,size,diagnosis
1,1.2,benign
2,3.4,malignant
3,1.1,benign
4,2.9,malignant
5,0.8,benign
6,1.0,benign
7,?,malignant
8,1.3,benign
9,3.1,malignant
10,2.7,malignant
11,0.9,benign
12,1.4,benign
`

// TestLabelMistakesFailLoudly: a positive label the column does not have,
// and a label that leaves one class (overall or in the training split),
// are errors naming the file, the column and what was seen; the right
// label loads.
func TestLabelMistakesFailLoudly(t *testing.T) {
	tum := writeCSV(t, tumours)
	// One positive row among ten: with test_fraction 0.3 and seed 3 it
	// falls in the test split, with seed 1 in the training split.
	var rare strings.Builder
	rare.WriteString("x,y\n")
	for i := range 10 {
		fmt.Fprintf(&rare, "%d,%d\n", i, b2i(i == 0))
	}
	rareFile := writeCSV(t, rare.String())
	// Eight label values, to show only a handful.
	var many strings.Builder
	many.WriteString("x,grade\n")
	for i := range 8 {
		for range i + 1 {
			fmt.Fprintf(&many, "%d,g%d\n", i, i)
		}
	}
	manyFile := writeCSV(t, many.String())
	cfg := func(path, label string, positive ...string) CSVConfig {
		return CSVConfig{Path: path, LabelColumn: label, PositiveLabels: positive, Numeric: []string{NumericAll}, Exclude: []string{"id"},
			Missing: "drop", TestFraction: 0.3, Seed: 1}
	}
	for _, tc := range []struct {
		name string
		cfg  CSVConfig
		want string
	}{
		{"positive label absent", cfg(tum, "diagnosis", "M"),
			"train: csv: " + tum + `: label column "diagnosis": positive label "M" does not occur (values seen: "benign" (7), "malignant" (5))`},
		{"one of two positive labels absent", cfg(tum, "diagnosis", "malignant", "Malignant"),
			"train: csv: " + tum + `: label column "diagnosis": positive label "Malignant" does not occur (values seen: "benign" (7), "malignant" (5))`},
		{"default positive label absent", cfg(tum, "diagnosis"),
			"train: csv: " + tum + `: label column "diagnosis": positive label "1" does not occur (values seen: "benign" (7), "malignant" (5))`},
		{"several absent, many values", CSVConfig{Path: manyFile, LabelColumn: "grade", PositiveLabels: []string{"G7", "G8"}, Numeric: []string{"x"}, TestFraction: 0.3},
			"train: csv: " + manyFile + `: label column "grade": positive labels "G7", "G8" do not occur (values seen: "g7" (8), "g6" (7), "g5" (6), "g4" (5), "g3" (4), "g2" (3), and 2 more)`},
		{"all positive", cfg(tum, "diagnosis", "benign", "malignant"),
			"train: csv: " + tum + `: label column "diagnosis": all 11 usable rows are positive; a model needs both classes (positive_labels: ["benign", "malignant"])`},
		{"all negative after dropping", func() CSVConfig {
			c := cfg(writeCSV(t, "size,diagnosis\n1,benign\n2,benign\n?,malignant\n"), "diagnosis", "malignant")
			c.Exclude = nil
			return c
		}(), "all 2 usable rows are negative; a model needs both classes (positive_labels: [\"malignant\"])"},
		{"training split has one class", func() CSVConfig { c := cfg(rareFile, "y", "1"); c.Exclude, c.Seed = nil, 3; return c }(),
			"train: csv: " + rareFile + `: label column "y": the training split (7 rows; test_fraction 0.3, seed 3) has only negative rows; a model needs both classes (more data, a smaller test_fraction or another seed)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := LoadCSV(tc.cfg)
			if err == nil || !errors.Is(err, ErrCSV) {
				t.Fatalf("error %v, want ErrCSV", err)
			}
			if strings.HasPrefix(tc.want, "train: csv: ") && err.Error() != tc.want || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error\n  %s\nwant\n  %s", err, tc.want)
			}
		})
	}

	// The right label loads, and the preprocessing says what was done.
	tr, te, err := LoadCSV(cfg(tum, "diagnosis", "malignant"))
	if err != nil {
		t.Fatal(err)
	}
	p := tr.Preprocessing
	if p == nil || te.Preprocessing != p {
		t.Fatal("train and test must share one Preprocessing")
	}
	if p.Rows != (RowCounts{Read: 12, Dropped: 1, Train: 7, Test: 4, TrainPositive: positives(tr), TestPositive: positives(te)}) || p.Rows.TrainPositive == 0 {
		t.Fatalf("rows %+v", p.Rows)
	}
	if !slices.Equal(tr.Features, []string{"size"}) || !slices.Equal(p.Features(), tr.Features) {
		t.Fatalf("features %v / %v, want [size] (id excluded, label not a feature)", tr.Features, p.Features())
	}
	// The same file with seed 1 keeps its one positive row for training.
	c := cfg(rareFile, "y", "1")
	c.Exclude = nil
	if _, _, err := LoadCSV(c); err != nil {
		t.Fatalf("seed 1: %v", err)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestNumericAll: numeric: all takes every column but the label, the
// categorical and the excluded ones, in header order, and encodes exactly
// as the same columns listed by name.
func TestNumericAll(t *testing.T) {
	named := csvCfg("good.csv")
	named.Numeric, named.Categorical = []string{"age", "chol"}, []string{"cp"}
	all := named
	all.Numeric, all.Exclude = []string{NumericAll}, []string{"sex"}
	a, _, err := LoadCSV(named)
	if err != nil {
		t.Fatal(err)
	}
	b, _, err := LoadCSV(all)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Features, b.Features) || fmt.Sprint(a.X) != fmt.Sprint(b.X) {
		t.Fatalf("numeric: all gave %v %v, the named columns %v %v", b.Features, b.X, a.Features, a.X)
	}
	if got := b.Preprocessing.ColumnsOf(KindNumeric); !slices.Equal(got, []string{"age", "chol"}) {
		t.Fatalf("numeric columns %v", got)
	}
}

func TestNonFiniteIsNotANumber(t *testing.T) {
	p := writeCSV(t, "x,y\n1,1\nNaN,0\n2,0\n")
	_, _, err := LoadCSV(CSVConfig{Path: p, LabelColumn: "y", Numeric: []string{"x"}})
	if err == nil || !strings.Contains(err.Error(), `:3: column "x": "NaN" is not a finite number (list it in missing_tokens if it means missing)`) {
		t.Fatalf("error %v", err)
	}
	if _, _, err := LoadCSV(CSVConfig{Path: p, LabelColumn: "y", Numeric: []string{"x"}, MissingTokens: []string{"NaN"}}); err != nil {
		t.Fatalf("NaN as a missing token: %v", err)
	}
}

func TestMissingCSVKeepsCause(t *testing.T) {
	_, _, err := LoadCSV(csvCfg("absent.csv"))
	if !errors.Is(err, ErrCSV) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("error %v, want both ErrCSV and fs.ErrNotExist", err)
	}
}

func FuzzParseCSV(f *testing.F) {
	f.Add([]byte("age,sex,chol,cp,outcome\n63,M,233,typical,1\n41,F,204,atypical,0\n"))
	f.Add([]byte("age,sex,chol,cp,outcome\n\"6\"3,M,,x,1\n1,2,3,4,5,6\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := csvCfg("fuzz.csv")
		cfg.Missing = "impute"
		tr, te, err := parseCSV(cfg, bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, d := range []*Dataset{tr, te} {
			for _, r := range d.X {
				if len(r) != len(tr.Features) {
					t.Fatalf("row of %d values for %d features", len(r), len(tr.Features))
				}
			}
		}
	})
}

// TestHeartPreprocessing: the shipped data's record matches what LoadHeart
// does.
func TestHeartPreprocessing(t *testing.T) {
	tr, te, err := LoadHeart("cleveland", HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	p := tr.Preprocessing
	if p == nil || te.Preprocessing != p || !slices.Equal(p.Features(), HeartFeatures) {
		t.Fatalf("preprocessing %+v, want features %v", p, HeartFeatures)
	}
	if p.Rows.Train != 199 || p.Rows.Test != 104 || p.Rows.Read != 303 || p.Rows.Dropped != 0 || len(p.Mean) != 13 || len(p.Std) != 13 {
		t.Fatalf("rows %+v, %d means, %d stds", p.Rows, len(p.Mean), len(p.Std))
	}
}
