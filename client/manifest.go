package client

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/datasets/heart"
)

// manifest describes the data a client trains on. Its SHA-256 goes into
// every contribution the site signs, and onto the audit log.
type manifest struct {
	Source     string   `json:"source"`
	FileSHA256 string   `json:"file_sha256"`
	Features   []string `json:"features"`
	TrainRows  int      `json:"train_rows"`
	TestRows   int      `json:"test_rows"`
	SplitSeed  int64    `json:"split_seed"`
}

// dataManifest computes the manifest of the loaded data and its hash.
func dataManifest(cfg Config, tr, te *train.Dataset) ([32]byte, *manifest, error) {
	m := &manifest{Features: tr.Features, TrainRows: tr.Len(), TestRows: te.Len()}
	var raw []byte
	var err error
	if cfg.Data.Heart != "" {
		m.Source, m.SplitSeed = "heart:"+cfg.Data.Heart, train.HeartSplitSeed
		raw, err = heart.File(cfg.Data.Heart)
	} else {
		m.Source, m.SplitSeed = "csv:"+filepath.Base(cfg.Data.CSV.Path), cfg.Data.CSV.Seed
		raw, err = os.ReadFile(cfg.Data.CSV.Path)
	}
	if err != nil {
		return [32]byte{}, nil, err
	}
	m.FileSHA256 = fmt.Sprintf("%x", sha256.Sum256(raw))
	b, err := json.Marshal(m)
	if err != nil {
		return [32]byte{}, nil, err
	}
	return sha256.Sum256(b), m, nil
}
