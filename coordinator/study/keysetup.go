package study

import (
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"

	"github.com/fedledger/fedledger/audit"
)

// Key setup, secure studies only, once before round 1: the sites connected
// now are the participants, each with a Shamir point; every one must see
// it through (N of N), so a participant that leaves or refuses, or the
// deadline, ends the study with the reason. The coordinator only relays:
// KeySetupTask → one signed KeyShare from each → every participant's
// PeerKeys to all (once the driver has computed the collective key from
// the shares) → sealed Shamir shares relayed by recipient → a signed
// KeySetupDone from each naming the same key. The key setup is then saved
// and recorded on the audit log, with every participant's signature,
// before round 1.

type keySetup struct {
	participants []Participant
	points       map[string]uint64
	byPoint      map[uint64]string
	shares       map[string]KeyShareIn
	computing    bool
	key          audit.Hash
	computed     bool
	relayed      map[[2]uint64]bool
	done         map[string]KeyDoneIn
	saving       bool
}

func (m *Machine) beginKeySetup() []Action {
	sites := sortedKeys(m.live)
	if len(sites) < m.needed() {
		return m.fail(fmt.Errorf("%w: %d clients connected, the threshold t=%d and K=%d need more", ErrKeySetup, len(sites), m.cfg.Threshold, m.cfg.K))
	}
	ks := &keySetup{points: map[string]uint64{}, byPoint: map[uint64]string{}, shares: map[string]KeyShareIn{},
		relayed: map[[2]uint64]bool{}, done: map[string]KeyDoneIn{}}
	for i, s := range sites {
		p := uint64(i + 1)
		ks.participants = append(ks.participants, Participant{Site: s, Point: p})
		ks.points[s], ks.byPoint[p] = p, s
	}
	m.ks = ks
	m.setPhase(PhaseKeySetup)
	m.deadline = m.now.Add(m.cfg.KeySetupTimeout)
	acts := []Action{logf(slog.LevelInfo, "key setup started", "participants", sites, "threshold", m.cfg.Threshold, "he_preset", m.cfg.HEParams)}
	for _, s := range sites {
		acts = append(acts, Send{To: s, Msg: KeySetupTask{Participants: slices.Clone(ks.participants), Deadline: m.deadline}})
	}
	return acts
}

func (m *Machine) keySetupFailed(format string, a ...any) []Action {
	return m.fail(fmt.Errorf("%w: %s", ErrKeySetup, fmt.Sprintf(format, a...)))
}

func (m *Machine) stepKeySetup(ev Event) ([]Action, error) {
	if err := m.refuseOutOfPhase(ev); err != nil {
		return nil, err
	}
	ks := m.ks
	switch e := ev.(type) {
	case Tick:
		if !m.now.Before(m.deadline) && !ks.saving {
			return m.keySetupFailed("deadline passed with %d of %d key shares and %d of %d confirmations", len(ks.shares), len(ks.points), len(ks.done), len(ks.points)), nil
		}
	case Left:
		if _, ok := ks.points[e.Site]; ok && !ks.saving {
			return m.keySetupFailed("participant %q disconnected", e.Site), nil
		}
	case Refused:
		if _, ok := ks.points[e.Site]; ok && !ks.saving {
			return m.keySetupFailed("participant %q refused: %s", e.Site, e.Reason), nil
		}
	case KeyShareIn:
		return m.onKeyShare(e), nil
	case CollectiveKeyDone:
		return m.onCollectiveKey(e), nil
	case ShareBoxIn:
		return m.onShareBox(e), nil
	case KeyDoneIn:
		return m.onKeyDone(e), nil
	case KeySetupSaved:
		if e.Err != nil {
			return m.fail(fmt.Errorf("coordinator: saving the key setup: %w", e.Err)), nil
		}
		return m.record(Record{KeySetup: m.keys}, true), nil
	}
	return nil, nil
}

func (m *Machine) onKeyShare(e KeyShareIn) []Action {
	ks := m.ks
	point, member := ks.points[e.From.Site]
	switch {
	case !member:
		return []Action{logf(slog.LevelWarn, "key share from a non-participant ignored", "client", e.From.Site)}
	case e.Point != point:
		return m.keySetupFailed("%q sent a key share for point %d; it is point %d", e.From.Site, e.Point, point)
	case !verify(e.From.Key, audit.KeyShareMessage(m.cfg.Study, e.From.Site, e.Point, e.X25519, sha256.Sum256(e.PkShare)), e.Signature):
		return m.keySetupFailed("key share of %q is not signed by its certificate key", e.From.Site)
	}
	if _, dup := ks.shares[e.From.Site]; dup {
		return nil
	}
	ks.shares[e.From.Site] = e
	if len(ks.shares) < len(ks.points) {
		return nil
	}
	ks.computing = true
	act := ComputeCollectiveKey{Participants: slices.Clone(ks.participants)}
	for _, p := range ks.participants {
		act.PkShares = append(act.PkShares, ks.shares[p.Site].PkShare)
	}
	return []Action{act}
}

func (m *Machine) onCollectiveKey(e CollectiveKeyDone) []Action {
	ks := m.ks
	if !ks.computing || ks.computed {
		return nil
	}
	if e.Err != nil {
		return m.keySetupFailed("the key shares do not make a collective key: %v", e.Err)
	}
	ks.key, ks.computed = e.Hash, true
	keys := make([]PeerKey, 0, len(ks.participants))
	for _, p := range ks.participants {
		s := ks.shares[p.Site]
		keys = append(keys, PeerKey{Site: p.Site, Cert: s.From.Cert, Point: p.Point, X25519: s.X25519, PkShare: s.PkShare, Signature: s.Signature})
	}
	var acts []Action
	for _, p := range ks.participants {
		acts = append(acts, Send{To: p.Site, Msg: PeerKeys{Keys: keys}})
	}
	return acts
}

func (m *Machine) onShareBox(e ShareBoxIn) []Action {
	ks := m.ks
	from, member := ks.points[e.Site]
	to, ok := ks.byPoint[e.To]
	switch {
	case !member:
		return nil
	case e.From != from || !ok || to == e.Site:
		return m.keySetupFailed("%q sent a share box from point %d to point %d; it is point %d", e.Site, e.From, e.To, from)
	case ks.relayed[[2]uint64{from, e.To}]:
		return m.keySetupFailed("%q sent two share boxes for point %d", e.Site, e.To)
	}
	ks.relayed[[2]uint64{from, e.To}] = true
	return []Action{Send{To: to, Msg: ShareBox{From: from, To: e.To, Box: e.Box}}}
}

func (m *Machine) onKeyDone(e KeyDoneIn) []Action {
	ks := m.ks
	if _, member := ks.points[e.Site]; !member {
		return nil
	}
	if !ks.computed {
		return m.keySetupFailed("%q confirmed a key before the key shares were relayed", e.Site)
	}
	if e.CollectiveKey != ks.key {
		return m.keySetupFailed("%q computed collective key %s, the coordinator %s", e.Site, short(e.CollectiveKey), short(ks.key))
	}
	holders := m.holders(nil)
	msg := audit.KeySetupMessage(m.cfg.Study, m.cfg.HEParams, uint32(m.cfg.Threshold), ks.key, holders)
	if !verify(ks.shares[e.Site].From.Key, msg, e.Signature) {
		return m.keySetupFailed("the key setup confirmation of %q is not signed by its certificate key", e.Site)
	}
	if _, dup := ks.done[e.Site]; dup {
		return nil
	}
	ks.done[e.Site] = e
	if len(ks.done) < len(ks.points) {
		return nil
	}
	// Everyone holds the same key: bind the participants' identities for
	// the rest of the study and keep the key setup before recording it.
	k := &KeySetup{HEParams: m.cfg.HEParams, Threshold: m.cfg.Threshold, CollectiveKey: ks.key, Holders: m.holders(ks.done),
		Keys: map[string]ed25519.PublicKey{}, Certificates: map[string][]byte{}}
	for _, p := range ks.participants {
		k.Keys[p.Site], k.Certificates[p.Site] = ks.shares[p.Site].From.Key, ks.shares[p.Site].From.Cert
	}
	m.keys, ks.saving = k, true
	return []Action{
		logf(slog.LevelInfo, "key setup done", "collective_key", fmt.Sprintf("%x", ks.key[:]), "participants", len(ks.points),
			"threshold", m.cfg.Threshold),
		Observe{Metric: MetricKeySetupSeconds, Value: m.now.Sub(m.phaseAt).Seconds()},
		SaveKeySetup{KeySetup: k},
	}
}

// holders lists the participants by point, with their confirmations when
// done is given.
func (m *Machine) holders(done map[string]KeyDoneIn) []audit.KeyHolder {
	out := make([]audit.KeyHolder, 0, len(m.ks.participants))
	for _, p := range m.ks.participants {
		h := audit.KeyHolder{Site: p.Site, Point: p.Point}
		if done != nil {
			h.Signature = done[p.Site].Signature
		}
		out = append(out, h)
	}
	return out
}

func verify(key ed25519.PublicKey, msg, sig []byte) bool {
	return len(key) == ed25519.PublicKeySize && ed25519.Verify(key, msg, sig)
}
