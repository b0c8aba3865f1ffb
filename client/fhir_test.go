package client

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fedledger/fedledger/client/fhir"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/model"
)

// A hospital's FHIR export with research-use denials: the denied patients
// are left out of training, the data manifest (whose hash every signed
// contribution carries onto the log) counts them, and the model trained on
// the data differs from the one without the denials.
func TestFHIRConsentExcludesPatients(t *testing.T) {
	load := func(deny int) (*train.Dataset, *manifest, [32]byte) {
		t.Helper()
		dir := t.TempDir()
		if err := fhir.Export("cleveland", dir, fhir.ExportOptions{DenyEvery: deny}); err != nil {
			t.Fatal(err)
		}
		cfg := Config{Data: DataConfig{FHIR: &FHIRData{Manifest: filepath.Join(dir, "manifest.json")}}}
		m, err := fhir.LoadMappingOrHeart("")
		if err != nil {
			t.Fatal(err)
		}
		tr, te, rep, err := fhir.LoadDatasets(cfg.Data.FHIR.Manifest, m)
		if err != nil {
			t.Fatal(err)
		}
		sum, man, err := dataManifest(cfg, tr, te, rep)
		if err != nil {
			t.Fatal(err)
		}
		return tr, man, sum
	}
	all, mAll, hAll := load(0)
	some, mSome, hSome := load(10)
	heartTrain, _, err := train.LoadHeart("cleveland", train.HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	if all.Len() != heartTrain.Len() || !slices.EqualFunc(all.X, heartTrain.X, slices.Equal) || !slices.Equal(all.Y, heartTrain.Y) {
		t.Fatal("without denials the FHIR export does not load to the shipped CSV's training split")
	}
	if mAll.FHIR == nil || mAll.FHIR.ExcludedByConsent != 0 || mSome.FHIR.ExcludedByConsent == 0 {
		t.Fatalf("consent exclusions in the manifests: %+v, %+v", mAll.FHIR, mSome.FHIR)
	}
	denied := mSome.FHIR.ExcludedByConsent
	if mSome.FHIR.Patients != mAll.FHIR.Patients || mSome.Source != "fhir:manifest.json" {
		t.Fatalf("manifest %+v", mSome.FHIR)
	}
	train1, test1 := mAll.Preprocessing.Rows.Train+mAll.Preprocessing.Rows.Test, mSome.Preprocessing.Rows.Train+mSome.Preprocessing.Rows.Test
	if train1-test1 > denied || train1 <= test1 {
		t.Fatalf("%d rows without denials, %d with %d patients denied", train1, test1, denied)
	}
	if hAll == hSome {
		t.Fatal("the data manifests' hashes are equal with and without the denials")
	}
	b, err := json.Marshal(mSome)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		FHIR struct {
			ExcludedByConsent int `json:"excluded_by_consent"`
		} `json:"fhir"`
	}
	if err := json.Unmarshal(b, &back); err != nil || back.FHIR.ExcludedByConsent != denied {
		t.Fatalf("the manifest's JSON (the hash's preimage) states %d excluded, want %d: %v", back.FHIR.ExcludedByConsent, denied, err)
	}
	spec := model.Spec{Kind: model.KindLogReg, Inputs: len(all.Features)}
	init, err := model.InitParams(spec, 1)
	if err != nil {
		t.Fatal(err)
	}
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps = 0, 20
	wAll, _, err := train.Train(context.Background(), spec, init, all, tc)
	if err != nil {
		t.Fatal(err)
	}
	wSome, _, err := train.Train(context.Background(), spec, init, some, tc)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(wAll, wSome) {
		t.Fatal("the model trained without the denied patients is the same")
	}
}

func TestFHIRDataConfig(t *testing.T) {
	for name, d := range map[string]DataConfig{
		"two sources":   {Heart: "va", FHIR: &FHIRData{Manifest: "m.json"}},
		"no manifest":   {FHIR: &FHIRData{}},
		"three sources": {Heart: "va", CSV: &train.CSVConfig{Path: "x"}, FHIR: &FHIRData{Manifest: "m.json"}},
	} {
		c := DefaultConfig()
		c.CoordinatorAddr, c.Data = "x:1", d
		if err := c.Validate(); err == nil {
			t.Fatalf("%s: accepted", name)
		}
	}
}
