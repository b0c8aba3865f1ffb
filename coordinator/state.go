package coordinator

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/fedledger/fedledger/internal/model"
)

// Crash safety. The audit log is the source of truth for what happened: a
// round exists once its record is committed, and its record names its
// output model and the server optimiser's state after it, both kept in
// this coordinator's content-addressed model store. So on restart the
// coordinator reads where the study stands from the log, reloads those
// two objects by hash, and the study machine starts from there: a round
// that was in flight simply runs again (hospitals that already gave a
// decryption share for it refuse a second one, so at worst it is recorded
// as failed).
//
// The one thing the log cannot give back is the collective public key
// (the key-setup record holds its hash): it is kept in state/keysetup.json
// with the hospitals' signed confirmations, written before the key-setup
// record is appended, so a crash between the two re-appends the same
// record. The secret shares are only ever at the hospitals.

const keySetupFile = "keysetup.json"

type keySetupState struct {
	Study         string            `json:"study"`
	HEParams      string            `json:"he_params"`
	Threshold     int               `json:"threshold"`
	CollectiveKey string            `json:"collective_key_sha256"`
	Holders       []holderState     `json:"key_holders"`
	Certificates  map[string][]byte `json:"certificates"`
	Setup         []byte            `json:"public_setup"`
}

type holderState struct {
	Site      string `json:"site"`
	Point     uint64 `json:"point"`
	Signature []byte `json:"signature"`
}

func (c *Coordinator) stateDir() string { return filepath.Join(c.cfg.DataDir, "state") }

// saveKeySetup keeps the finished key setup, with the collective key
// computed from the participants' shares, before it is recorded.
func (c *Coordinator) saveKeySetup(k *study.KeySetup) error {
	c.mu.Lock()
	setup := c.pending
	c.mu.Unlock()
	if setup == nil || setup.KeyHash() != k.CollectiveKey {
		return errors.New("coordinator: the key setup to save is not the one computed")
	}
	b, err := setup.MarshalBinary()
	if err != nil {
		return err
	}
	f := keySetupState{Study: c.cfg.Study.ID, HEParams: k.HEParams, Threshold: k.Threshold, CollectiveKey: hex.EncodeToString(k.CollectiveKey[:]),
		Certificates: k.Certificates, Setup: b}
	for _, h := range k.Holders {
		f.Holders = append(f.Holders, holderState{Site: h.Site, Point: h.Point, Signature: h.Signature})
	}
	js, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.stateDir(), 0o700); err != nil {
		return err
	}
	if err := fsutil.WriteFileChecked(filepath.Join(c.stateDir(), keySetupFile), js, 0o600); err != nil {
		return fmt.Errorf("coordinator: saving the key setup: %w", err)
	}
	c.mu.Lock()
	c.setup, c.pending = setup, nil
	c.mu.Unlock()
	return nil
}

// loadKeySetup reads the saved key setup, if there is one, checking it is
// whole: the public setup's key must hash to the recorded key hash, every
// holder's certificate must parse and carry an Ed25519 key.
func (c *Coordinator) loadKeySetup() (*study.KeySetup, *secure.Setup, error) {
	path := filepath.Join(c.stateDir(), keySetupFile)
	b, err := fsutil.ReadFileChecked(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", study.ErrResume, err)
	}
	bad := func(format string, a ...any) (*study.KeySetup, *secure.Setup, error) {
		return nil, nil, fmt.Errorf("%w: %s is damaged: %s", study.ErrResume, path, fmt.Sprintf(format, a...))
	}
	var f keySetupState
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return bad("%v", err)
	}
	if f.Study != c.cfg.Study.ID {
		return bad("it is study %q's", f.Study)
	}
	setup, err := secure.UnmarshalSetup(f.Setup)
	if err != nil {
		return bad("%v", err)
	}
	key := setup.KeyHash()
	if hex.EncodeToString(key[:]) != f.CollectiveKey || setup.Study() != f.Study {
		return bad("its collective key does not hash to %s", f.CollectiveKey)
	}
	k := &study.KeySetup{HEParams: f.HEParams, Threshold: f.Threshold, CollectiveKey: key, Keys: map[string]ed25519.PublicKey{},
		Certificates: f.Certificates}
	for _, h := range f.Holders {
		if setup.Points()[h.Site] != h.Point {
			return bad("holder %q is not at point %d in the public setup", h.Site, h.Point)
		}
		k.Holders = append(k.Holders, audit.KeyHolder{Site: h.Site, Point: h.Point, Signature: h.Signature})
		pub, err := certKey(f.Certificates[h.Site])
		if err != nil {
			return bad("certificate of %q: %v", h.Site, err)
		}
		k.Keys[h.Site] = pub
	}
	if len(k.Holders) != len(setup.Points()) {
		return bad("%d holders for %d points", len(k.Holders), len(setup.Points()))
	}
	return k, setup, nil
}

func certKey(der []byte) (ed25519.PublicKey, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("key is %T, want Ed25519", cert.PublicKey)
	}
	return pub, nil
}

// resumeState is where the study starts: the log's state, with the
// objects it names reloaded from this coordinator's stores.
func (c *Coordinator) resumeState(l LogState, initial [32]byte, initialSize uint64) (study.Start, error) {
	st := c.cfg.Study
	s := study.Start{Round: l.Round, Completed: l.Completed, Failed: l.Failed, Started: l.Started,
		Model: study.Object{Hash: initial, Size: initialSize}, Excluded: l.Excluded, NormViolations: l.NormViolations}
	if l.Round > 0 {
		b, err := c.models.Get(l.Model)
		if err != nil {
			return s, fmt.Errorf("%w: round %d's model %x: %v", study.ErrResume, l.Round, l.Model[:8], err)
		}
		spec, _, err := model.Decode(b)
		if err != nil {
			return s, fmt.Errorf("%w: round %d's model: %v", study.ErrResume, l.Round, err)
		}
		if spec.String() != st.Model.String() {
			return s, fmt.Errorf("%w: stored model is %s, the study %s", study.ErrResume, spec, st.Model)
		}
		s.Model = study.Object{Hash: l.Model, Size: uint64(len(b))}
	}
	if l.Optimizer != (audit.Hash{}) {
		b, err := c.models.Get(l.Optimizer)
		if err != nil {
			return s, fmt.Errorf("%w: the server optimiser's state after round %d (%x): %v", study.ErrResume, l.Round, l.Optimizer[:8], err)
		}
		s.Optimizer = study.Object{Hash: l.Optimizer, Size: uint64(len(b))}
	}
	if !st.Secure() {
		return s, nil
	}
	saved, setup, err := c.loadKeySetup()
	if err != nil {
		return s, err
	}
	s.LoggedKeySetup, s.SavedKeySetup = l.KeySetup, saved
	if setup != nil {
		c.mu.Lock()
		c.setup = setup
		c.mu.Unlock()
	}
	return s, nil
}
