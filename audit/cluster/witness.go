package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
)

// witnessState is the node's witness memory, kept outside the Raft FSM in
// witness.json (fsutil.WriteFileChecked: JSON under a SHA-256 header
// line): the last checkpoint it cosigned and every inconsistent signed
// checkpoint it was shown.
type witnessState struct {
	mu       sync.Mutex
	path     string
	last     *audit.Checkpoint
	evidence [][]byte
}

type witnessFile struct {
	Last     string   `json:"last_cosigned,omitempty"`
	Evidence [][]byte `json:"evidence,omitempty"`
}

// openWitnessState reads witness.json (fsutil's checked format). A missing
// file is a node that never cosigned; a file that does not verify is an
// error naming it, never a reset: this memory is what stops the node from
// cosigning a rewritten history, and no other node can vouch for it.
func openWitnessState(path string) (*witnessState, error) {
	w := &witnessState{path: path}
	b, err := fsutil.ReadFileChecked(path)
	if errors.Is(err, os.ErrNotExist) {
		return w, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit node: witness state: %w (it records the last checkpoint this node cosigned and the evidence it kept: restore it from a backup; see docs/DEPLOYMENT.md before starting without it)", err)
	}
	var f witnessFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("audit node: witness state %s is corrupt: %w", path, err)
	}
	if f.Last != "" {
		c, err := audit.ParseCheckpoint(f.Last)
		if err != nil {
			return nil, fmt.Errorf("audit node: witness state %s: %w", path, err)
		}
		w.last = &c
	}
	w.evidence = f.Evidence
	return w, nil
}

// save writes the state atomically; the caller holds mu.
func (w *witnessState) save() error {
	f := witnessFile{Evidence: w.evidence}
	if w.last != nil {
		f.Last = w.last.String()
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := fsutil.WriteFileChecked(w.path, b, 0o600); err != nil {
		return fmt.Errorf("audit: witness state: %w", err)
	}
	return nil
}
