package fhir

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/client/train"
)

// TestBadMappings loads every testdata/mapping-bad file; each names, in
// "# error:" lines at its top, the problems its error must list.
func TestBadMappings(t *testing.T) {
	files, err := filepath.Glob("testdata/mapping-bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad mappings: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, line := range strings.Split(string(b), "\n") {
				if w, ok := strings.CutPrefix(line, "# error: "); ok {
					want = append(want, w)
				}
			}
			if len(want) == 0 {
				t.Fatal("no # error: line")
			}
			_, err = LoadMapping(f)
			if err == nil {
				t.Fatal("loaded")
			}
			if !errors.Is(err, ErrMapping) {
				t.Errorf("error %v is not ErrMapping", err)
			}
			if !strings.Contains(err.Error(), f) {
				t.Errorf("error does not name the file: %v", err)
			}
			for _, w := range want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error\n%v\ndoes not contain\n%s", err, w)
				}
			}
			var me *MappingError
			if errors.As(err, &me) && len(me.Problems) != len(want) {
				t.Errorf("%d problems, want %d: %v", len(me.Problems), len(want), err)
			}
		})
	}
}

func TestHeartMappingColumns(t *testing.T) {
	m := HeartMapping()
	c, err := compile(m)
	if err != nil {
		t.Fatal(err)
	}
	p := train.Preprocessing{}
	for _, col := range c.cols {
		tc := train.Column{Name: col.Name, Kind: train.KindNumeric}
		if col.Type == TypeCategorical {
			tc.Kind, tc.Categories = train.KindCategorical, col.levelNames()
		}
		p.Columns = append(p.Columns, tc)
	}
	if got := p.Features(); !slices.Equal(got, train.HeartFeatures) {
		t.Errorf("features %v, want train.HeartFeatures %v", got, train.HeartFeatures)
	}
	if c.trainFrac != 0.66 {
		t.Errorf("train fraction %v, want exactly 0.66", c.trainFrac)
	}
	// Each call is a fresh copy.
	m.Columns[0].Name = "changed"
	if HeartMapping().Columns[0].Name != "age" {
		t.Error("HeartMapping returned a shared mapping")
	}
}

func TestMappingInGo(t *testing.T) {
	m := &Mapping{
		Label: Label{Name: "y", Condition: []string{SystemICD10 + "|E11"}},
		Columns: []Column{
			{Name: "hba1c", Type: TypeNumeric, Observation: []string{SystemLOINC + "|4548-4"}, Unit: "%"},
		},
		Split: Split{TestFraction: 0.25, Seed: 3},
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	m.Columns[0].Unit = ""
	err := m.Validate()
	var me *MappingError
	if !errors.As(err, &me) || me.Source != "" || !strings.Contains(err.Error(), "columns[0] hba1c: unit is empty") {
		t.Errorf("got %v", err)
	}
}

func TestDecimalComplement(t *testing.T) {
	for f, want := range map[float64]float64{0.34: 0.66, 0.2: 0.8, 0.1: 0.9, 0.3: 0.7, 0.25: 0.75} {
		if got := decimalComplement(f); got != want {
			t.Errorf("decimalComplement(%v) = %v, want %v", f, got, want)
		}
	}
}

func TestLoadMappingOrHeart(t *testing.T) {
	m, err := LoadMappingOrHeart("")
	if err != nil || m.Name != "heart" {
		t.Errorf("default: %v, %v", m, err)
	}
	m, err = LoadMappingOrHeart("testdata/mapping-good.yaml")
	if err != nil || m.Name != "combine-test" || len(m.Columns) != 11 {
		t.Errorf("file: %+v, %v", m, err)
	}
	if _, err := LoadMappingOrHeart("testdata/none.yaml"); !errors.Is(err, ErrMapping) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
