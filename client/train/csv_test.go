package train

import (
	"bytes"
	"errors"
	"io/fs"
	"path/filepath"
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
