package secure

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/tuneinsight/lattigo/v5/mhe"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
)

// The hospital's role. A KeySetup takes a hospital through the collective
// key generation; it ends in a Participant, which holds the hospital's
// secret material (secret-key share and t-of-N Shamir share, never sent
// anywhere) with the study's public Setup, encrypts the hospital's
// contributions and answers decryption tasks through its ShareGuard.

// KeyShare is what a hospital sends at the start of key setup: its
// public-key share envelope and a fresh X25519 key for receiving Shamir
// shares. The caller signs both (audit.KeyShareMessage).
type KeyShare struct {
	PkShare []byte
	X25519  []byte
}

// KeySetup is one hospital's key setup in progress.
type KeySetup struct {
	study     string
	preset    Preset
	crs       []byte
	threshold int
	dim       int
	self      string
	point     uint64
	points    map[string]uint64 // every participant's Shamir point
	order     []string          // participants by point
	party     *Party
	x25519    *ecdh.PrivateKey
	pkShares  map[string][]byte
	xkeys     map[string]*ecdh.PublicKey
	setup     *Setup
	own       mhe.ShamirSecretShare
	boxes     map[uint64][]byte
}

// StartKeySetup begins key setup for self among participants (site →
// Shamir point) for a model of dim parameters: a fresh secret-key share,
// its public-key share for the study's CRS, and an X25519 key.
func StartKeySetup(study, presetID string, crs []byte, threshold, dim int, participants map[string]uint64, self string) (*KeySetup, KeyShare, error) {
	preset, err := LookupPreset(presetID)
	if err != nil {
		return nil, KeyShare{}, err
	}
	if threshold < 2 || threshold > len(participants) {
		return nil, KeyShare{}, fmt.Errorf("%w: threshold t=%d for %d participants; 2 <= t <= N", ErrInput, threshold, len(participants))
	}
	// Any two active sets of a majority overlap, and the hospital in both
	// answers a round once: without that, two disjoint sets could decrypt
	// two different sums of one round (say, with and without one
	// contribution), and their difference is one hospital's update.
	if 2*threshold <= len(participants) {
		return nil, KeyShare{}, fmt.Errorf("%w: threshold t=%d of %d key holders is not a majority; two disjoint sets of t could decrypt two sums of one round whose difference is one hospital's update", ErrInput, threshold, len(participants))
	}
	k := &KeySetup{study: study, preset: preset, crs: crs, threshold: threshold, dim: dim, self: self, points: map[string]uint64{},
		pkShares: map[string][]byte{}, xkeys: map[string]*ecdh.PublicKey{}, boxes: map[uint64][]byte{}}
	seen := map[uint64]bool{}
	for site, p := range participants {
		if p == 0 || seen[p] {
			return nil, KeyShare{}, fmt.Errorf("%w: participant list repeats point %d or uses 0", ErrInput, p)
		}
		seen[p] = true
		k.points[site] = p
		k.order = append(k.order, site)
	}
	slices.SortFunc(k.order, func(a, b string) int { return int(k.points[a]) - int(k.points[b]) })
	if k.point = k.points[self]; k.point == 0 {
		return nil, KeyShare{}, fmt.Errorf("%w: %q is not among the key-setup participants", ErrInput, self)
	}
	if k.party, err = NewParty(preset, k.point); err != nil {
		return nil, KeyShare{}, err
	}
	share, err := k.party.PublicKeyShare(crs)
	if err != nil {
		return nil, KeyShare{}, err
	}
	env, err := SealPublicKeyShare(preset, study, share)
	if err != nil {
		return nil, KeyShare{}, err
	}
	if k.x25519, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
		return nil, KeyShare{}, err
	}
	return k, KeyShare{PkShare: env, X25519: k.x25519.PublicKey().Bytes()}, nil
}

// Point is this hospital's Shamir point.
func (k *KeySetup) Point() uint64 { return k.point }

// AddPeer takes one participant's relayed key share (the caller has
// checked its signature against the participant's certificate). Once every
// participant's is in, it computes the collective key itself and returns
// this hospital's Shamir shares for the others, each sealed to its
// recipient's X25519 key (by recipient point); until then it returns nil.
func (k *KeySetup) AddPeer(site string, pkShare, x25519 []byte) (map[uint64][]byte, error) {
	if _, ok := k.points[site]; !ok {
		return nil, fmt.Errorf("%w: %q is not a participant", ErrInput, site)
	}
	if k.setup != nil {
		return nil, fmt.Errorf("%w: key share of %q after the collective key was computed", ErrInput, site)
	}
	if _, dup := k.pkShares[site]; dup {
		return nil, fmt.Errorf("%w: second key share of %q", ErrInput, site)
	}
	if _, err := OpenPublicKeyShare(pkShare, k.preset, k.study); err != nil {
		return nil, fmt.Errorf("key share of %q: %w", site, err)
	}
	xk, err := ecdh.X25519().NewPublicKey(x25519)
	if err != nil {
		return nil, fmt.Errorf("X25519 key of %q: %w", site, err)
	}
	if site == k.self && !slices.Equal(x25519, k.x25519.PublicKey().Bytes()) {
		return nil, errors.New("secure: the relayed key share in this site's name is not the one it sent")
	}
	k.pkShares[site], k.xkeys[site] = pkShare, xk
	if len(k.pkShares) < len(k.points) {
		return nil, nil
	}
	shares := make([][]byte, len(k.order))
	recipients := make([]uint64, len(k.order))
	for i, site := range k.order {
		shares[i], recipients[i] = k.pkShares[site], k.points[site]
	}
	if k.setup, err = NewSetup(k.study, k.preset.ID, k.crs, k.points, k.order, shares, k.dim); err != nil {
		return nil, err
	}
	shamir, err := k.party.ThresholdShares(k.threshold, recipients)
	if err != nil {
		return nil, err
	}
	out := map[uint64][]byte{}
	for _, site := range k.order {
		to := k.points[site]
		if to == k.point {
			k.own = shamir[to]
			continue
		}
		if out[to], err = SealShare(k.xkeys[site], k.study, k.point, to, shamir[to]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// KeyHash is the collective key's hash, once every key share is in.
func (k *KeySetup) KeyHash() ([32]byte, bool) {
	if k.setup == nil {
		return [32]byte{}, false
	}
	return k.setup.KeyHash(), true
}

// AddBox takes a sealed Shamir share addressed to this hospital. Once it
// has one from every other participant (and the collective key), it opens
// them, derives its t-of-N share and returns the finished Participant;
// until then nil.
func (k *KeySetup) AddBox(from uint64, box []byte) (*Participant, error) {
	if from == k.point || !slices.ContainsFunc(k.order, func(s string) bool { return k.points[s] == from }) {
		return nil, fmt.Errorf("%w: share box from point %d is not from another participant", ErrInput, from)
	}
	if _, dup := k.boxes[from]; dup {
		return nil, fmt.Errorf("%w: second share box from point %d", ErrInput, from)
	}
	k.boxes[from] = box
	if len(k.boxes) < len(k.points)-1 || k.setup == nil {
		return nil, nil
	}
	received := map[uint64]mhe.ShamirSecretShare{k.point: k.own}
	for from, box := range k.boxes {
		sender, share, err := OpenShare(k.x25519, k.study, k.point, box)
		if err != nil {
			return nil, fmt.Errorf("share box from point %d: %w", from, err)
		}
		if sender != from {
			return nil, fmt.Errorf("%w: share box relayed as from point %d was sealed by point %d", ErrBox, from, sender)
		}
		received[from] = share
	}
	if err := k.party.SetThresholdShares(k.threshold, received); err != nil {
		return nil, err
	}
	return &Participant{Setup: k.setup, party: k.party, self: k.self}, nil
}

// Participant is a hospital's finished key material for one study.
type Participant struct {
	// Setup is the study's public key material.
	Setup *Setup
	party *Party
	self  string
	guard *ShareGuard
	// dir is where Save wrote (or LoadParticipant read) the key material;
	// the contribution last sent is kept there too.
	dir string
	mu  sync.Mutex
}

// Threshold is t.
func (p *Participant) Threshold() int { return p.party.threshold }

// Point is this hospital's Shamir point.
func (p *Participant) Point() uint64 { return uint64(p.party.point) }

// nonce is round's nonce: the public polynomials of its chunks.
func (p *Participant) nonce(round uint64) Nonce {
	return Nonce{KeyHash: p.Setup.keyHash, Study: p.Setup.study, Round: round}
}

// Contribute encrypts the hospital's weighted update n·Δ (vector) and its
// weight n for round, trained from parent: the contribution payload.
//
// A round's public polynomials are fixed by (key, study, round), so a
// second, different update for the same round would give away the
// difference of the two. The participant therefore keeps the contribution
// it sent (before returning it): asked again for the same round and
// parent, it returns the same bytes whatever vector it is given; for the
// same round and another parent, or an earlier round, it refuses.
func (p *Participant) Contribute(round uint64, parent []byte, vector []float64, weight float64) ([]byte, error) {
	if len(vector) != p.Setup.dim {
		return nil, fmt.Errorf("%w: %d values, the study's model has %d", ErrInput, len(vector), p.Setup.dim)
	}
	if p.dir == "" {
		return nil, fmt.Errorf("%w: the participant has no directory to keep its contributions in; Save it first", ErrInput)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	path := filepath.Join(p.dir, contributionFile)
	last, err := readContribution(path)
	if err != nil {
		return nil, err
	}
	if last != nil {
		switch {
		case last.round == round && bytes.Equal(last.parent, parent):
			return last.payload, nil
		case last.round == round:
			return nil, fmt.Errorf("%w: round %d was already encrypted for parent %x; a second update under the same public polynomials would reveal both", ErrInput, round, last.parent[:min(8, len(last.parent))])
		case last.round > round:
			return nil, fmt.Errorf("%w: round %d is behind round %d, already contributed to", ErrInput, round, last.round)
		}
	}
	polys, err := p.party.Encrypt(p.nonce(round), vector, weight)
	if err != nil {
		return nil, err
	}
	payload, err := SealPayload(KindContribution, p.Setup.preset, p.Setup.study, round, polys)
	if err != nil {
		return nil, err
	}
	if err := writeContribution(path, contribution{round: round, parent: parent, payload: payload}); err != nil {
		return nil, err
	}
	return payload, nil
}

// Sketch is this hospital's sketch of the contribution it sent for the
// manifest's round, against the manifest's aggregate (see sketch.go). The
// manifest must list, as this site's, the contribution the participant
// kept; the sketch is a linear function of that contribution, which the
// coordinator already holds, so computing it again for another aggregate
// reveals nothing new.
func (p *Participant) Sketch(m Manifest) ([]byte, error) {
	if m.Study != p.Setup.study {
		return nil, fmt.Errorf("%w: sketch for study %q, this key is %q's", ErrManifest, m.Study, p.Setup.study)
	}
	i := slices.IndexFunc(m.Contributions, func(c audit.Contribution) bool { return c.Site == p.self })
	if i < 0 {
		return nil, fmt.Errorf("%w: the manifest of round %d does not list %q", ErrManifest, m.Round, p.self)
	}
	if p.dir == "" {
		return nil, fmt.Errorf("%w: the participant has no directory with its contributions", ErrInput)
	}
	p.mu.Lock()
	last, err := readContribution(filepath.Join(p.dir, contributionFile))
	p.mu.Unlock()
	switch {
	case err != nil:
		return nil, err
	case last == nil || last.round != m.Round:
		return nil, fmt.Errorf("%w: %q sent no contribution to round %d", ErrManifest, p.self, m.Round)
	case sha256.Sum256(last.payload) != m.Contributions[i].UpdateHash:
		h := sha256.Sum256(last.payload)
		return nil, fmt.Errorf("%w: the manifest lists %x as %q's contribution to round %d; it sent %x", ErrManifest,
			m.Contributions[i].UpdateHash[:8], p.self, m.Round, h[:8])
	}
	m.Count = p.Setup.count
	return SketchPayload(last.payload, Expect{Kind: KindContribution, Preset: p.Setup.preset, Study: m.Study, Round: m.Round, Count: uint32(m.Count)}, SketchChallenge(m))
}

// OpenGuard attaches the hospital's decryption rules (see ShareGuard).
// Count comes from the study's model, not from the coordinator.
func (p *Participant) OpenGuard(cfg GuardConfig) error {
	g, err := OpenShareGuard(cfg)
	p.guard = g
	return err
}

// Answer is the hospital's answer to a decryption task: its guard checks
// the manifest and that the aggregate is the sum of the listed
// contributions (by their signed sketches, pulling with fetch those that
// have none), and only then does it compute its decryption shares for
// the listed contributors and the active set of exactly t points; it
// returns the share payload (the same bytes again if asked again for the
// same aggregate and active set) and how the aggregate was checked. A
// refusal is an error wrapping ErrManifest, ErrAlreadyShared or
// ErrAggregate; any other error leaves the round unanswered.
func (p *Participant) Answer(m Manifest, active []uint64, aggregate []byte, fetch Fetcher) ([]byte, Verification, error) {
	if p.guard == nil {
		return nil, Verification{}, fmt.Errorf("%w: no decryption guard is open", ErrInput)
	}
	if m.Study != p.Setup.study {
		return nil, Verification{}, fmt.Errorf("%w: task for study %q, this key is %q's", ErrManifest, m.Study, p.Setup.study)
	}
	m.Count = p.Setup.count
	contributors := make([]uint64, len(m.Contributions))
	for i, c := range m.Contributions {
		point, ok := p.Setup.points[c.Site]
		if !ok {
			return nil, Verification{}, fmt.Errorf("%w: %q is not a key holder of this study", ErrManifest, c.Site)
		}
		contributors[i] = point
	}
	return p.guard.Answer(m, p.Setup.preset, active, fetch, aggregate, func() ([]byte, error) {
		shares, err := p.party.DecryptionShares(p.nonce(m.Round), contributors, active, p.Setup.count)
		if err != nil {
			return nil, err
		}
		return SealPayload(KindDecryptionShare, p.Setup.preset, p.Setup.study, m.Round, shares)
	})
}

// Files a participant keeps in its directory: the secret share (0600) and
// the public setup, written atomically.
const (
	secretFile       = "share.key"
	setupFile        = "setup.bin"
	contributionFile = "contribution.bin"
)

// Save writes the participant's secret share (mode 0600) and public setup
// into dir, replacing those of an earlier key setup.
func (p *Participant) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := p.Setup.MarshalBinary()
	if err != nil {
		return err
	}
	if err := p.party.Save(filepath.Join(dir, secretFile)); err != nil {
		return err
	}
	if err := fsutil.WriteFileChecked(filepath.Join(dir, setupFile), b, 0o600); err != nil {
		return err
	}
	// A new key's rounds start afresh.
	if err := os.Remove(filepath.Join(dir, contributionFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	p.dir = dir
	return nil
}

// contribution is the last contribution a participant sent.
type contribution struct {
	round   uint64
	parent  []byte
	payload []byte
}

// The contribution file: "FLCB\x01" | u64 round | u8 len, parent | payload.
const contributionMagic = "FLCB\x01"

func writeContribution(path string, c contribution) error {
	if len(c.parent) > 255 {
		return fmt.Errorf("%w: parent id of %d bytes", ErrInput, len(c.parent))
	}
	b := binary.BigEndian.AppendUint64([]byte(contributionMagic), c.round)
	b = append(append(b, byte(len(c.parent))), c.parent...)
	if err := fsutil.WriteFileChecked(path, append(b, c.payload...), 0o600); err != nil {
		return fmt.Errorf("secure: keeping the contribution: %w", err)
	}
	return nil
}

// readContribution reads the contribution file; nil if there is none.
func readContribution(path string) (*contribution, error) {
	b, err := fsutil.ReadFileChecked(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secure: contribution file: %w", err)
	}
	n := len(contributionMagic)
	if len(b) < n+9 || string(b[:n]) != contributionMagic || len(b) < n+9+int(b[n+8]) {
		return nil, fmt.Errorf("%w: contribution file %s is malformed", ErrInput, path)
	}
	l := int(b[n+8])
	return &contribution{round: binary.BigEndian.Uint64(b[n:]), parent: b[n+9 : n+9+l], payload: b[n+9+l:]}, nil
}

// LoadParticipant reads a participant saved with Save (after a restart).
// A missing, unreadable or damaged file is an error naming it.
func LoadParticipant(dir, self string) (*Participant, error) {
	party, err := LoadParty(filepath.Join(dir, secretFile))
	if err != nil {
		return nil, err
	}
	b, err := fsutil.ReadFileChecked(filepath.Join(dir, setupFile))
	if err != nil {
		return nil, fmt.Errorf("secure: setup file: %w", err)
	}
	s, err := UnmarshalSetup(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, setupFile), err)
	}
	if s.preset.ID != party.preset.ID || s.points[self] != uint64(party.point) {
		return nil, fmt.Errorf("%w: the secret share in %s does not belong to the setup beside it", ErrInput, dir)
	}
	return &Participant{Setup: s, party: party, self: self, dir: dir}, nil
}

// projectedFile records the last round this key holder gave projection
// shares for, and the manifest it gave them for.
const projectedFile = "projected.bin"

// ProjectionShares are this key holder's projection shares, for the active
// set, of every contribution the manifest lists, onto the round's direction
// u (RoundDirectionAlong of the manifest's digest, which the holder derives
// itself from public, checked models): one per
// contributor, one residue per prime. A holder answers once per round: a
// second manifest for the same round (another set of contributions, so
// another direction) would open a second scalar of each update, and an
// earlier round is closed. The same manifest again is answered again (a
// retry). Before answering it records the round and the manifest's digest.
func (p *Participant) ProjectionShares(m Manifest, active []uint64, u []float64) (map[string][]uint64, error) {
	if m.Study != p.Setup.study {
		return nil, fmt.Errorf("%w: task for study %q, this key is %q's", ErrManifest, m.Study, p.Setup.study)
	}
	if p.dir == "" {
		return nil, fmt.Errorf("%w: the participant has no directory to record what it answered; Save it first", ErrInput)
	}
	if len(m.Contributions) == 0 {
		return nil, fmt.Errorf("%w: no contributions to check", ErrManifest)
	}
	digest := m.Digest()
	p.mu.Lock()
	defer p.mu.Unlock()
	path := filepath.Join(p.dir, projectedFile)
	if b, err := fsutil.ReadFileChecked(path); err == nil {
		if len(b) != 8+32 {
			return nil, fmt.Errorf("%w: %s has %d bytes", ErrInput, path, len(b))
		}
		round := binary.BigEndian.Uint64(b[:8])
		switch {
		case round > m.Round:
			return nil, fmt.Errorf("%w: round %d is behind round %d, already checked", ErrAlreadyShared, m.Round, round)
		case round == m.Round && !bytes.Equal(b[8:], digest[:]):
			return nil, fmt.Errorf("%w: projections of round %d were given for another set of contributions; a second set would open a second scalar of each update", ErrAlreadyShared, m.Round)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if len(u) != p.Setup.dim {
		return nil, fmt.Errorf("%w: a direction of %d values, the study's model has %d", ErrDirection, len(u), p.Setup.dim)
	}
	dir, err := NewDirection(p.Setup.preset, u)
	if err != nil {
		return nil, err
	}
	out := map[string][]uint64{}
	points := make(map[string]uint64, len(m.Contributions))
	for _, c := range m.Contributions {
		point, ok := p.Setup.points[c.Site]
		if !ok {
			return nil, fmt.Errorf("%w: %q is not a key holder of this study", ErrManifest, c.Site)
		}
		if _, dup := points[c.Site]; dup {
			return nil, fmt.Errorf("%w: %q listed twice", ErrManifest, c.Site)
		}
		points[c.Site] = point
	}
	rec := binary.BigEndian.AppendUint64(nil, m.Round)
	if err := fsutil.WriteFileChecked(path, append(rec, digest[:]...), 0o600); err != nil {
		return nil, err
	}
	for site, point := range points {
		sh, err := p.party.ProjectionShare(p.nonce(m.Round), point, active, dir)
		if err != nil {
			return nil, err
		}
		out[site] = sh
	}
	return out, nil
}
