package client

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// Secure mode at the hospital: key setup. The hospital's secret-key share
// and t-of-N Shamir share are made here and stay here (on disk, mode 0600,
// under DataDir); the coordinator only relays. Every participant's key
// share is checked against its certificate and the consortium CA, and
// those certificates are kept: for the rest of the study this site checks
// signatures against the identities bound at key setup, not whatever
// certificate the coordinator presents later.

// keySetup is a key setup in progress.
type keySetup struct {
	task    *pb.KeySetupTask
	ks      *secure.KeySetup
	holders []audit.KeyHolder // every participant, by point
	peers   map[string]ed25519.PublicKey
	certs   map[string][]byte
	boxes   map[uint64][]byte // boxes that came before the collective key
}

// studyKeys is this hospital's finished key material for a study.
type studyKeys struct {
	study       string
	participant *secure.Participant
	// peers are the key holders' identity keys, bound at key setup.
	peers map[string]ed25519.PublicKey
}

// studyDir holds the site's key material for a study. It is keyed by the
// site's identity too, so two sites sharing a data directory (a test rig,
// a shared volume) never touch each other's secrets.
func (c *Client) studyDir(study string) string {
	return filepath.Join(c.cfg.DataDir, "sites", c.id, "studies", study)
}

// onKeySetupTask starts this site's key setup: a fresh secret-key share,
// its public-key share for the study's CRS and an X25519 key, signed.
func (c *Client) onKeySetupTask(task *pb.KeySetupTask) ([]*pb.ClientMessage, error) {
	s := c.study
	switch {
	case s == nil || s.Mode != modeSecure || task.StudyId != s.StudyId:
		return nil, fmt.Errorf("key setup for %q, which is not this client's secure study", task.StudyId)
	case task.HePreset != s.HePreset || task.Threshold != s.Threshold:
		return nil, fmt.Errorf("key setup with preset %q and t=%d, the study says %q and t=%d", task.HePreset, task.Threshold, s.HePreset, s.Threshold)
	}
	points := map[string]uint64{}
	var holders []audit.KeyHolder
	for _, p := range task.Participants {
		if _, dup := points[p.ClientId]; dup {
			return nil, fmt.Errorf("participant list repeats %q", p.ClientId)
		}
		points[p.ClientId] = p.Point
		holders = append(holders, audit.KeyHolder{Site: p.ClientId, Point: p.Point})
	}
	if len(task.Participants) < int(max(s.MinClients, s.Threshold)) {
		return nil, fmt.Errorf("%d participants; the study's K=%d and t=%d need more", len(task.Participants), s.MinClients, s.Threshold)
	}
	slices.SortFunc(holders, func(a, b audit.KeyHolder) int { return int(a.Point) - int(b.Point) })
	ks, share, err := secure.StartKeySetup(task.StudyId, task.HePreset, task.CrsSeed, int(task.Threshold), specFrom(s.Model).NumParams(), points, c.id)
	if err != nil {
		return nil, err
	}
	c.setup, c.keys = &keySetup{task: task, ks: ks, holders: holders, peers: map[string]ed25519.PublicKey{}, certs: map[string][]byte{},
		boxes: map[uint64][]byte{}}, nil
	c.log.Info("key setup: sending key share", slog.String("study", task.StudyId), slog.Uint64("point", ks.Point()),
		slog.Int("participants", len(task.Participants)), slog.Int("threshold", int(task.Threshold)))
	return []*pb.ClientMessage{{Msg: &pb.ClientMessage_KeyShare{KeyShare: &pb.KeyShare{StudyId: task.StudyId, Point: ks.Point(),
		X25519Public: share.X25519, PkShare: share.PkShare,
		Signature: c.sign(audit.KeyShareMessage(task.StudyId, c.id, ks.Point(), share.X25519, sha256.Sum256(share.PkShare)))}}}}, nil
}

// onPeerKey checks one participant's relayed key share against its
// certificate and the consortium CA. Once every participant's is in, it
// returns this site's sealed Shamir shares for the others.
func (c *Client) onPeerKey(m *pb.PeerKey) ([]*pb.ClientMessage, error) {
	k := c.setup
	if k == nil {
		return nil, errors.New("peer key outside key setup")
	}
	sh := m.Share
	i := slices.IndexFunc(k.holders, func(h audit.KeyHolder) bool { return h.Site == m.ClientId })
	if i < 0 || sh == nil || sh.Point != k.holders[i].Point || sh.StudyId != k.task.StudyId {
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
	boxes, err := k.ks.AddPeer(m.ClientId, sh.PkShare, sh.X25519Public)
	if err != nil {
		return nil, err
	}
	k.peers[m.ClientId], k.certs[m.ClientId] = peer.PublicKey(), m.Certificate
	var out []*pb.ClientMessage
	for _, h := range k.holders {
		if box, ok := boxes[h.Point]; ok {
			out = append(out, &pb.ClientMessage{Msg: &pb.ClientMessage_ShareBox{ShareBox: &pb.ShareBox{
				StudyId: k.task.StudyId, FromPoint: k.ks.Point(), ToPoint: h.Point, Box: box}}})
		}
	}
	if boxes != nil {
		// Boxes that came before the key was computed can be opened now.
		for from, box := range k.boxes {
			if done, err := c.addBox(from, box); err != nil || done != nil {
				return append(out, done...), err
			}
		}
	}
	return out, nil
}

// onShareBox takes a sealed Shamir share addressed to this site. Once it
// has one from every other participant it derives its t-of-N share,
// stores its key material and returns its signed KeySetupDone.
func (c *Client) onShareBox(m *pb.ShareBox) ([]*pb.ClientMessage, error) {
	k := c.setup
	if k == nil {
		return nil, errors.New("share box outside key setup")
	}
	if m.StudyId != k.task.StudyId || m.ToPoint != k.ks.Point() {
		return nil, fmt.Errorf("share box from point %d to point %d is not for this site (point %d)", m.FromPoint, m.ToPoint, k.ks.Point())
	}
	if _, computed := k.ks.KeyHash(); !computed {
		k.boxes[m.FromPoint] = m.Box
		return nil, nil
	}
	return c.addBox(m.FromPoint, m.Box)
}

func (c *Client) addBox(from uint64, box []byte) ([]*pb.ClientMessage, error) {
	k := c.setup
	delete(k.boxes, from)
	p, err := k.ks.AddBox(from, box)
	if err != nil || p == nil {
		return nil, err
	}
	key := p.Setup.KeyHash()
	sig := c.sign(audit.KeySetupMessage(k.task.StudyId, k.task.HePreset, k.task.Threshold, key, k.holders))
	keys := &studyKeys{study: k.task.StudyId, participant: p, peers: k.peers}
	if err := c.saveKeys(keys, k); err != nil {
		return nil, err
	}
	if err := c.openGuard(keys); err != nil {
		return nil, err
	}
	c.keys, c.setup = keys, nil
	c.log.Info("key setup done", slog.String("study", keys.study), slog.String("collective_key", fmt.Sprintf("%x", key[:8])),
		slog.String("secret_share", c.studyDir(keys.study)))
	return []*pb.ClientMessage{{Msg: &pb.ClientMessage_KeyDone{KeyDone: &pb.KeySetupDone{StudyId: keys.study, CollectiveKeySha256: key[:], Signature: sig}}}}, nil
}

// openGuard opens the study's decryption guard. The hospital's own minimum
// number of contributors applies if it is stricter than the study's K, and
// contributions are checked against the identities bound at key setup.
func (c *Client) openGuard(k *studyKeys) error {
	return k.participant.OpenGuard(secure.GuardConfig{
		MinContributors: max(c.cfg.MinContributors, int(c.study.MinClients)),
		StateFile:       filepath.Join(c.studyDir(k.study), "guard.json"),
		Verify: func(site string, msg, sig []byte) error {
			pub, ok := k.peers[site]
			if !ok {
				return fmt.Errorf("%q is not a key holder of this study", site)
			}
			if !ed25519.Verify(pub, msg, sig) {
				return errors.New("signature does not verify")
			}
			return nil
		},
	})
}

// keysFile is the identities part of the key material, next to the
// secret share and public setup that secure.Participant keeps; all three
// are checked files (fsutil), so a damaged byte is an error naming the
// file, never another key.
type keysFile struct {
	Study        string            `json:"study"`
	Certificates map[string][]byte `json:"certificates"`
}

// saveKeys writes the key material of a finished key setup, replacing any
// from an earlier key setup of the same study. The site's round history
// (guard.json: the rounds it gave a decryption share for;
// countersigned.json) stays: the audit log takes one key setup per study,
// and a coordinator that runs another must not get a second share or a
// second countersignature for a round (with the same training under a
// new key, two decryptions of one round differ by a site's update).
func (c *Client) saveKeys(k *studyKeys, ks *keySetup) error {
	dir := c.studyDir(k.study)
	keysPath := filepath.Join(dir, "keys.json")
	if _, err := os.Stat(keysPath); err == nil {
		c.log.Warn("replacing key material from an earlier key setup of this study", slog.String("dir", dir))
		if err := os.Remove(keysPath); err != nil {
			return err
		}
	}
	if err := k.participant.Save(dir); err != nil {
		return err
	}
	b, err := json.MarshalIndent(keysFile{Study: k.study, Certificates: ks.certs}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileChecked(keysPath, b, 0o600)
}

// loadKeys reads the key material a finished key setup left for the study
// (after a client restart), re-checking every stored certificate. Damaged
// or missing key material is an error naming the file.
func (c *Client) loadKeys(study string) (*studyKeys, error) {
	dir := c.studyDir(study)
	keysPath := filepath.Join(dir, "keys.json")
	damaged := func(file, format string, a ...any) error {
		return fmt.Errorf("key material of study %q: %s is damaged: %s", study, file, fmt.Sprintf(format, a...))
	}
	b, err := fsutil.ReadFileChecked(keysPath)
	if err != nil {
		return nil, fmt.Errorf("key material of study %q: %w", study, err)
	}
	var f keysFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, damaged(keysPath, "%v", err)
	}
	if f.Study != study {
		return nil, damaged(keysPath, "it is for study %q", f.Study)
	}
	p, err := secure.LoadParticipant(dir, c.id)
	if err != nil {
		return nil, fmt.Errorf("key material of study %q: %w", study, err)
	}
	k := &studyKeys{study: study, participant: p, peers: map[string]ed25519.PublicKey{}}
	for site := range p.Setup.Points() {
		peer, err := tlsutil.VerifyPeerCertificate(f.Certificates[site], c.cfg.TLS.RootCAs, time.Now())
		switch {
		case err != nil:
			return nil, fmt.Errorf("key material of study %q: %s: the certificate of key holder %q no longer verifies: %w", study, keysPath, site, err)
		case peer.ID != site:
			return nil, damaged(keysPath, "the certificate of key holder %q is %q's", site, peer.ID)
		}
		k.peers[site] = peer.PublicKey()
	}
	if err := c.openGuard(k); err != nil {
		return nil, err
	}
	return k, nil
}

// studyKeys returns the key material for the current secure study, loading
// it from disk after a restart.
func (c *Client) studyKeys() (*studyKeys, error) {
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
