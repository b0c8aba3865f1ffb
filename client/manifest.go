package client

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/fedledger/fedledger/client/fhir"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/datasets/heart"
)

// manifestVersion is bumped whenever the manifest's content changes
// meaning, so that hashes of different versions never collide.
const manifestVersion = 2

// manifest describes the data a client trains on. Its SHA-256 goes into
// every contribution the site signs, and onto the audit log. It commits to
// the file (its SHA-256) and to everything done to it between the file and
// the model's inputs (train.Preprocessing: label and positive labels,
// feature columns in order with their encoding and categories, missing
// values, split, standardisation statistics, row counts), so a change of
// any data setting changes the hash, and equal hashes mean equal inputs.
// The JSON encoding is the preimage: field order is fixed by the struct
// and floats print in their shortest exact form.
type manifest struct {
	Version       int                  `json:"version"`
	Source        string               `json:"source"`
	FileSHA256    string               `json:"file_sha256"`
	Features      []string             `json:"features"`
	Preprocessing *train.Preprocessing `json:"preprocessing"`
	// FHIR summarises a FHIR export: what was read and who was left out
	// (by a research-use consent denial, or for a missing value).
	FHIR *fhirSummary `json:"fhir,omitempty"`
}

// fhirSummary is what a data manifest records of a FHIR export (not the
// manifest's local path).
type fhirSummary struct {
	Mapping           string            `json:"mapping"`
	TransactionTime   string            `json:"transaction_time"`
	Patients          int               `json:"patients"`
	ExcludedByConsent int               `json:"excluded_by_consent"`
	DroppedMissing    int               `json:"dropped_missing"`
	MissingByColumn   map[string]int    `json:"missing_by_column,omitempty"`
	Unlinked          int               `json:"unlinked"`
	Files             []fhir.FileReport `json:"files"`
}

// FHIRData is a FHIR R4 Bulk Data export to train on.
type FHIRData struct {
	// Manifest is the export's manifest file (the $export output JSON).
	Manifest string
	// Mapping is the mapping file (client/fhir); empty: the heart-disease
	// mapping, for exports `fedledger fhir export` made.
	Mapping string
}

// dataManifest computes the manifest of the loaded data and its hash. tr
// must come from train.LoadCSV or train.LoadHeart (it carries their
// Preprocessing); te is the matching test split.
func dataManifest(cfg Config, tr, te *train.Dataset, fr *fhir.Report) ([32]byte, *manifest, error) {
	if tr == nil || te == nil || tr.Preprocessing == nil || te.Preprocessing != tr.Preprocessing {
		return [32]byte{}, nil, errors.New("client: data manifest: datasets without their preprocessing record")
	}
	m := &manifest{Version: manifestVersion, Features: tr.Features, Preprocessing: tr.Preprocessing}
	h := sha256.New()
	if cfg.Data.Heart != "" {
		raw, err := heart.File(cfg.Data.Heart)
		if err != nil {
			return [32]byte{}, nil, err
		}
		m.Source = "heart:" + cfg.Data.Heart
		h.Write(raw)
	} else if cfg.Data.FHIR != nil {
		if fr == nil {
			return [32]byte{}, nil, errors.New("client: data manifest: a FHIR export without its load report")
		}
		// The report's hash commits to the export's manifest and every
		// file the loader read.
		m.Source = "fhir:" + filepath.Base(cfg.Data.FHIR.Manifest)
		m.FHIR = &fhirSummary{Mapping: fr.Mapping, TransactionTime: fr.TransactionTime, Patients: fr.Patients, ExcludedByConsent: fr.ExcludedByConsent,
			DroppedMissing: fr.DroppedMissing, MissingByColumn: fr.MissingByColumn, Unlinked: fr.Unlinked, Files: fr.Files}
		m.FileSHA256 = fr.SHA256
		b, err := json.Marshal(m)
		if err != nil {
			return [32]byte{}, nil, err
		}
		return sha256.Sum256(b), m, nil
	} else {
		m.Source = "csv:" + filepath.Base(cfg.Data.CSV.Path)
		f, err := os.Open(cfg.Data.CSV.Path)
		if err != nil {
			return [32]byte{}, nil, fmt.Errorf("client: data manifest: %w", err)
		}
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return [32]byte{}, nil, fmt.Errorf("client: data manifest: %s: %w", cfg.Data.CSV.Path, err)
		}
	}
	m.FileSHA256 = fmt.Sprintf("%x", h.Sum(nil))
	b, err := json.Marshal(m)
	if err != nil {
		return [32]byte{}, nil, err
	}
	return sha256.Sum256(b), m, nil
}

// DataSummary is what a client loaded and committed to: `fedledger client
// --check` prints it.
type DataSummary struct {
	Source     string
	FileSHA256 string
	// ManifestSHA256 is the hash the site signs with every update.
	ManifestSHA256 [32]byte
	// Manifest is its preimage (JSON), to keep as the record of what the
	// hash stands for.
	Manifest      []byte
	Features      []string
	Preprocessing *train.Preprocessing
}

// DataSummary describes the data c loaded in New. It re-reads the data
// file to hash it, exactly as New did.
func (c *Client) DataSummary() (DataSummary, error) {
	sum, m, err := dataManifest(c.cfg, c.train, c.test, c.fhirReport)
	if err != nil {
		return DataSummary{}, err
	}
	if sum != c.manifest {
		return DataSummary{}, fmt.Errorf("client: the data file changed since it was loaded (manifest %x, now %x)", c.manifest[:8], sum[:8])
	}
	b, err := json.Marshal(m)
	if err != nil {
		return DataSummary{}, err
	}
	return DataSummary{Source: m.Source, FileSHA256: m.FileSHA256, ManifestSHA256: sum, Manifest: b, Features: m.Features,
		Preprocessing: m.Preprocessing}, nil
}
