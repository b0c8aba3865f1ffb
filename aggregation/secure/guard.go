package secure

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
)

// Errors of the client-side decryption rules.
var (
	ErrManifest      = errors.New("secure: decryption refused: manifest")
	ErrAlreadyShared = errors.New("secure: decryption refused: a share was already given for this round")
	ErrAggregate     = errors.New("secure: decryption refused: aggregate does not match the listed contributions")
)

// Manifest is what the coordinator presents when it asks for a decryption
// share: the study, the round and its parent model, the contributions it
// summed (each signed by its hospital, in site order) and the SHA-256 of
// the aggregate payload it wants decrypted. Count is the number of
// ciphertexts per payload, which the client derives from the study's model
// (not from the coordinator's word).
type Manifest struct {
	Study         string
	Round         uint64
	Parent        audit.Hash
	Count         int
	Contributions []audit.Contribution
	AggregateHash [32]byte
}

// Digest is the manifest's audit.ManifestDigest, which a decryptor signs
// with its share.
func (m Manifest) Digest() audit.Hash {
	return audit.ManifestDigest(m.Study, m.Round, m.Parent, m.Contributions)
}

// Verifier checks client's signature over msg with the client's identity
// key (from its certificate).
type Verifier func(client string, msg, sig []byte) error

// GuardConfig configures a ShareGuard.
type GuardConfig struct {
	// MinContributors is K.
	MinContributors int
	// StateFile records the rounds this client has answered; it survives
	// restarts, so a restarted client still never answers a round twice.
	StateFile string
	Verify    Verifier
}

// ShareGuard enforces a hospital's rules before it gives a decryption
// share: a manifest of at least K distinct, validly signed contributions
// for this study, round and parent, in site order; the aggregate must be
// the sum of exactly the listed contributions, which the guard re-adds
// itself; and one share per round, ever. A share once given is kept: asked
// again for the same aggregate and active set, the guard returns the same
// bytes and never computes a second share (two shares of one round with
// fresh flooding noise would let their difference average the noise away,
// which Lattigo's SECURITY.md warns against). There is no switch that turns
// the re-sum off.
type ShareGuard struct {
	cfg      GuardConfig
	mu       sync.Mutex
	answered map[string]answer
}

// answer is what the guard keeps of a round it answered.
type answer struct {
	// Aggregate is the SHA-256 of the aggregate decrypted, hex.
	Aggregate string `json:"aggregate,omitempty"`
	// Active is the active set the share was computed for.
	Active []uint64 `json:"active,omitempty"`
	// Share is the SHA-256 of the share payload, kept in a file beside
	// the state file until a later round of the study is answered.
	Share string `json:"share,omitempty"`
}

// OpenShareGuard loads (or creates) the guard's state file.
func OpenShareGuard(cfg GuardConfig) (*ShareGuard, error) {
	if cfg.MinContributors < 1 || cfg.StateFile == "" || cfg.Verify == nil {
		return nil, fmt.Errorf("%w: guard needs K >= 1, a state file and a signature verifier", ErrInput)
	}
	g := &ShareGuard{cfg: cfg, answered: map[string]answer{}}
	b, err := fsutil.ReadFileChecked(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("secure: guard state: %w", err)
	default:
		if err := json.Unmarshal(b, &g.answered); err != nil {
			// The first format was a list of answered rounds.
			var rounds []string
			if json.Unmarshal(b, &rounds) != nil {
				return nil, fmt.Errorf("secure: guard state %s is corrupt: %w", cfg.StateFile, err)
			}
			for _, r := range rounds {
				g.answered[r] = answer{}
			}
		}
	}
	return g, nil
}

func roundKey(study string, round uint64) string { return fmt.Sprintf("%s/%d", study, round) }

// Fetcher returns the payload of a listed contribution, by its contributor
// and the hash the contributor signed. The guard checks the hash itself.
type Fetcher func(client string, hash [32]byte) ([]byte, error)

// Answer gives this hospital's decryption share for the manifest's round,
// at most once. If the round was answered for the same aggregate and
// active set, it returns the share it gave then; if for anything else, it
// refuses with ErrAlreadyShared. Otherwise it checks the manifest
// (Authorize), calls share to compute the payload, and records the payload
// durably before returning it.
func (g *ShareGuard) Answer(m Manifest, preset Preset, active []uint64, fetch Fetcher, aggregate []byte, share func() ([]byte, error)) ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := roundKey(m.Study, m.Round)
	aggHash := sha256.Sum256(aggregate)
	if prev, done := g.answered[key]; done {
		if prev.Share == "" || prev.Aggregate != hex.EncodeToString(aggHash[:]) || !slices.Equal(prev.Active, active) {
			return nil, fmt.Errorf("%w: %s", ErrAlreadyShared, key)
		}
		b, err := fsutil.ReadFileChecked(g.shareFile(m.Study, m.Round))
		if err != nil {
			return nil, fmt.Errorf("secure: the share given for %s: %w", key, err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != prev.Share {
			return nil, fmt.Errorf("secure: the share kept for %s does not hash to the one given", key)
		}
		return b, nil
	}
	if err := g.authorize(m, preset, fetch, aggregate); err != nil {
		return nil, err
	}
	payload, err := share()
	if err != nil {
		return nil, err
	}
	if err := fsutil.WriteFileChecked(g.shareFile(m.Study, m.Round), payload, 0o600); err != nil {
		return nil, fmt.Errorf("secure: keeping the share: %w", err)
	}
	h := sha256.Sum256(payload)
	g.answered[key] = answer{Aggregate: hex.EncodeToString(aggHash[:]), Active: slices.Clone(active), Share: hex.EncodeToString(h[:])}
	if err := g.save(); err != nil {
		delete(g.answered, key)
		return nil, err
	}
	// Earlier rounds of the study are over (this one is open only after
	// the last committed): their shares will not be asked for again.
	for r := range g.answered {
		if study, round, ok := splitRoundKey(r); ok && study == m.Study && round < m.Round && g.answered[r].Share != "" {
			os.Remove(g.shareFile(study, round))
		}
	}
	return payload, nil
}

func splitRoundKey(k string) (string, uint64, bool) {
	i := strings.LastIndexByte(k, '/')
	if i < 0 {
		return "", 0, false
	}
	r, err := strconv.ParseUint(k[i+1:], 10, 64)
	return k[:i], r, err == nil
}

// shareFile is where the share given for a round is kept.
func (g *ShareGuard) shareFile(study string, round uint64) string {
	h := sha256.Sum256([]byte(study))
	return fmt.Sprintf("%s.%x.%d.share", g.cfg.StateFile, h[:6], round)
}

// authorize checks a manifest: K distinct, validly signed contributions
// in site order, the aggregate's hash, its framing, and the re-sum. fetch
// is called for each listed contribution in turn and each is added to a
// running sum and dropped, so memory stays at about two contributions
// whatever their number.
func (g *ShareGuard) authorize(m Manifest, preset Preset, fetch Fetcher, aggregate []byte) error {
	study, round := m.Study, m.Round
	seen := map[string]bool{}
	for i, c := range m.Contributions {
		if seen[c.Site] {
			return fmt.Errorf("%w: %q listed twice", ErrManifest, c.Site)
		}
		if i > 0 && m.Contributions[i-1].Site > c.Site {
			return fmt.Errorf("%w: contributions are not in site order", ErrManifest)
		}
		seen[c.Site] = true
		if err := g.cfg.Verify(c.Site, c.Message(study, round, m.Parent), c.Signature); err != nil {
			return fmt.Errorf("%w: contribution of %q is not validly signed: %v", ErrManifest, c.Site, err)
		}
	}
	if len(seen) < g.cfg.MinContributors {
		return fmt.Errorf("%w: %d distinct contributions, at least %d required", ErrManifest, len(seen), g.cfg.MinContributors)
	}
	if got := sha256.Sum256(aggregate); got != m.AggregateHash {
		return fmt.Errorf("%w: aggregate hash %x, manifest says %x", ErrAggregate, got[:8], m.AggregateHash[:8])
	}
	if _, err := OpenPayload(aggregate, Expect{Kind: KindAggregate, Preset: preset, Study: study, Round: round, Count: uint32(m.Count)}); err != nil {
		return fmt.Errorf("%w: %v", ErrAggregate, err)
	}
	return resum(study, round, m, preset, fetch)
}

// resum re-adds the listed contributions, one at a time, and checks the
// result is the aggregate the manifest names.
func resum(study string, round uint64, m Manifest, preset Preset, fetch Fetcher) error {
	if fetch == nil {
		return fmt.Errorf("%w: no way to fetch the contributions to re-sum them", ErrInput)
	}
	acc, err := NewAccumulator(preset, m.Count)
	if err != nil {
		return err
	}
	for _, c := range m.Contributions {
		p, err := fetch(c.Site, c.UpdateHash)
		if err != nil {
			return fmt.Errorf("secure: fetching the contribution of %q to re-sum it: %w", c.Site, err)
		}
		if sha256.Sum256(p) != c.UpdateHash {
			return fmt.Errorf("%w: contribution of %q does not hash to the signed value", ErrAggregate, c.Site)
		}
		polys, err := OpenPolys(p, Expect{Kind: KindContribution, Preset: preset, Study: study, Round: round, Count: uint32(m.Count)})
		if err != nil {
			return fmt.Errorf("%w: contribution of %q: %v", ErrAggregate, c.Site, err)
		}
		if err := acc.Add(polys); err != nil {
			return fmt.Errorf("%w: contribution of %q: %v", ErrAggregate, c.Site, err)
		}
	}
	sum, err := SealPayload(KindAggregate, preset, study, round, acc.Sum())
	if err != nil {
		return err
	}
	if sha256.Sum256(sum) != m.AggregateHash {
		return fmt.Errorf("%w: re-summed contributions differ from the aggregate", ErrAggregate)
	}
	return nil
}

func (g *ShareGuard) save() error {
	b, _ := json.Marshal(g.answered)
	if err := fsutil.WriteFileChecked(g.cfg.StateFile, b, 0o600); err != nil {
		return fmt.Errorf("secure: guard state: %w", err)
	}
	return nil
}
