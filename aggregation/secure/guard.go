package secure

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"

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
// for this study, round and parent, in site order; never two shares for
// one round; and the aggregate must be the sum of exactly the listed
// ciphertexts, which the guard re-adds itself. There is no switch that
// turns the re-sum off: without it, a coordinator could present one
// hospital's ciphertext as the "aggregate" of a valid manifest and have
// the others decrypt it.
type ShareGuard struct {
	cfg      GuardConfig
	mu       sync.Mutex
	answered map[string]bool
}

// OpenShareGuard loads (or creates) the guard's state file.
func OpenShareGuard(cfg GuardConfig) (*ShareGuard, error) {
	if cfg.MinContributors < 1 || cfg.StateFile == "" || cfg.Verify == nil {
		return nil, fmt.Errorf("%w: guard needs K >= 1, a state file and a signature verifier", ErrInput)
	}
	g := &ShareGuard{cfg: cfg, answered: map[string]bool{}}
	b, err := fsutil.ReadFileChecked(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("secure: guard state: %w", err)
	default:
		var rounds []string
		if err := json.Unmarshal(b, &rounds); err != nil {
			return nil, fmt.Errorf("secure: guard state %s is corrupt: %w", cfg.StateFile, err)
		}
		for _, r := range rounds {
			g.answered[r] = true
		}
	}
	return g, nil
}

func roundKey(study string, round uint64) string { return fmt.Sprintf("%s/%d", study, round) }

// Fetcher returns the payload of a listed contribution, by its contributor
// and the hash the contributor signed. The guard checks the hash itself.
type Fetcher func(client string, hash [32]byte) ([]byte, error)

// Authorize checks a manifest and, when it passes, records the round as
// answered (durably) before returning the opened aggregate: the caller may
// then compute and send its share. aggregate is the payload the coordinator
// asks to decrypt. fetch is called for each listed contribution in turn
// and each is added to a running sum and dropped, so memory stays at about
// two contributions whatever their number.
func (g *ShareGuard) Authorize(study string, round uint64, m Manifest, preset Preset, fetch Fetcher, aggregate []byte) ([]*rlwe.Ciphertext, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.Study != study || m.Round != round {
		return nil, fmt.Errorf("%w: for %s round %d, asked about %s round %d", ErrManifest, m.Study, m.Round, study, round)
	}
	key := roundKey(study, round)
	if g.answered[key] {
		return nil, fmt.Errorf("%w: %s", ErrAlreadyShared, key)
	}
	seen := map[string]bool{}
	for i, c := range m.Contributions {
		if seen[c.Site] {
			return nil, fmt.Errorf("%w: %q listed twice", ErrManifest, c.Site)
		}
		if i > 0 && m.Contributions[i-1].Site > c.Site {
			return nil, fmt.Errorf("%w: contributions are not in site order", ErrManifest)
		}
		seen[c.Site] = true
		if err := g.cfg.Verify(c.Site, c.Message(study, round, m.Parent), c.Signature); err != nil {
			return nil, fmt.Errorf("%w: contribution of %q is not validly signed: %v", ErrManifest, c.Site, err)
		}
	}
	if len(seen) < g.cfg.MinContributors {
		return nil, fmt.Errorf("%w: %d distinct contributions, at least %d required", ErrManifest, len(seen), g.cfg.MinContributors)
	}
	if got := sha256.Sum256(aggregate); got != m.AggregateHash {
		return nil, fmt.Errorf("%w: aggregate hash %x, manifest says %x", ErrAggregate, got[:8], m.AggregateHash[:8])
	}
	agg, err := OpenCiphertexts(aggregate, Expect{Kind: KindAggregate, Preset: preset, Study: study, Round: round, Count: uint32(m.Count)})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrAggregate, err)
	}
	if err := resum(study, round, m, preset, fetch); err != nil {
		return nil, err
	}
	g.answered[key] = true
	if err := g.save(); err != nil {
		delete(g.answered, key)
		return nil, err
	}
	return agg, nil
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
		cts, err := OpenCiphertexts(p, Expect{Kind: KindContribution, Preset: preset, Study: study, Round: round, Count: uint32(m.Count)})
		if err != nil {
			return fmt.Errorf("%w: contribution of %q: %v", ErrAggregate, c.Site, err)
		}
		if err := acc.Add(cts); err != nil {
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
	rounds := make([]string, 0, len(g.answered))
	for r := range g.answered {
		rounds = append(rounds, r)
	}
	b, _ := json.Marshal(rounds)
	if err := fsutil.WriteFileChecked(g.cfg.StateFile, b, 0o600); err != nil {
		return fmt.Errorf("secure: guard state: %w", err)
	}
	return nil
}
