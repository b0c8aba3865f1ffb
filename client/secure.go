package client

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"

	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// Secure mode at the hospital. The client holds its secret-key share and
// its t-of-N Shamir share (on disk, mode 0600, under DataDir), encrypts its
// update under the study's collective public key, and gives a decryption
// share only when its ShareGuard accepts the coordinator's manifest.

// keys is this hospital's finished key material for one study.
type keys struct {
	study  string
	preset secure.Preset
	party  *secure.Party
	point  uint64
	t      int
	pk     *rlwe.PublicKey
	pkHash [32]byte
	// peers are the participants' identity keys, from certificates checked
	// against the consortium CA at key setup.
	peers map[string]ed25519.PublicKey
	guard *secure.ShareGuard
}

// keySetup is a key setup in progress.
type keySetup struct {
	task     *pb.KeySetupTask
	preset   secure.Preset
	party    *secure.Party
	point    uint64
	x25519   *ecdh.PrivateKey
	points   map[string]uint64
	byPoint  map[uint64]string
	pkShares map[string]mhe.PublicKeyGenShare
	xkeys    map[string]*ecdh.PublicKey
	peers    map[string]ed25519.PublicKey
	certs    map[string][]byte
	boxes    map[uint64][]byte // sealed Shamir shares received, by sender point
	own      mhe.ShamirSecretShare
	pk       *rlwe.PublicKey
	pkHash   [32]byte
	sealed   bool
}

// studyDir holds the site's key material for a study. It is keyed by the
// site's identity too, so two sites sharing a data directory (a test rig,
// a shared volume) never touch each other's secrets.
func (c *Client) studyDir(study string) string {
	return filepath.Join(c.cfg.DataDir, "sites", c.id, "studies", study)
}

// sign signs msg with the hospital's identity (certificate) key.
func (c *Client) sign(msg []byte) []byte { return ed25519.Sign(c.signer, msg) }

// startKeySetup answers a KeySetupTask: a fresh secret-key share, its
// public-key share for the study's CRS, and an X25519 key for receiving
// Shamir shares, all signed with the hospital's identity key.
func (c *Client) startKeySetup(task *pb.KeySetupTask) (*pb.KeyShare, error) {
	s := c.study
	switch {
	case s == nil || s.Mode != modeSecure || task.StudyId != s.StudyId:
		return nil, fmt.Errorf("key setup for %q, which is not this client's secure study", task.StudyId)
	case task.HePreset != s.HePreset || task.Threshold != s.Threshold:
		return nil, fmt.Errorf("key setup with preset %q and t=%d, the study says %q and t=%d", task.HePreset, task.Threshold, s.HePreset, s.Threshold)
	case int(task.Threshold) < 2 || int(task.Threshold) > len(task.Participants):
		return nil, fmt.Errorf("threshold t=%d for %d participants; this site requires 2 <= t <= N", task.Threshold, len(task.Participants))
	}
	preset, err := secure.LookupPreset(task.HePreset)
	if err != nil {
		return nil, err
	}
	ks := &keySetup{task: task, preset: preset, points: map[string]uint64{}, byPoint: map[uint64]string{},
		pkShares: map[string]mhe.PublicKeyGenShare{}, xkeys: map[string]*ecdh.PublicKey{}, peers: map[string]ed25519.PublicKey{},
		certs: map[string][]byte{}, boxes: map[uint64][]byte{}}
	for _, p := range task.Participants {
		if p.Point == 0 || ks.byPoint[p.Point] != "" || ks.points[p.ClientId] != 0 {
			return nil, fmt.Errorf("participant list repeats client %q or point %d", p.ClientId, p.Point)
		}
		ks.points[p.ClientId], ks.byPoint[p.Point] = p.Point, p.ClientId
	}
	if ks.point = ks.points[c.id]; ks.point == 0 {
		return nil, fmt.Errorf("this site (%q) is not among the key-setup participants", c.id)
	}
	if ks.party, err = secure.NewParty(preset, ks.point); err != nil {
		return nil, err
	}
	share, err := ks.party.PublicKeyShare(task.CrsSeed)
	if err != nil {
		return nil, err
	}
	env, err := secure.SealPublicKeyShare(preset, task.StudyId, share)
	if err != nil {
		return nil, err
	}
	if ks.x25519, err = ecdh.X25519().GenerateKey(rand.Reader); err != nil {
		return nil, err
	}
	xpub := ks.x25519.PublicKey().Bytes()
	c.setup, c.keys = ks, nil
	c.log.Info("key setup: sending key share", slog.String("study", task.StudyId), slog.Uint64("point", ks.point),
		slog.Int("participants", len(task.Participants)), slog.Int("threshold", int(task.Threshold)))
	return &pb.KeyShare{StudyId: task.StudyId, Point: ks.point, X25519Public: xpub, PkShare: env,
		Signature: c.sign(audit.KeyShareMessage(task.StudyId, c.id, ks.point, xpub, sha256.Sum256(env)))}, nil
}

// onPeerKey checks one participant's relayed key share against its
// certificate and the consortium CA. Once every participant's is in, it
// computes the collective key itself and returns the sealed Shamir shares
// for the others.
func (c *Client) onPeerKey(m *pb.PeerKey) ([]*pb.ShareBox, error) {
	ks := c.setup
	if ks == nil {
		return nil, errors.New("peer key outside key setup")
	}
	sh := m.Share
	point := ks.points[m.ClientId]
	if point == 0 || sh == nil || sh.Point != point || sh.StudyId != ks.task.StudyId {
		return nil, fmt.Errorf("relayed key share of %q does not match the participant list", m.ClientId)
	}
	peer, err := tlsutil.VerifyPeerCertificate(m.Certificate, c.cfg.TLS.RootCAs, time.Now())
	if err != nil {
		return nil, fmt.Errorf("certificate relayed for %q: %w", m.ClientId, err)
	}
	if peer.ID != m.ClientId || peer.Role != tlsutil.RoleClient {
		return nil, fmt.Errorf("certificate relayed for %q belongs to %q (%s)", m.ClientId, peer.ID, peer.Role)
	}
	if !ed25519.Verify(peer.PublicKey(), audit.KeyShareMessage(sh.StudyId, m.ClientId, sh.Point, sh.X25519Public, sha256.Sum256(sh.PkShare)), sh.Signature) {
		return nil, fmt.Errorf("key share of %q is not signed by its certificate key", m.ClientId)
	}
	share, err := secure.OpenPublicKeyShare(sh.PkShare, ks.preset, sh.StudyId)
	if err != nil {
		return nil, fmt.Errorf("key share of %q: %w", m.ClientId, err)
	}
	xk, err := ecdh.X25519().NewPublicKey(sh.X25519Public)
	if err != nil {
		return nil, fmt.Errorf("X25519 key of %q: %w", m.ClientId, err)
	}
	if m.ClientId == c.id && !slices.Equal(sh.X25519Public, ks.x25519.PublicKey().Bytes()) {
		return nil, errors.New("the coordinator relayed a key share in this site's name that it did not send")
	}
	ks.pkShares[m.ClientId], ks.xkeys[m.ClientId], ks.peers[m.ClientId], ks.certs[m.ClientId] = share, xk, peer.PublicKey(), m.Certificate
	if len(ks.pkShares) < len(ks.points) || ks.sealed {
		return nil, nil
	}
	ordered := make([]mhe.PublicKeyGenShare, 0, len(ks.points))
	recipients := make([]uint64, 0, len(ks.points))
	for _, p := range ks.task.Participants {
		ordered = append(ordered, ks.pkShares[p.ClientId])
		recipients = append(recipients, p.Point)
	}
	if ks.pk, err = secure.CollectivePublicKey(ks.preset, ks.task.CrsSeed, ordered); err != nil {
		return nil, err
	}
	if ks.pkHash, err = secure.PublicKeyHash(ks.pk); err != nil {
		return nil, err
	}
	shamir, err := ks.party.ThresholdShares(int(ks.task.Threshold), recipients)
	if err != nil {
		return nil, err
	}
	var out []*pb.ShareBox
	for _, to := range recipients {
		if to == ks.point {
			ks.own = shamir[to]
			continue
		}
		box, err := secure.SealShare(ks.xkeys[ks.byPoint[to]], ks.task.StudyId, ks.point, to, shamir[to])
		if err != nil {
			return nil, err
		}
		out = append(out, &pb.ShareBox{StudyId: ks.task.StudyId, FromPoint: ks.point, ToPoint: to, Box: box})
	}
	ks.sealed = true
	return out, nil
}

// onShareBox keeps a sealed Shamir share addressed to this site. Once it
// has one from every other participant it opens them, derives its t-of-N
// share, stores its key material and returns the KeySetupDone to send.
func (c *Client) onShareBox(m *pb.ShareBox) (*pb.KeySetupDone, error) {
	ks := c.setup
	if ks == nil {
		return nil, errors.New("share box outside key setup")
	}
	if m.ToPoint != ks.point || ks.byPoint[m.FromPoint] == "" || m.FromPoint == ks.point {
		return nil, fmt.Errorf("share box from point %d to point %d is not for this site (point %d)", m.FromPoint, m.ToPoint, ks.point)
	}
	if _, dup := ks.boxes[m.FromPoint]; dup {
		return nil, fmt.Errorf("second share box from point %d", m.FromPoint)
	}
	ks.boxes[m.FromPoint] = m.Box
	if len(ks.boxes) < len(ks.points)-1 || !ks.sealed {
		return nil, nil
	}
	received := []mhe.ShamirSecretShare{ks.own}
	for from, box := range ks.boxes {
		sender, share, err := secure.OpenShare(ks.x25519, ks.task.StudyId, ks.point, box)
		if err != nil {
			return nil, fmt.Errorf("share box from %q: %w", ks.byPoint[from], err)
		}
		if sender != from {
			return nil, fmt.Errorf("share box relayed as from point %d was sealed by point %d", from, sender)
		}
		received = append(received, share)
	}
	if err := ks.party.SetThresholdShares(int(ks.task.Threshold), received); err != nil {
		return nil, err
	}
	k := &keys{study: ks.task.StudyId, preset: ks.preset, party: ks.party, point: ks.point, t: int(ks.task.Threshold),
		pk: ks.pk, pkHash: ks.pkHash, peers: ks.peers}
	if err := c.saveKeys(k, ks); err != nil {
		return nil, err
	}
	if err := c.openGuard(k); err != nil {
		return nil, err
	}
	c.keys, c.setup = k, nil
	c.log.Info("key setup done", slog.String("study", k.study), slog.String("collective_key", fmt.Sprintf("%x", k.pkHash[:8])),
		slog.String("secret_share", filepath.Join(c.studyDir(k.study), "share.key")))
	return &pb.KeySetupDone{StudyId: k.study, CollectiveKeySha256: k.pkHash[:]}, nil
}

// openGuard opens the study's decryption guard. The hospital's own minimum
// number of contributors applies if it is stricter than the study's K.
func (c *Client) openGuard(k *keys) error {
	g, err := secure.OpenShareGuard(secure.GuardConfig{
		MinContributors: max(c.cfg.MinContributors, int(c.study.MinClients)),
		StateFile:       filepath.Join(c.studyDir(k.study), "guard.json"),
		Verify: func(client string, msg, sig []byte) error {
			pub, ok := k.peers[client]
			if !ok {
				return fmt.Errorf("%q is not a key holder of this study", client)
			}
			if !ed25519.Verify(pub, msg, sig) {
				return errors.New("signature does not verify")
			}
			return nil
		},
	})
	k.guard = g
	return err
}

// keysFile is the public part of the key material, next to the 0600
// secret-share file.
type keysFile struct {
	Preset        string            `json:"he_preset"`
	Point         uint64            `json:"point"`
	Threshold     int               `json:"threshold"`
	CollectiveKey []byte            `json:"collective_public_key"`
	Participants  map[string]uint64 `json:"participants"`
	Certificates  map[string][]byte `json:"certificates"`
}

// saveKeys writes the key material of a finished key setup, replacing any
// from an earlier key setup of the same study.
func (c *Client) saveKeys(k *keys, ks *keySetup) error {
	dir := c.studyDir(k.study)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	share := filepath.Join(dir, "share.key")
	if _, err := os.Stat(share); err == nil {
		c.log.Warn("replacing key material from an earlier key setup of this study", slog.String("dir", dir))
		for _, f := range []string{share, filepath.Join(dir, "keys.json"), filepath.Join(dir, "guard.json")} {
			os.Remove(f)
		}
	}
	if err := k.party.Save(share); err != nil {
		return err
	}
	pk, err := k.pk.MarshalBinary()
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(keysFile{Preset: k.preset.ID, Point: k.point, Threshold: k.t, CollectiveKey: pk,
		Participants: ks.points, Certificates: ks.certs}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(filepath.Join(dir, "keys.json"), b, 0o600)
}

// loadKeys reads the key material a finished key setup left for the study
// (after a client restart). It re-checks every stored certificate.
func (c *Client) loadKeys(study string) (*keys, error) {
	dir := c.studyDir(study)
	b, err := os.ReadFile(filepath.Join(dir, "keys.json"))
	if err != nil {
		return nil, fmt.Errorf("no key material for study %q: %w", study, err)
	}
	var f keysFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("key material of study %q is corrupt: %w", study, err)
	}
	preset, err := secure.LookupPreset(f.Preset)
	if err != nil {
		return nil, err
	}
	party, err := secure.LoadParty(filepath.Join(dir, "share.key"))
	if err != nil {
		return nil, err
	}
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	pk := rlwe.NewPublicKey(params)
	if err := pk.UnmarshalBinary(f.CollectiveKey); err != nil {
		return nil, fmt.Errorf("collective key of study %q is corrupt: %w", study, err)
	}
	k := &keys{study: study, preset: preset, party: party, point: f.Point, t: f.Threshold, pk: pk, peers: map[string]ed25519.PublicKey{}}
	if k.pkHash, err = secure.PublicKeyHash(pk); err != nil {
		return nil, err
	}
	for id, der := range f.Certificates {
		p, err := tlsutil.VerifyPeerCertificate(der, c.cfg.TLS.RootCAs, time.Now())
		if err != nil || p.ID != id {
			return nil, fmt.Errorf("stored certificate of %q no longer verifies: %v", id, err)
		}
		k.peers[id] = p.PublicKey()
	}
	if err := c.openGuard(k); err != nil {
		return nil, err
	}
	return k, nil
}

// studyKeys returns the key material for the current secure study, loading
// it from disk after a restart.
func (c *Client) studyKeys() (*keys, error) {
	if c.keys != nil && c.keys.study == c.study.StudyId {
		return c.keys, nil
	}
	k, err := c.loadKeys(c.study.StudyId)
	if err != nil {
		return nil, err
	}
	c.keys = k
	return k, nil
}
