package client

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

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
}

// dataManifest computes the manifest of the loaded data and its hash. tr
// must come from train.LoadCSV or train.LoadHeart (it carries their
// Preprocessing); te is the matching test split.
func dataManifest(cfg Config, tr, te *train.Dataset) ([32]byte, *manifest, error) {
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
	sum, m, err := dataManifest(c.cfg, c.train, c.test)
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
