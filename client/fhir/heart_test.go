package fhir

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/client/train"
)

func exportHeart(t *testing.T, h string, opts ExportOptions) string {
	t.Helper()
	dir := t.TempDir()
	if err := Export(h, dir, opts); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "manifest.json")
}

// sameBits reports whether two matrices are equal bit for bit.
func sameBits(a, b [][]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return false
		}
		for j := range a[i] {
			if math.Float64bits(a[i][j]) != math.Float64bits(b[i][j]) {
				return false
			}
		}
	}
	return true
}

// TestHeartRoundTrip exports every hospital and loads it back: the
// datasets must be train.LoadHeart's, bit for bit.
func TestHeartRoundTrip(t *testing.T) {
	for _, h := range train.Hospitals {
		t.Run(h, func(t *testing.T) {
			man := exportHeart(t, h, ExportOptions{})
			tr, te, rep, err := LoadHeart(man, train.HeartSplitSeed)
			if err != nil {
				t.Fatal(err)
			}
			wtr, wte, err := train.LoadHeart(h, train.HeartSplitSeed)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []struct {
				name      string
				got, want *train.Dataset
			}{{"train", tr, wtr}, {"test", te, wte}} {
				if !sameBits(p.got.X, p.want.X) {
					t.Errorf("%s X differs from train.LoadHeart's", p.name)
				}
				if !slices.Equal(p.got.Y, p.want.Y) {
					t.Errorf("%s Y differs from train.LoadHeart's", p.name)
				}
				if !slices.Equal(p.got.Features, train.HeartFeatures) {
					t.Errorf("%s features %v", p.name, p.got.Features)
				}
			}
			got, want := tr.Preprocessing, wtr.Preprocessing
			if got.Rows.Train != want.Rows.Train || got.Rows.Test != want.Rows.Test ||
				got.Rows.TrainPositive != want.Rows.TrainPositive || got.Rows.TestPositive != want.Rows.TestPositive {
				t.Errorf("rows %+v, train.LoadHeart's %+v", got.Rows, want.Rows)
			}
			if got.Rows.Read != want.Rows.Read || got.Rows.Dropped != want.Rows.Dropped {
				t.Errorf("read/dropped %d/%d, train.LoadHeart's %d/%d", got.Rows.Read, got.Rows.Dropped, want.Rows.Read, want.Rows.Dropped)
			}
			if !reflect.DeepEqual(got.Columns, want.Columns) || !slices.Equal(got.Mean, want.Mean) || !slices.Equal(got.Std, want.Std) ||
				got.SplitSeed != want.SplitSeed || got.Standardize != want.Standardize || got.TestFraction != want.TestFraction {
				t.Errorf("preprocessing\n%+v\ntrain.LoadHeart's\n%+v", got, want)
			}
			if rep.Patients != want.Rows.Read || rep.DroppedMissing != want.Rows.Dropped || rep.ExcludedByConsent != 0 {
				t.Errorf("report %+v", rep)
			}
			if rep.Resources["Consent"] != rep.Patients || rep.Skipped["Consent: scope is not research"] != 0 {
				t.Errorf("consents %+v", rep)
			}
		})
	}
}

// TestHeartConsent exports with research denials: the denied patients
// are not rows, the report counts them, and the datasets lose exactly the
// denied patients that had every value.
func TestHeartConsent(t *testing.T) {
	for _, tc := range []struct {
		h    string
		opts ExportOptions
	}{
		{"cleveland", ExportOptions{DenyEvery: 7}},
		{"va", ExportOptions{DenyFraction: 0.2, Seed: 5}},
	} {
		t.Run(tc.h, func(t *testing.T) {
			base, baseRep, err := Load(exportHeart(t, tc.h, ExportOptions{}), HeartMapping())
			if err != nil {
				t.Fatal(err)
			}
			man := exportHeart(t, tc.h, tc.opts)
			tab, rep, err := Load(man, HeartMapping())
			if err != nil {
				t.Fatal(err)
			}
			denied, err := tc.opts.denied(baseRep.Patients)
			if err != nil {
				t.Fatal(err)
			}
			deniedIDs := map[string]bool{}
			for i := range denied {
				deniedIDs[heartID(tc.h, i)] = true
			}
			if len(deniedIDs) == 0 || rep.ExcludedByConsent != len(deniedIDs) {
				t.Fatalf("excluded %d, denied %d", rep.ExcludedByConsent, len(deniedIDs))
			}
			var want []string // the baseline rows minus the denied
			for _, id := range base.PatientIDs {
				if !deniedIDs[id] {
					want = append(want, id)
				}
			}
			if !slices.Equal(tab.PatientIDs, want) {
				t.Errorf("rows %v, want the baseline's without the denied", tab.PatientIDs)
			}
			lost := len(base.PatientIDs) - len(want)
			if lost == 0 {
				t.Fatal("no denied patient had a complete row: the test shows nothing")
			}
			tr, te, rep2, err := LoadHeart(man, train.HeartSplitSeed)
			if err != nil {
				t.Fatal(err)
			}
			btr, bte, err := train.LoadHeart(tc.h, train.HeartSplitSeed)
			if err != nil {
				t.Fatal(err)
			}
			if tr.Len()+te.Len() != btr.Len()+bte.Len()-lost {
				t.Errorf("%d rows, want %d - %d", tr.Len()+te.Len(), btr.Len()+bte.Len(), lost)
			}
			if rep2.ExcludedByConsent != len(deniedIDs) || tr.Preprocessing.Rows.Read != rep2.Patients-len(deniedIDs) {
				t.Errorf("report %+v, record %+v", rep2, tr.Preprocessing.Rows)
			}
			if rep.Resources["Consent"] != rep.Patients+len(deniedIDs) {
				t.Errorf("%d consents, want a permit per patient and a denial per denied one", rep.Resources["Consent"])
			}
		})
	}
}

func heartID(h string, i int) string { return fmt.Sprintf("%s-%04d", h, i+1) }

func TestExportReproducible(t *testing.T) {
	a, b := exportHeart(t, "switzerland", ExportOptions{DenyEvery: 3}), exportHeart(t, "switzerland", ExportOptions{DenyEvery: 3})
	for _, f := range []string{"manifest.json", "Patient.ndjson", "Observation.ndjson", "Condition.ndjson", "Consent.ndjson"} {
		x, err := os.ReadFile(filepath.Join(filepath.Dir(a), f))
		if err != nil {
			t.Fatal(err)
		}
		y, err := os.ReadFile(filepath.Join(filepath.Dir(b), f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between two exports", f)
		}
	}
}

func TestExportErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		h    string
		opts ExportOptions
		want string
	}{
		"hospital": {"atlantis", ExportOptions{}, `unknown hospital "atlantis"`},
		"both":     {"va", ExportOptions{DenyEvery: 2, DenyFraction: 0.5}, "set DenyEvery or DenyFraction, not both"},
		"fraction": {"va", ExportOptions{DenyFraction: 1.5}, "DenyFraction = 1.5, want [0, 1]"},
		"every":    {"va", ExportOptions{DenyEvery: -1}, "DenyEvery = -1"},
	} {
		t.Run(name, func(t *testing.T) {
			err := Export(tc.h, t.TempDir(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %s", err, tc.want)
			}
		})
	}
}

func TestDenied(t *testing.T) {
	d, _ := ExportOptions{DenyEvery: 4}.denied(10)
	if len(d) != 2 || !d[3] || !d[7] {
		t.Errorf("DenyEvery 4 of 10: %v", d)
	}
	d1, _ := ExportOptions{DenyFraction: 0.25, Seed: 9}.denied(100)
	d2, _ := ExportOptions{DenyFraction: 0.25, Seed: 9}.denied(100)
	d3, _ := ExportOptions{DenyFraction: 0.25, Seed: 10}.denied(100)
	if len(d1) != 25 || !reflect.DeepEqual(d1, d2) || reflect.DeepEqual(d1, d3) {
		t.Errorf("DenyFraction: %d denied; same seed equal %v, other seed equal %v", len(d1), reflect.DeepEqual(d1, d2), reflect.DeepEqual(d1, d3))
	}
}
