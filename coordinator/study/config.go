package study

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/fedledger/fedledger/audit"
)

// Config is what the machine needs to know of a study.
type Config struct {
	Study string
	// Secure studies encrypt updates under a collective key (HEParams,
	// threshold t); plaintext ones do not.
	Secure    bool
	HEParams  string
	Threshold int
	// NormBound, in a secure study, is the bound on every update Δ's norm
	// the norm check holds contributions to (0: none).
	NormBound float64
	// K is the minimum number of contributions a round needs.
	K      int
	Rounds int
	// Sites are the approved hospitals.
	Sites []string
	// ManualStart waits for an admin's start before anything else.
	ManualStart bool
	// StartTimeout bounds the wait for every approved site; once it passes
	// the study starts with those connected if they are enough.
	StartTimeout    time.Duration
	KeySetupTimeout time.Duration
	// RoundDeadline bounds collecting updates; PhaseTimeout bounds
	// collecting decryption shares and countersignatures.
	RoundDeadline time.Duration
	PhaseTimeout  time.Duration
	// FinalEvalTimeout bounds the wait for the sites' evaluation of the
	// final model.
	FinalEvalTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between attempts to append a
	// record while the audit log is unavailable.
	RetryMin, RetryMax time.Duration
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Study == "" || len(c.Sites) == 0 || c.Rounds < 1 {
		errs = append(errs, errors.New("study: a study id, approved sites and rounds >= 1 are required"))
	}
	if c.K < 1 || c.K > len(c.Sites) {
		errs = append(errs, fmt.Errorf("study: K = %d with %d sites", c.K, len(c.Sites)))
	}
	if c.Secure && (c.Threshold < 2 || c.Threshold > len(c.Sites) || c.K < 2 || c.HEParams == "") {
		errs = append(errs, fmt.Errorf("study: secure study with t = %d, K = %d, %d sites, parameters %q", c.Threshold, c.K, len(c.Sites), c.HEParams))
	}
	for _, d := range []time.Duration{c.StartTimeout, c.RoundDeadline, c.PhaseTimeout, c.FinalEvalTimeout, c.RetryMin, c.RetryMax} {
		if d <= 0 {
			errs = append(errs, errors.New("study: every timeout must be > 0"))
			break
		}
	}
	if c.Secure && c.KeySetupTimeout <= 0 {
		errs = append(errs, errors.New("study: key setup timeout must be > 0"))
	}
	return errors.Join(errs...)
}

// Object is something stored at the coordinator under its SHA-256, which
// hospitals fetch by hash.
type Object struct {
	Hash audit.Hash
	Size uint64
}

// KeySetup is a finished key setup, as the hospitals vouched for it: the
// parameters, the collective key's hash, and every key holder with its
// Shamir point, its signature over audit.KeySetupMessage, its identity
// key and certificate (the identities are bound here for the rest of the
// study).
type KeySetup struct {
	HEParams      string
	Threshold     int
	CollectiveKey audit.Hash
	// Holders are sorted by point.
	Holders      []audit.KeyHolder
	Keys         map[string]ed25519.PublicKey
	Certificates map[string][]byte
}

// holder reports whether site is a key holder.
func (k *KeySetup) holder(site string) bool {
	_, ok := k.Keys[site]
	return ok
}

func (k *KeySetup) point(site string) uint64 {
	for _, h := range k.Holders {
		if h.Site == site {
			return h.Point
		}
	}
	return 0
}

// Start is where a study stands when the coordinator starts: what the
// audit log has committed, and what the coordinator itself kept on disk.
type Start struct {
	// Round is the last round the log has committed (0: none), Model its
	// output (the initial model before any) and Optimizer the server
	// optimiser's state after it (zero: the initial state).
	Round     uint64
	Model     Object
	Optimizer Object
	// Completed and Failed count the rounds on the log.
	Completed, Failed int
	// Started: the log shows the study has begun (a key setup or a round
	// is committed), so a manual start is not awaited again.
	Started bool
	// LoggedKeySetup is the key setup committed on the log; SavedKeySetup
	// the coordinator's own copy, written before it appends the record.
	// Either may be nil.
	LoggedKeySetup *KeySetup
	SavedKeySetup  *KeySetup
	// Excluded are the sites an admin has excluded on the log, by site;
	// NormViolations the first round in which each site's contribution
	// was left out by the norm check.
	Excluded       map[string]audit.Exclusion
	NormViolations map[string]uint64
}
