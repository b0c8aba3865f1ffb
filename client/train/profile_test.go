package train

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// clinic is an export with an identifier, a numeric column that spells
// missing "NULL", a categorical column, free text, an empty column, a
// column of nothing but NULL and a text label.
func clinic() string {
	var b strings.Builder
	b.WriteString("patient_id,age,bmi,sex,notes,empty,unrecorded,diagnosis\n")
	for i := range 30 {
		bmi := fmt.Sprintf("%.1f", 20+float64(i%9))
		if i%10 == 4 {
			bmi = "NULL"
		}
		fmt.Fprintf(&b, "%d,%d,%s,%s,seen on day %d,,NULL,%s\n", 5000+i, 30+i, bmi, []string{"F", "M"}[i%2], i, []string{"benign", "benign", "malignant"}[i%3])
	}
	return b.String()
}

func TestGuess(t *testing.T) {
	path := writeCSV(t, clinic())
	p, err := ProfileCSV(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Rows != 30 || len(p.Columns) != 8 || p.Column("empty").Missing != 30 {
		t.Fatalf("profile: %d rows, %d columns", p.Rows, len(p.Columns))
	}

	// benign/malignant: which is positive is the operator's call.
	_, err = p.Guess("diagnosis", nil, "drop")
	var q *LabelQuestion
	if !errors.As(err, &q) || !errors.Is(err, ErrLabel) {
		t.Fatalf("error %v, want a LabelQuestion", err)
	}
	want := "train: label: " + path + `: label column "diagnosis" has "benign" (20), "malignant" (10): which of the two is positive is not evident; name the positive ones with --positive VALUE[,VALUE...]`
	if err.Error() != want {
		t.Fatalf("error\n  %s\nwant\n  %s", err, want)
	}

	g, err := p.Guess("", []string{"malignant"}, "drop")
	if err != nil {
		t.Fatal(err)
	}
	c := g.Config
	if !g.LabelGuessed || c.LabelColumn != "diagnosis" || g.PositiveGuessed || !slices.Equal(c.PositiveLabels, []string{"malignant"}) {
		t.Fatalf("label: %+v", g)
	}
	if !slices.Equal(c.Numeric, []string{"age", "bmi"}) || !slices.Equal(c.Categorical, []string{"sex"}) {
		t.Fatalf("numeric %v categorical %v", c.Numeric, c.Categorical)
	}
	var excluded []string
	for _, e := range g.Excluded {
		excluded = append(excluded, e.Column)
	}
	if !slices.Equal(excluded, []string{"patient_id", "notes", "empty", "unrecorded"}) {
		t.Fatalf("excluded %+v", g.Excluded)
	}
	if !slices.Equal(g.AddedTokens, []string{"NULL"}) || !slices.Equal(c.MissingTokens, []string{"", "?", "NA", "NULL"}) {
		t.Fatalf("tokens %v / %v", g.AddedTokens, c.MissingTokens)
	}
	// The guess loads: 3 rows with a NULL bmi dropped.
	tr, te, err := LoadCSV(c)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Len()+te.Len() != 27 || !slices.Equal(tr.Features, []string{"age", "bmi", "sex=M"}) {
		t.Fatalf("%d rows, features %v", tr.Len()+te.Len(), tr.Features)
	}
}

func TestGuessPositive(t *testing.T) {
	for values, want := range map[string]string{
		"0,1": "1", "1,0": "1", "No,Yes": "Yes", "TRUE,FALSE": "TRUE", "negative,positive": "positive",
		"benign,malignant": "", "1,2": "", "0,1,2": "", "1,1": "",
	} {
		var b strings.Builder
		b.WriteString("x,outcome\n")
		for i, v := range strings.Split(values, ",") {
			fmt.Fprintf(&b, "%d,%s\n%d,%s\n", i, v, i+10, v)
		}
		p, err := ProfileCSV(writeCSV(t, b.String()), nil)
		if err != nil {
			t.Fatal(err)
		}
		g, err := p.Guess("outcome", nil, "drop")
		switch {
		case want == "" && err == nil:
			t.Errorf("%s: guessed %v, want a question", values, g.Config.PositiveLabels)
		case want != "" && (err != nil || !g.PositiveGuessed || g.Config.PositiveLabels[0] != want):
			t.Errorf("%s: %v %v, want %q", values, g, err, want)
		}
	}
}

func TestGuessNeedsALabel(t *testing.T) {
	p, err := ProfileCSV(writeCSV(t, "a,b,c\n1,x,5\n2,y,6\n3,x,7\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Guess("", nil, "drop")
	if err == nil || !strings.HasSuffix(err.Error(), "which column is the outcome? Name it with --label COLUMN (columns with 2 to 10 values: a (3), b (2), c (3))") {
		t.Fatalf("error %v", err)
	}
	if _, err := p.Guess("z", nil, "drop"); err == nil || !strings.Contains(err.Error(), `no column "z" (columns: a, b, c)`) {
		t.Fatalf("unknown label: %v", err)
	}
}

// TestProfileWide: a wide export streams through with bounded state; a
// column with more distinct text values than maxLevels is excluded.
func TestProfileWide(t *testing.T) {
	var b strings.Builder
	for j := range 300 {
		fmt.Fprintf(&b, "v%d,", j)
	}
	b.WriteString("code,y\n")
	for i := range 200 {
		for j := range 300 {
			fmt.Fprintf(&b, "%d,", (i*j)%17)
		}
		fmt.Fprintf(&b, "c%d,%d\n", i, i%2)
	}
	p, err := ProfileCSV(writeCSV(t, b.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.Guess("y", nil, "drop")
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Config.Numeric) != 300 || len(g.Config.Categorical) != 0 || len(g.Excluded) != 1 || g.Excluded[0].Column != "code" {
		t.Fatalf("%d numeric, categorical %v, excluded %+v", len(g.Config.Numeric), g.Config.Categorical, g.Excluded)
	}
	if c := p.Column("code"); !c.ManyValues || c.Values != nil {
		t.Fatalf("code column kept %d values", len(c.Values))
	}
}
