package cluster

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/fedledger/fedledger/audit"
	"github.com/hashicorp/raft"
)

// ApplyResult is what FSM.Apply returns as the raft ApplyFuture response.
type ApplyResult struct {
	Index int64 // Merkle leaf index (existing index for an idempotent retry)
	Err   error // rule or decoding rejection (nothing was appended), or a *CorruptionError
}

// ErrHalted: the FSM found a corrupt entry and applies nothing more.
var ErrHalted = errors.New("audit: replica halted after detecting corruption")

// FSM adapts a Ledger to raft.FSM. Each raft command entry's Data is one
// framed envelope (frameCommand: a version byte, the envelope's SHA-256,
// the envelope). Snapshots are the ordered list of leaves; Restore
// replays them through a fresh Ledger, so a restored node re-checks every
// record and ends with the same root.
//
// A command whose frame does not verify is corruption, not a rule
// rejection: skipping it would make this replica diverge silently, so the
// FSM halts instead. It reports the *CorruptionError, applies nothing more
// and refuses to snapshot; the node then stops (see Node.Done), and its
// next start finds the damage in its store and recovers from the quorum.
type FSM struct {
	mu        sync.RWMutex
	roots     *x509.CertPool
	ledger    *audit.Ledger
	halted    error
	onCorrupt func(*CorruptionError)
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

// Halted returns the corruption that halted the FSM, or nil.
func (f *FSM) Halted() error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.halted
}

// Apply implements raft.FSM. Non-command entries are ignored.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	if err := f.Halted(); err != nil {
		return ApplyResult{Err: fmt.Errorf("%w: %w", ErrHalted, err)}
	}
	leaf, err := unframeCommand(l.Data)
	if err != nil {
		ce := &CorruptionError{Check: "frame", RaftIndex: l.Index, LeafIndex: f.Ledger().Log().Size(), Err: err}
		f.mu.Lock()
		f.halted = ce
		f.mu.Unlock()
		if f.onCorrupt != nil {
			f.onCorrupt(ce)
		}
		return ApplyResult{Err: ce}
	}
	idx, err := f.Ledger().Apply(leaf)
	return ApplyResult{Index: idx, Err: err}
}

type fsmSnapshot struct{ leaves [][]byte }

// Snapshot implements raft.FSM; it captures leaf references only (leaves
// are immutable), and Persist does the encoding. A halted FSM refuses: its
// state may lack an entry the others applied.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	if err := f.Halted(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHalted, err)
	}
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
	lg, err := restoreLedger(rc, f.roots)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.ledger = lg
	f.mu.Unlock()
	return nil
}

// restoreLedger replays a snapshot's leaves into a new ledger; every one
// must apply.
func restoreLedger(r io.Reader, roots *x509.CertPool) (*audit.Ledger, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("audit: reading snapshot: %w", err)
	}
	b, err := audit.UnmarshalBundle(data)
	if err != nil {
		return nil, fmt.Errorf("audit: snapshot: %w", err)
	}
	lg := audit.NewLedger(roots)
	for i, leaf := range b.Leaves {
		if _, err := lg.Apply(leaf); err != nil {
			return nil, fmt.Errorf("audit: snapshot entry %d: %w", i, err)
		}
	}
	return lg, nil
}
