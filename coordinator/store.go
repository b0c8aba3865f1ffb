package coordinator

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ErrNotFound: no model with that hash is stored.
var ErrNotFound = errors.New("coordinator: model not found")

// ErrCorrupt: a stored file no longer hashes to its name.
var ErrCorrupt = errors.New("coordinator: stored model is corrupt")

// Store keeps model files under dir/<sha256 hex>. Files are written once
// (temp file, fsync, rename, fsync of the directory) and checked against
// their name on every read, so a corrupted file is an error, never served.
type Store struct{ dir string }

// OpenStore creates dir if needed.
func OpenStore(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("coordinator: model store: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Put stores b and returns its SHA-256. Storing the same bytes twice is a
// no-op.
func (s *Store) Put(b []byte) ([32]byte, error) {
	sum := sha256.Sum256(b)
	path := s.path(sum)
	if _, err := os.Stat(path); err == nil {
		return sum, nil
	}
	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return sum, fmt.Errorf("coordinator: model store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return sum, fmt.Errorf("coordinator: model store: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return sum, fmt.Errorf("coordinator: model store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return sum, fmt.Errorf("coordinator: model store: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return sum, fmt.Errorf("coordinator: model store: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		d.Sync()
		d.Close()
	}
	return sum, nil
}

// Get returns the model with hash sum after checking its content.
func (s *Store) Get(sum [32]byte) ([]byte, error) {
	b, err := os.ReadFile(s.path(sum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %x", ErrNotFound, sum)
	}
	if err != nil {
		return nil, fmt.Errorf("coordinator: model store: %w", err)
	}
	if sha256.Sum256(b) != sum {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, s.path(sum))
	}
	return b, nil
}

func (s *Store) path(sum [32]byte) string { return filepath.Join(s.dir, hex.EncodeToString(sum[:])) }
