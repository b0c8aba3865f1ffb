package client

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/client/train"
)

// manifestCSV is a small export: two candidate label columns, numeric,
// categorical and an identifier column.
func manifestCSV(t *testing.T, dir string, extra string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("id,age,chol,sex,cp,outcome,grade\n")
	for i := range 24 {
		fmt.Fprintf(&b, "%d,%d,%d,%s,%s,%d,%d\n", 1000+i, 40+(i*7)%30, 180+(i*13)%90, []string{"F", "M"}[i%2], []string{"none", "typical", "atypical"}[i%3], i%3, (i/2)%2)
	}
	b.WriteString(extra)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "export.csv")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDataManifestCommitsToPreprocessing: changing any one data setting
// (or the file) changes the manifest hash; loading the same data with the
// same settings, or with settings that only spell the same preprocessing
// differently, gives the same hash.
func TestDataManifestCommitsToPreprocessing(t *testing.T) {
	dir := t.TempDir()
	path := manifestCSV(t, filepath.Join(dir, "a"), "")
	base := train.CSVConfig{Path: path, LabelColumn: "outcome", PositiveLabels: []string{"1", "2"}, Numeric: []string{"age", "chol"},
		Categorical: []string{"sex", "cp"}, Missing: "drop", TestFraction: 0.25, Seed: 1, Standardize: true}
	hash := func(t *testing.T, c train.CSVConfig) ([32]byte, *manifest) {
		t.Helper()
		tr, te, err := train.LoadCSV(c)
		if err != nil {
			t.Fatal(err)
		}
		sum, m, err := dataManifest(Config{Data: DataConfig{CSV: &c}}, tr, te, nil)
		if err != nil {
			t.Fatal(err)
		}
		return sum, m
	}
	want, m := hash(t, base)
	if m.Version != manifestVersion || m.Preprocessing == nil || len(m.Preprocessing.Mean) != len(m.Features) || m.Preprocessing.Rows.Train != 18 {
		t.Fatalf("manifest %+v", m)
	}

	edit := func(f func(*train.CSVConfig)) train.CSVConfig {
		c := base
		f(&c)
		return c
	}
	changed := map[string]train.CSVConfig{
		"label column": edit(func(c *train.CSVConfig) {
			c.LabelColumn, c.PositiveLabels = "grade", []string{"1"}
			c.Numeric = []string{"age", "chol", "outcome"}
		}),
		"positive labels":      edit(func(c *train.CSVConfig) { c.PositiveLabels = []string{"1"} }),
		"numeric column order": edit(func(c *train.CSVConfig) { c.Numeric = []string{"chol", "age"} }),
		"fewer numeric":        edit(func(c *train.CSVConfig) { c.Numeric = []string{"age"} }),
		"numeric: all":         edit(func(c *train.CSVConfig) { c.Numeric = []string{train.NumericAll} }), // takes id and grade too
		"categorical":          edit(func(c *train.CSVConfig) { c.Categorical = []string{"cp"} }),
		"categorical order":    edit(func(c *train.CSVConfig) { c.Categorical = []string{"cp", "sex"} }),
		"missing policy":       edit(func(c *train.CSVConfig) { c.Missing = "impute" }),
		"missing tokens":       edit(func(c *train.CSVConfig) { c.MissingTokens = []string{"", "?", "NA", "unknown"} }),
		"test fraction":        edit(func(c *train.CSVConfig) { c.TestFraction = 0.3 }),
		"split seed":           edit(func(c *train.CSVConfig) { c.Seed = 2 }),
		"standardize off":      edit(func(c *train.CSVConfig) { c.Standardize = false }),
		"file content":         edit(func(c *train.CSVConfig) { c.Path = manifestCSV(t, filepath.Join(dir, "b"), "2000,50,200,F,none,1,0\n") }),
		"file name": edit(func(c *train.CSVConfig) {
			c.Path = filepath.Join(dir, "renamed.csv")
			b, _ := os.ReadFile(path)
			os.WriteFile(c.Path, b, 0o600)
		}),
	}
	seen := map[[32]byte]string{want: "base"}
	for name, c := range changed {
		t.Run("changes/"+name, func(t *testing.T) {
			got, _ := hash(t, c)
			if got == want {
				t.Fatalf("hash unchanged")
			}
			if other, dup := seen[got]; dup {
				t.Fatalf("same hash as %q", other)
			}
			seen[got] = name
		})
	}

	same := map[string]train.CSVConfig{
		"same settings again":     base,
		"positive labels reorder": edit(func(c *train.CSVConfig) { c.PositiveLabels = []string{"2", "1", "2"} }),
		"numeric: all, exclude":   edit(func(c *train.CSVConfig) { c.Numeric, c.Exclude = []string{train.NumericAll}, []string{"id", "grade"} }),
		"default missing tokens":  edit(func(c *train.CSVConfig) { c.MissingTokens = []string{"NA", "?", ""} }),
		"same file elsewhere":     edit(func(c *train.CSVConfig) { c.Path = manifestCSV(t, filepath.Join(dir, "c"), "") }),
	}
	for name, c := range same {
		t.Run("same/"+name, func(t *testing.T) {
			if got, m := hash(t, c); got != want {
				b, _ := json.Marshal(m)
				t.Fatalf("hash changed: %s", b)
			}
		})
	}
}

// TestDataManifestHeart: the shipped hospitals' manifests differ from one
// another and record the fixed preprocessing.
func TestDataManifestHeart(t *testing.T) {
	seen := map[[32]byte]string{}
	for _, h := range train.Hospitals {
		tr, te, err := train.LoadHeart(h, train.HeartSplitSeed)
		if err != nil {
			t.Fatal(err)
		}
		sum, m, err := dataManifest(Config{Data: DataConfig{Heart: h}}, tr, te, nil)
		if err != nil {
			t.Fatal(err)
		}
		if other, dup := seen[sum]; dup {
			t.Fatalf("%s and %s have the same manifest", h, other)
		}
		seen[sum] = h
		if m.Source != "heart:"+h || m.Preprocessing.LabelColumn != "num" || len(m.FileSHA256) != 64 {
			t.Fatalf("%s: %+v", h, m)
		}
	}
	if _, _, err := dataManifest(Config{Data: DataConfig{Heart: "va"}}, &train.Dataset{}, &train.Dataset{}, nil); err == nil {
		t.Fatal("a manifest of datasets without a preprocessing record")
	}
}

// TestDataSummary: the summary is the manifest the client signs with, and
// a data file changed since it was loaded is an error, not another hash.
func TestDataSummary(t *testing.T) {
	path := manifestCSV(t, t.TempDir(), "")
	cfg := testConfig(t)
	cfg.Data.CSV = &train.CSVConfig{Path: path, LabelColumn: "outcome", PositiveLabels: []string{"1", "2"}, Numeric: []string{"age", "chol"},
		Categorical: []string{"sex", "cp"}, TestFraction: 0.25, Seed: 1}
	c, err := New(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.DataSummary()
	if err != nil {
		t.Fatal(err)
	}
	if s.ManifestSHA256 != c.manifest || sha256.Sum256(s.Manifest) != c.manifest || s.Source != "csv:export.csv" {
		t.Fatalf("summary %+v does not describe the manifest %x", s, c.manifest)
	}
	if err := os.WriteFile(path, append([]byte(nil), "id,age\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = c.DataSummary()
	if err == nil || !strings.Contains(err.Error(), "the data file changed since it was loaded") {
		t.Fatalf("summary of a changed file: %v", err)
	}
}
