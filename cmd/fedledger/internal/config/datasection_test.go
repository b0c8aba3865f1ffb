package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestDataSectionRoundTrip: a rendered data section, spliced into a kit's
// client file, loads through LoadClient into the same settings, awkward
// names and label values included.
func TestDataSectionRoundTrip(t *testing.T) {
	path := kit(t, "testdata/good/client.yaml")
	dir := filepath.Dir(path)
	want := CSVFile{
		Path: filepath.Join(dir, "export.csv"), LabelColumn: "diagnosis", PositiveLabels: []string{"1", "yes", "true"},
		Numeric: []string{"age", "chol"}, Categorical: []string{"sex", "cp", "smoker"}, Missing: "impute",
		MissingTokens: []string{"", "?", "NA", "null", "n/a"}, TestFraction: 0.25, Seed: 7, Standardize: false,
	}
	for i := range 30 {
		want.Categorical = append(want.Categorical, "Blood Pressure #"+strings.Repeat("x", i))
	}
	text, _ := os.ReadFile(path)
	out := ReplaceDataSection(string(text), DataSectionYAML(want, []string{"written by a test", "second note"}))
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadClient(path, nil)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !reflect.DeepEqual(c.File.Data.CSV, want) {
		t.Fatalf("loaded %+v\nwant   %+v\nfrom\n%s", c.File.Data.CSV, want, out)
	}
	if !strings.Contains(out, "studies: [heart-2026]") || !strings.Contains(out, "  # second note\n") {
		t.Fatalf("other keys or notes lost:\n%s", out)
	}

	all := want
	all.Numeric, all.Exclude, all.Categorical = []string{"all"}, []string{"chol"}, []string{"sex", "cp", "smoker"}
	out = ReplaceDataSection(string(text), DataSectionYAML(all, nil))
	os.WriteFile(path, []byte(out), 0o600)
	if c, err = LoadClient(path, nil); err != nil || !reflect.DeepEqual(c.Config.Data.CSV.Numeric, []string{"all"}) ||
		!reflect.DeepEqual(c.Config.Data.CSV.Exclude, []string{"chol"}) {
		t.Fatalf("numeric: all: %v %+v\n%s", err, c, out)
	}
}

// TestReplaceDataSection: only the data section changes; comments before
// the next key stay with it; a file without one gets it appended.
func TestReplaceDataSection(t *testing.T) {
	in := `# head
coordinator: a:1
data:
  # old note
  csv:
    path: /x.csv

# about policy
policy:
  min_k: 2
`
	want := `# head
coordinator: a:1
data: {heart: va}

# about policy
policy:
  min_k: 2
`
	if got := ReplaceDataSection(in, "data: {heart: va}"); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	if got := ReplaceDataSection("coordinator: a:1\ndata: {heart: va}\n", "data:\n  csv: {}\n"); got != "coordinator: a:1\ndata:\n  csv: {}\n" {
		t.Fatalf("last section: %q", got)
	}
	if got := ReplaceDataSection("coordinator: a:1", "data: {heart: va}\n"); got != "coordinator: a:1\ndata: {heart: va}\n" {
		t.Fatalf("appended: %q", got)
	}
}
