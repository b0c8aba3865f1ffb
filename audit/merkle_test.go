package audit

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestMerkleLogProofs(t *testing.T) {
	l := NewMerkleLog()
	empty, err := l.Root(0)
	if err != nil {
		t.Fatal(err)
	}
	if empty != tlog.Hash(sha256.Sum256(nil)) {
		t.Fatalf("empty root %v is not SHA-256 of the empty string (RFC 6962)", empty)
	}
	const N = 37
	leaves := make([][]byte, N)
	roots := make([]tlog.Hash, N+1)
	roots[0] = empty
	for i := range leaves {
		leaves[i] = []byte(fmt.Sprintf("leaf-%d", i))
		idx, err := l.Append(leaves[i])
		if err != nil || idx != int64(i) {
			t.Fatalf("Append %d: idx %d err %v", i, idx, err)
		}
		if roots[i+1], err = l.Root(int64(i + 1)); err != nil {
			t.Fatal(err)
		}
	}
	// RFC 6962: a one-leaf tree's root is the leaf hash H(0x00 || leaf).
	if roots[1] != tlog.Hash(sha256.Sum256(append([]byte{0}, leaves[0]...))) {
		t.Fatal("one-leaf root is not the RFC 6962 leaf hash")
	}
	for n := int64(1); n <= N; n++ {
		for i := int64(0); i < n; i++ {
			p, err := l.ProveInclusion(i, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckInclusion(p, i, n, roots[n], leaves[i]); err != nil {
				t.Fatalf("inclusion %d in %d: %v", i, n, err)
			}
			if err := CheckInclusion(p, i, n, roots[n], []byte("forged")); err == nil {
				t.Fatalf("forged leaf %d in %d accepted", i, n)
			}
		}
		for m := int64(1); m <= n; m++ {
			p, err := l.ProveConsistency(m, n)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckConsistency(p, m, roots[m], n, roots[n]); err != nil {
				t.Fatalf("consistency %d..%d: %v", m, n, err)
			}
			if m < n {
				if err := CheckConsistency(p, m, roots[m-1], n, roots[n]); err == nil {
					t.Fatalf("consistency %d..%d accepted a wrong old root", m, n)
				}
			}
		}
	}
	// A rewritten history (one leaf changed) has a different root and no
	// consistency proof from the real one verifies against it.
	fork := NewMerkleLog()
	for i, leaf := range leaves {
		if i == 5 {
			leaf = []byte("rewritten")
		}
		fork.Append(leaf)
	}
	forkRoot, _ := fork.Root(N)
	if forkRoot == roots[N] {
		t.Fatal("rewritten history has the same root")
	}
	p, _ := fork.ProveConsistency(10, N)
	if err := CheckConsistency(p, 10, roots[10], N, forkRoot); err == nil {
		t.Fatal("rewritten history proved consistent with the original")
	}
	if _, err := l.ProveInclusion(N, N); !errors.Is(err, ErrIndexOutOfRange) {
		t.Fatalf("out of range inclusion: %v", err)
	}
	if _, err := l.Leaf(-1); !errors.Is(err, ErrIndexOutOfRange) {
		t.Fatalf("Leaf(-1): %v", err)
	}
	if _, err := l.ProveConsistency(0, N); !errors.Is(err, ErrIndexOutOfRange) {
		t.Fatalf("consistency from 0: %v", err)
	}
}
