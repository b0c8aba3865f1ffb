package cluster

import (
	"crypto/x509"
	"fmt"
	"io"
	"sync"

	"github.com/fedledger/fedledger/audit"
	"github.com/hashicorp/raft"
)

// ApplyResult is what FSM.Apply returns as the raft ApplyFuture response.
type ApplyResult struct {
	Index int64 // Merkle leaf index (existing index for an idempotent retry)
	Err   error // rule or decoding rejection; nothing was appended
}

// FSM adapts a Ledger to raft.FSM. Each raft log entry's Data is one
// encoded envelope. Snapshots are the ordered list of leaves; Restore
// replays them through a fresh Ledger, so a restored node re-checks every
// record and ends with the same root.
type FSM struct {
	mu     sync.RWMutex
	roots  *x509.CertPool
	ledger *audit.Ledger
}

var _ raft.FSM = (*FSM)(nil)

// NewFSM returns an FSM over an empty ledger.
func NewFSM(roots *x509.CertPool) *FSM { return &FSM{roots: roots, ledger: audit.NewLedger(roots)} }

// Ledger returns the current ledger (replaced wholesale by Restore).
func (f *FSM) Ledger() *audit.Ledger {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ledger
}

// Apply implements raft.FSM. Non-command entries are ignored.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	idx, err := f.Ledger().Apply(l.Data)
	return ApplyResult{Index: idx, Err: err}
}

type fsmSnapshot struct{ leaves [][]byte }

// Snapshot implements raft.FSM; it captures leaf references only (leaves
// are immutable), and Persist does the encoding.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{leaves: f.Ledger().Leaves()}, nil
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := sink.Write((&audit.Bundle{Leaves: s.leaves}).Marshal()); err != nil {
		sink.Cancel()
		return fmt.Errorf("audit: writing snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Restore implements raft.FSM: it decodes and replays a snapshot into a new
// ledger and swaps it in only if every leaf applies.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("audit: reading snapshot: %w", err)
	}
	b, err := audit.UnmarshalBundle(data)
	if err != nil {
		return fmt.Errorf("audit: snapshot: %w", err)
	}
	lg := audit.NewLedger(f.roots)
	for i, leaf := range b.Leaves {
		if _, err := lg.Apply(leaf); err != nil {
			return fmt.Errorf("audit: snapshot entry %d: %w", i, err)
		}
	}
	f.mu.Lock()
	f.ledger = lg
	f.mu.Unlock()
	return nil
}
