package coordinator

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/fedledger/fedledger/internal/model"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/internal/fsutil"
)

// Crash safety. The audit log is the source of truth for what happened:
// a round exists once its record is committed. The coordinator keeps, next
// to its model store, what it needs to carry on from any committed round:
//
//   - state/round-<r>.json: the server optimiser's state after round r
//     (written before round r's record is appended), and
//   - state/keys.json: the public key material of the study's key setup
//     (written before the key-setup record is appended; the secret shares
//     are only ever at the hospitals).
//
// On restart, the recorder says which round the log has last committed;
// the coordinator reloads that round's model from its store and optimiser
// state, skips key setup if it is done, and announces the next round. A
// round that was in flight is simply run again; hospitals that already
// gave a decryption share for it refuse a second one, so at worst that
// round fails and is recorded as failed, and the study goes on.

// ErrResume: the coordinator cannot carry on from the log's state.
var ErrResume = errors.New("coordinator: cannot resume the study")

// Resume is where a study stands on the log when the coordinator starts.
type Resume struct {
	// Round is the last committed round (0: none).
	Round uint64
	// Model is that round's output (or the initial model).
	Model [32]byte
}

type roundState struct {
	Round     uint64          `json:"round"`
	Model     string          `json:"model_sha256"`
	Optimizer json.RawMessage `json:"optimizer,omitempty"`
}

type keysState struct {
	Preset string            `json:"he_preset"`
	Points map[string]uint64 `json:"points"`
	Key    []byte            `json:"collective_public_key"`
}

func (c *Coordinator) stateDir() string { return filepath.Join(c.cfg.DataDir, "state") }

// writeState writes a state file atomically.
func (c *Coordinator) writeState(name string, v any) error {
	if err := os.MkdirAll(c.stateDir(), 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(filepath.Join(c.stateDir(), name), b, 0o600); err != nil {
		return fmt.Errorf("coordinator: state %s: %w", name, err)
	}
	return nil
}

func (c *Coordinator) readState(name string, v any) error {
	b, err := os.ReadFile(filepath.Join(c.stateDir(), name))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: state file %s is corrupt: %v", ErrResume, name, err)
	}
	return nil
}

// optimizer is the server optimiser of the study, in either mode.
func (d *driver) optimizer() *aggregation.ServerOptimizer {
	if d.opt != nil {
		return d.opt
	}
	if p, ok := d.agg.(*PlaintextAggregator); ok {
		return p.opt
	}
	return nil
}

func (d *driver) setOptimizer(o *aggregation.ServerOptimizer) {
	if d.opt != nil {
		d.opt = o
	} else if p, ok := d.agg.(*PlaintextAggregator); ok {
		p.opt = o
	}
}

// saveRound persists what is needed to resume after round r.
func (d *driver) saveRound(r uint64) error {
	st := roundState{Round: r, Model: hex.EncodeToString(d.parent[:])}
	if o := d.optimizer(); o != nil {
		b, err := o.MarshalState()
		if err != nil {
			return err
		}
		st.Optimizer = b
	}
	return d.writeState(fmt.Sprintf("round-%d.json", r), st)
}

// saveKeys persists the key setup's public material.
func (d *driver) saveKeys(ks *keyState) error {
	b, err := ks.pk.MarshalBinary()
	if err != nil {
		return err
	}
	return d.writeState("keys.json", keysState{Preset: ks.preset.ID, Points: ks.points, Key: b})
}

// resume reloads the state of the log's last committed round.
func (d *driver) resume(res Resume) error {
	st := d.cfg.Study
	if res.Round > uint64(st.Rounds) {
		return fmt.Errorf("%w: the log has %d rounds, the study %d", ErrResume, res.Round, st.Rounds)
	}
	b, err := d.store.Get(res.Model)
	if err != nil {
		return fmt.Errorf("%w: round %d's model %x: %v", ErrResume, res.Round, res.Model[:8], err)
	}
	spec, params, err := model.Decode(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrResume, err)
	}
	if spec.String() != st.Model.String() {
		return fmt.Errorf("%w: stored model is %s, the study %s", ErrResume, spec, st.Model)
	}
	var rs roundState
	if err := d.readState(fmt.Sprintf("round-%d.json", res.Round), &rs); err != nil {
		return fmt.Errorf("%w: optimiser state after round %d: %v", ErrResume, res.Round, err)
	}
	if rs.Model != hex.EncodeToString(res.Model[:]) {
		return fmt.Errorf("%w: state of round %d is for model %s, the log says %x", ErrResume, res.Round, rs.Model[:16], res.Model[:8])
	}
	if len(rs.Optimizer) > 0 {
		o, err := aggregation.RestoreServerOptimizer(rs.Optimizer)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrResume, err)
		}
		d.setOptimizer(o)
	}
	d.params, d.parent, d.size = params, res.Model, uint64(len(b))
	d.firstRound = res.Round + 1
	return nil
}

// loadKeys reloads a finished key setup, if there is one on disk.
func (d *driver) loadKeys() (*keyState, error) {
	var s keysState
	if err := d.readState("keys.json", &s); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	preset, err := secure.LookupPreset(s.Preset)
	if err != nil {
		return nil, err
	}
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	ks := &keyState{preset: preset, points: s.Points, pk: rlwe.NewPublicKey(params)}
	if err := ks.pk.UnmarshalBinary(s.Key); err != nil {
		return nil, fmt.Errorf("%w: collective key: %v", ErrResume, err)
	}
	if ks.pkHash, err = secure.PublicKeyHash(ks.pk); err != nil {
		return nil, err
	}
	for id := range s.Points {
		ks.order = append(ks.order, id)
	}
	slices.Sort(ks.order)
	if ks.count, err = secure.CiphertextCount(preset, d.cfg.Study.Model.NumParams()); err != nil {
		return nil, err
	}
	return ks, nil
}
