package secure

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
)

// Errors of the client-side decryption rules.
var (
	ErrManifest      = errors.New("secure: decryption refused: manifest")
	ErrAlreadyShared = errors.New("secure: decryption refused: a share was already given for this round")
	ErrAggregate     = errors.New("secure: decryption refused: aggregate does not match the listed contributions")
)

// Contribution is one signed entry of a decryption manifest: who
// contributed, the SHA-256 of their ciphertext payload (all envelopes,
// concatenated) and their signature over ContributionMessage.
type Contribution struct {
	Client    string
	Hash      [32]byte
	Signature []byte
}

// Manifest is what the coordinator presents when it asks for a decryption
// share: the study, the round, the contributions it summed and the hash of
// the aggregate it wants decrypted.
type Manifest struct {
	Study         string
	Round         uint64
	Contributions []Contribution
	AggregateHash [32]byte
}

// ContributionMessage is the domain-separated message a client signs for
// its contribution.
func ContributionMessage(study string, round uint64, hash [32]byte) []byte {
	msg := []byte("fedledger contribution v1\x00" + study + "\x00")
	msg = binary.BigEndian.AppendUint64(msg, round)
	return append(msg, hash[:]...)
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
	// Resum re-adds the listed ciphertexts and checks the aggregate's hash
	// before answering (on by default in client configs).
	Resum bool
}

// ShareGuard enforces a hospital's rules before it gives a decryption
// share: a manifest of at least K distinct, validly signed contributions
// for this study and round; never two shares for one round; optionally,
// the aggregate must be the sum of the listed ciphertexts.
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
	b, err := os.ReadFile(cfg.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("secure: guard state %s: %w", cfg.StateFile, err)
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

// Authorize checks a manifest and, when it passes, records the round as
// answered (durably) before returning nil: the caller may then compute and
// send its share. contributions maps each listed client to its ciphertext
// payload and is only used when Resum is on; aggregate is the ciphertexts
// the coordinator asks to decrypt.
func (g *ShareGuard) Authorize(study string, round uint64, m Manifest, preset Preset, contributions map[string][]*rlwe.Ciphertext, aggregate []*rlwe.Ciphertext) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if m.Study != study || m.Round != round {
		return fmt.Errorf("%w: for %s round %d, asked about %s round %d", ErrManifest, m.Study, m.Round, study, round)
	}
	key := roundKey(study, round)
	if g.answered[key] {
		return fmt.Errorf("%w: %s", ErrAlreadyShared, key)
	}
	seen := map[string]bool{}
	for _, c := range m.Contributions {
		if seen[c.Client] {
			return fmt.Errorf("%w: %q listed twice", ErrManifest, c.Client)
		}
		seen[c.Client] = true
		if err := g.cfg.Verify(c.Client, ContributionMessage(study, round, c.Hash), c.Signature); err != nil {
			return fmt.Errorf("%w: contribution of %q is not validly signed: %v", ErrManifest, c.Client, err)
		}
	}
	if len(seen) < g.cfg.MinContributors {
		return fmt.Errorf("%w: %d distinct contributions, at least %d required", ErrManifest, len(seen), g.cfg.MinContributors)
	}
	if got := HashCiphertexts(aggregate); got != m.AggregateHash {
		return fmt.Errorf("%w: aggregate hash %x, manifest says %x", ErrAggregate, got[:8], m.AggregateHash[:8])
	}
	if g.cfg.Resum {
		var parts [][]*rlwe.Ciphertext
		for _, c := range m.Contributions {
			cts, ok := contributions[c.Client]
			if !ok {
				return fmt.Errorf("%w: ciphertexts of %q not provided", ErrAggregate, c.Client)
			}
			if HashCiphertexts(cts) != c.Hash {
				return fmt.Errorf("%w: ciphertexts of %q do not hash to the signed value", ErrAggregate, c.Client)
			}
			parts = append(parts, cts)
		}
		sum, err := Sum(preset, parts)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrAggregate, err)
		}
		if HashCiphertexts(sum) != m.AggregateHash {
			return fmt.Errorf("%w: re-summed ciphertexts differ from the aggregate", ErrAggregate)
		}
	}
	g.answered[key] = true
	if err := g.save(); err != nil {
		delete(g.answered, key)
		return err
	}
	return nil
}

func (g *ShareGuard) save() error {
	rounds := make([]string, 0, len(g.answered))
	for r := range g.answered {
		rounds = append(rounds, r)
	}
	b, _ := json.Marshal(rounds)
	tmp := g.cfg.StateFile + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("secure: guard state: %w", err)
	}
	if _, err := f.Write(b); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, g.cfg.StateFile)
	}
	if err != nil {
		return fmt.Errorf("secure: guard state: %w", err)
	}
	if d, err := os.Open(filepath.Dir(g.cfg.StateFile)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// HashCiphertexts is the SHA-256 of the ciphertexts' binary encodings, in
// order: the content hash that contributions are signed over.
func HashCiphertexts(cts []*rlwe.Ciphertext) [32]byte {
	h := sha256.New()
	for _, ct := range cts {
		b, err := ct.MarshalBinary()
		if err != nil {
			return [32]byte{}
		}
		h.Write(b)
	}
	return [32]byte(h.Sum(nil))
}
