package audit

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/tlog"
)

// ErrIndexOutOfRange is returned for a leaf or tree size the log does not have.
var ErrIndexOutOfRange = errors.New("audit: index out of range")

// MerkleLog is an in-memory RFC 6962 Merkle log of opaque leaves (envelope
// bytes), using golang.org/x/mod/sumdb/tlog for all hashing and proofs. It
// is safe for concurrent use.
type MerkleLog struct {
	mu     sync.RWMutex
	leaves [][]byte
	hashes []tlog.Hash // tlog stored-hash layout
}

// NewMerkleLog returns an empty log.
func NewMerkleLog() *MerkleLog { return &MerkleLog{} }

// ReadHashes implements tlog.HashReader over the stored hashes.
func (l *MerkleLog) readHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(l.hashes)) {
			return nil, fmt.Errorf("stored hash %d of %d: %w", x, len(l.hashes), ErrIndexOutOfRange)
		}
		out[i] = l.hashes[x]
	}
	return out, nil
}

// Append adds leaf and returns its index.
func (l *MerkleLog) Append(leaf []byte) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := int64(len(l.leaves))
	hs, err := tlog.StoredHashes(n, leaf, tlog.HashReaderFunc(l.readHashes))
	if err != nil {
		return 0, fmt.Errorf("audit: merkle append: %w", err)
	}
	l.hashes = append(l.hashes, hs...)
	l.leaves = append(l.leaves, append([]byte(nil), leaf...))
	return n, nil
}

// Size is the number of leaves.
func (l *MerkleLog) Size() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return int64(len(l.leaves))
}

// Leaf returns a copy of leaf i.
func (l *MerkleLog) Leaf(i int64) ([]byte, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if i < 0 || i >= int64(len(l.leaves)) {
		return nil, fmt.Errorf("leaf %d of %d: %w", i, len(l.leaves), ErrIndexOutOfRange)
	}
	return append([]byte(nil), l.leaves[i]...), nil
}

// Root returns the tree hash of the first n leaves.
func (l *MerkleLog) Root(n int64) (tlog.Hash, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n < 0 || n > int64(len(l.leaves)) {
		return tlog.Hash{}, fmt.Errorf("tree size %d of %d: %w", n, len(l.leaves), ErrIndexOutOfRange)
	}
	return tlog.TreeHash(n, tlog.HashReaderFunc(l.readHashes))
}

// ProveInclusion proves leaf i is in the tree of size n.
func (l *MerkleLog) ProveInclusion(i, n int64) (tlog.RecordProof, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n > int64(len(l.leaves)) || i < 0 || i >= n {
		return nil, fmt.Errorf("leaf %d in tree %d of %d: %w", i, n, len(l.leaves), ErrIndexOutOfRange)
	}
	return tlog.ProveRecord(n, i, tlog.HashReaderFunc(l.readHashes))
}

// ProveConsistency proves the tree of size m is a prefix of the tree of size n.
func (l *MerkleLog) ProveConsistency(m, n int64) (tlog.TreeProof, error) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if n > int64(len(l.leaves)) || m < 1 || m > n {
		return nil, fmt.Errorf("consistency %d..%d of %d: %w", m, n, len(l.leaves), ErrIndexOutOfRange)
	}
	return tlog.ProveTree(n, m, tlog.HashReaderFunc(l.readHashes))
}

// CheckInclusion verifies that leaf is entry i of the tree (n, root).
func CheckInclusion(p tlog.RecordProof, i, n int64, root tlog.Hash, leaf []byte) error {
	return tlog.CheckRecord(p, n, root, i, tlog.RecordHash(leaf))
}

// CheckConsistency verifies that (m, oldRoot) is a prefix of (n, newRoot).
func CheckConsistency(p tlog.TreeProof, m int64, oldRoot tlog.Hash, n int64, newRoot tlog.Hash) error {
	return tlog.CheckTree(p, n, newRoot, m, oldRoot)
}

// leavesCopy returns the leaf list (leaves are never modified once appended).
func (l *MerkleLog) leavesCopy() [][]byte {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return append([][]byte(nil), l.leaves...)
}
