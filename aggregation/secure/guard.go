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
	"github.com/tuneinsight/lattigo/v5/ring"
)

// Errors of the client-side decryption rules.
var (
	ErrManifest      = errors.New("secure: decryption refused: manifest")
	ErrAlreadyShared = errors.New("secure: decryption refused: a share was already given for this round")
	ErrAggregate     = errors.New("secure: decryption refused: aggregate does not match the listed contributions")
)

// Manifest is what the coordinator presents when it asks for a decryption
// share: the study, the round and its parent model, the contributions it
// summed (each signed by its hospital, in site order), the SHA-256 of the
// aggregate payload it wants decrypted, and the contributors' signed
// sketches of their contributions against that aggregate (some may be
// missing). Count is the number of ciphertexts per payload, which the
// client derives from the study's model (not from the coordinator's word).
type Manifest struct {
	Study         string
	Round         uint64
	Parent        audit.Hash
	Count         int
	Contributions []audit.Contribution
	AggregateHash [32]byte
	Sketches      []audit.Sketch
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
// the sum of exactly the listed contributions, which the guard checks
// itself (against the contributors' signed sketches, pulling whole the
// contributions that have none); and one share per round, ever. A share once given is kept: asked
// again for the same aggregate and active set, the guard returns the same
// bytes and never computes a second share (two shares of one round with
// fresh flooding noise would let their difference average the noise away,
// which Lattigo's SECURITY.md warns against). There is no switch that turns
// the aggregate check off.
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
// refuses with ErrAlreadyShared. Otherwise it checks the manifest and
// the aggregate, calls share to compute the payload, and records the
// payload durably before returning it, with how the aggregate was checked
// (zero when the share was given before).
func (g *ShareGuard) Answer(m Manifest, preset Preset, active []uint64, fetch Fetcher, aggregate []byte, share func() ([]byte, error)) ([]byte, Verification, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	key := roundKey(m.Study, m.Round)
	aggHash := sha256.Sum256(aggregate)
	if prev, done := g.answered[key]; done {
		if prev.Share == "" || prev.Aggregate != hex.EncodeToString(aggHash[:]) || !slices.Equal(prev.Active, active) {
			return nil, Verification{}, fmt.Errorf("%w: %s", ErrAlreadyShared, key)
		}
		b, err := fsutil.ReadFileChecked(g.shareFile(m.Study, m.Round))
		if err != nil {
			return nil, Verification{}, fmt.Errorf("secure: the share given for %s: %w", key, err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != prev.Share {
			return nil, Verification{}, fmt.Errorf("secure: the share kept for %s does not hash to the one given", key)
		}
		return b, Verification{}, nil
	}
	v, err := g.authorize(m, preset, fetch, aggregate)
	if err != nil {
		return nil, v, err
	}
	payload, err := share()
	if err != nil {
		return nil, v, err
	}
	if err := fsutil.WriteFileChecked(g.shareFile(m.Study, m.Round), payload, 0o600); err != nil {
		return nil, Verification{}, fmt.Errorf("secure: keeping the share: %w", err)
	}
	h := sha256.Sum256(payload)
	g.answered[key] = answer{Aggregate: hex.EncodeToString(aggHash[:]), Active: slices.Clone(active), Share: hex.EncodeToString(h[:])}
	if err := g.save(); err != nil {
		delete(g.answered, key)
		return nil, v, err
	}
	// Earlier rounds of the study are over (this one is open only after
	// the last committed): their shares will not be asked for again.
	for r := range g.answered {
		if study, round, ok := splitRoundKey(r); ok && study == m.Study && round < m.Round && g.answered[r].Share != "" {
			os.Remove(g.shareFile(study, round))
		}
	}
	return payload, v, nil
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
// in site order, the aggregate's hash and framing, and that the aggregate
// is the sum of exactly the listed contributions (checkSum).
func (g *ShareGuard) authorize(m Manifest, preset Preset, fetch Fetcher, aggregate []byte) (Verification, error) {
	study, round := m.Study, m.Round
	seen := map[string]bool{}
	for i, c := range m.Contributions {
		if seen[c.Site] {
			return Verification{}, fmt.Errorf("%w: %q listed twice", ErrManifest, c.Site)
		}
		if i > 0 && m.Contributions[i-1].Site > c.Site {
			return Verification{}, fmt.Errorf("%w: contributions are not in site order", ErrManifest)
		}
		seen[c.Site] = true
		if err := g.cfg.Verify(c.Site, c.Message(study, round, m.Parent), c.Signature); err != nil {
			return Verification{}, fmt.Errorf("%w: contribution of %q is not validly signed: %v", ErrManifest, c.Site, err)
		}
	}
	if len(seen) < g.cfg.MinContributors {
		return Verification{}, fmt.Errorf("%w: %d distinct contributions, at least %d required", ErrManifest, len(seen), g.cfg.MinContributors)
	}
	if got := sha256.Sum256(aggregate); got != m.AggregateHash {
		return Verification{}, fmt.Errorf("%w: aggregate hash %x, manifest says %x", ErrAggregate, got[:8], m.AggregateHash[:8])
	}
	polys, err := OpenPolys(aggregate, Expect{Kind: KindAggregate, Preset: preset, Study: study, Round: round, Count: uint32(m.Count)})
	if err != nil {
		return Verification{}, fmt.Errorf("%w: %v", ErrAggregate, err)
	}
	return g.checkSum(m, preset, fetch, polys)
}

// Verification says how a decryptor checked that an aggregate is the sum
// of the listed contributions.
type Verification struct {
	// Contributions is the number listed.
	Contributions int
	// Sketched were checked by their contributors' signed sketches;
	// Fetched were pulled whole (no sketch, or the re-sum), FetchedBytes
	// their size; SketchBytes is the size of the sketches used.
	Sketched, Fetched         int
	FetchedBytes, SketchBytes int64
	// Resummed: the sketches did not add up to the aggregate's, so every
	// contribution was pulled and re-added, and the re-sum matched.
	Resummed bool
	// FalseSketches are the contributors whose signed sketch is not the
	// sketch of the contribution they signed (found by the re-sum).
	FalseSketches []string
}

// checkSum checks the aggregate against the contributors' signed sketches
// (see sketch.go), pulling whole only the contributions that have none.
// If the sketches do not add up, it re-adds every contribution: a match
// means the aggregate is right and some hospital signed a false sketch
// (named in FalseSketches); a mismatch refuses the aggregate.
func (g *ShareGuard) checkSum(m Manifest, preset Preset, fetch Fetcher, aggregate []ring.Poly) (Verification, error) {
	v := Verification{Contributions: len(m.Contributions)}
	if fetch == nil {
		return v, fmt.Errorf("%w: no way to fetch the contributions to check the aggregate", ErrInput)
	}
	k, err := preset.kit()
	if err != nil {
		return v, err
	}
	digest := m.Digest()
	listed := map[string]bool{}
	for _, c := range m.Contributions {
		listed[c.Site] = true
	}
	given := map[string][]uint64{}
	for _, s := range m.Sketches {
		switch {
		case !listed[s.Site]:
			return v, fmt.Errorf("%w: a sketch from %q, who is not a listed contributor", ErrManifest, s.Site)
		case given[s.Site] != nil:
			return v, fmt.Errorf("%w: two sketches from %q", ErrManifest, s.Site)
		}
		vals, err := k.decodeSketch(s.Values)
		if err != nil {
			return v, fmt.Errorf("%w: sketch of %q: %v", ErrManifest, s.Site, err)
		}
		if err := g.cfg.Verify(s.Site, s.Message(m.Study, m.Round, m.AggregateHash, digest), s.Signature); err != nil {
			return v, fmt.Errorf("%w: sketch of %q is not validly signed: %v", ErrManifest, s.Site, err)
		}
		given[s.Site] = vals
		v.SketchBytes += int64(len(s.Values))
	}
	challenge := SketchChallenge(m)
	want, err := k.sketch(challenge, aggregate)
	if err != nil {
		return v, fmt.Errorf("%w: %v", ErrAggregate, err)
	}
	have := make([]uint64, len(want))
	for _, c := range m.Contributions {
		if s, ok := given[c.Site]; ok {
			k.addSketch(have, s)
			v.Sketched++
			continue
		}
		polys, err := v.pull(m, preset, fetch, c)
		if err != nil {
			return v, err
		}
		s, err := k.sketch(challenge, polys)
		if err != nil {
			return v, fmt.Errorf("%w: contribution of %q: %v", ErrAggregate, c.Site, err)
		}
		k.addSketch(have, s)
	}
	if slices.Equal(have, want) {
		return v, nil
	}
	// The sketches do not add up: re-add every contribution.
	v.Resummed = true
	acc, err := NewAccumulator(preset, m.Count)
	if err != nil {
		return v, err
	}
	for _, c := range m.Contributions {
		polys, err := v.pull(m, preset, fetch, c)
		if err != nil {
			return v, err
		}
		if s, ok := given[c.Site]; ok {
			if own, err := k.sketch(challenge, polys); err == nil && !slices.Equal(own, s) {
				v.FalseSketches = append(v.FalseSketches, c.Site)
			}
		}
		if err := acc.Add(polys); err != nil {
			return v, fmt.Errorf("%w: contribution of %q: %v", ErrAggregate, c.Site, err)
		}
	}
	for j, p := range acc.Sum() {
		if !p.Equal(&aggregate[j]) {
			return v, fmt.Errorf("%w: the contributions re-added differ from the aggregate in chunk %d", ErrAggregate, j)
		}
	}
	return v, nil
}

// pull fetches a listed contribution whole, checks it hashes to the value
// its contributor signed, and opens it.
func (v *Verification) pull(m Manifest, preset Preset, fetch Fetcher, c audit.Contribution) ([]ring.Poly, error) {
	p, err := fetch(c.Site, c.UpdateHash)
	if err != nil {
		return nil, fmt.Errorf("secure: fetching the contribution of %q to check the aggregate: %w", c.Site, err)
	}
	v.Fetched++
	v.FetchedBytes += int64(len(p))
	if sha256.Sum256(p) != c.UpdateHash {
		return nil, fmt.Errorf("%w: contribution of %q does not hash to the signed value", ErrAggregate, c.Site)
	}
	polys, err := OpenPolys(p, Expect{Kind: KindContribution, Preset: preset, Study: m.Study, Round: m.Round, Count: uint32(m.Count)})
	if err != nil {
		return nil, fmt.Errorf("%w: contribution of %q: %v", ErrAggregate, c.Site, err)
	}
	return polys, nil
}

func (g *ShareGuard) save() error {
	b, _ := json.Marshal(g.answered)
	if err := fsutil.WriteFileChecked(g.cfg.StateFile, b, 0o600); err != nil {
		return fmt.Errorf("secure: guard state: %w", err)
	}
	return nil
}
