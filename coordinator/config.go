package coordinator

import (
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/fedledger/fedledger/internal/model"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/privacy"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Study modes.
const (
	// ModeSecure: clients send updates encrypted under the study's
	// collective key (Lattigo multiparty CKKS); the coordinator only adds
	// ciphertexts and needs t clients' decryption shares to read the sum.
	ModeSecure = "secure"
	// ModePlaintext: clients send plaintext updates the coordinator can
	// read. For development and baselines only.
	ModePlaintext = "plaintext"
)

// StudyConfig describes one study: the model, the local training every
// client runs, the rounds and the server strategy.
type StudyConfig struct {
	ID       string
	Model    model.Spec
	Training model.TrainConfig
	Rounds   int
	// MinClients is K: a round with fewer updates fails.
	MinClients int
	// Clients are the approved client ids (certificate CommonNames).
	Clients       []string
	RoundDeadline time.Duration
	// StartTimeout bounds the wait for all clients before round 1; the
	// study starts anyway once it passes with at least K connected.
	StartTimeout time.Duration
	Strategy     aggregation.Config
	// Seed of the initial model.
	Seed int64
	// Mode is ModeSecure or ModePlaintext.
	Mode string
	// Secure mode: the HE parameter preset, the decryption threshold t
	// (any t key holders can decrypt an aggregate; fewer cannot), and the
	// seed of the common reference string for the collective key (empty:
	// derived from the study id, see CRS).
	HEPreset  string
	Threshold int
	CRSSeed   []byte
	// KeySetupTimeout bounds the secure key setup before round 1.
	KeySetupTimeout time.Duration
	// Purpose says what the study is for (on the study record).
	Purpose string
	// ManualStart makes the coordinator wait for an admin's
	// StudyAdmin.Start (fedledger study start) before round 1.
	ManualStart bool
	// Features optionally names the model's input columns, in order;
	// clients whose data has other columns refuse the study.
	Features []string
	// PhaseTimeout bounds collecting decryption shares and
	// countersignatures (0: RoundDeadline).
	PhaseTimeout time.Duration
	// ValidationFraction, when > 0, makes the study a tuning trial's: each
	// hospital holds out this fraction of its training split, trains on
	// the rest and evaluates (and signs its figures) on the held-out part;
	// its test split is not used.
	ValidationFraction float64
	// Trial names the tuning run and trial this study is (nil: none); on
	// the study record.
	Trial *Trial
	// NormBound, when > 0, bounds every hospital's update: each clips Δ to
	// this L2 norm, and in a secure study the coordinator checks it under
	// encryption (t key holders open one projection per contribution) and
	// leaves out a contribution past it before the aggregate is formed.
	NormBound float64
	// Robust, when set, replaces a plaintext study's sample-weighted
	// average of the updates with a robust aggregator (aggregation.Robust:
	// median, trimmed-mean:T or multi-krum:F); on the study record.
	Robust string
	// DP, when set, makes the study record-level differentially private:
	// every hospital trains with DP-SGD, and the study's ε per hospital
	// may not pass the budget (every audit node enforces it).
	DP *DPConfig
	// TunedBy names the tuning run that chose this study's
	// hyperparameters (on the study record; tuning.Recompute checks the
	// choice from the log).
	TunedBy string
}

// DPConfig is a record-level DP study's budget and DP-SGD mechanism.
type DPConfig struct {
	// Epsilon and Delta: the budget per hospital over the whole study.
	Epsilon, Delta float64
	// NoiseMultiplier σ, ClipNorm C and SampleRate q of DP-SGD.
	NoiseMultiplier, ClipNorm, SampleRate float64
	// Level is "" (record-level DP-SGD) or audit.DPClient: DP-FedAvg,
	// each hospital's update clipped to ClipNorm, noise of σ·ClipNorm on
	// the sum shared among at least K hospitals, SampleRate 1.
	Level string
}

// CalibrateNoise is the smallest noise multiplier (to 1e-4 relative, rounded
// up) whose ε after rounds rounds of localSteps DP-SGD steps at d's
// sample rate stays within d.Epsilon at d.Delta.
func CalibrateNoise(d DPConfig, rounds, localSteps int) (float64, error) {
	if d.Level == audit.DPClient {
		localSteps = 1 // one mechanism a round
	}
	if rounds < 1 || localSteps < 1 {
		return 0, fmt.Errorf("calibrating the noise needs rounds (%d) and local_steps (%d) >= 1", rounds, localSteps)
	}
	sigma, err := privacy.NoiseMultiplier(d.Epsilon, d.Delta, d.SampleRate, rounds*localSteps)
	if err != nil {
		return 0, err
	}
	// Keep four significant figures, rounded up: the record shows a short
	// number and ε stays within the budget.
	scale := math.Pow(10, 3-math.Floor(math.Log10(sigma)))
	return math.Ceil(sigma*scale) / scale, nil
}

// DPBudget is the study's budget as the audit rules read it from the
// study record (nil: not a DP study).
func (s StudyConfig) DPBudget() (*audit.DPBudget, error) {
	if s.DP == nil {
		return nil, nil
	}
	return audit.DPBudgetOf(&audit.Record{Hyperparameters: studyParams(s)})
}

// Trial identifies a tuning trial's study.
type Trial struct {
	// Tuning is the tuning run's id; Name the trial within it.
	Tuning, Name string
}

// Secure reports whether the study runs in secure mode.
func (s StudyConfig) Secure() bool { return s.Mode == ModeSecure }

// CRS returns the seed of the common reference string: CRSSeed if set,
// else SHA-256("fedledger crs v1" | study id), a value nobody chose.
func (s StudyConfig) CRS() []byte {
	if len(s.CRSSeed) > 0 {
		return s.CRSSeed
	}
	h := sha256.Sum256([]byte("fedledger crs v1\x00" + s.ID))
	return h[:]
}

// Validate checks the study.
func (s StudyConfig) Validate() error {
	var errs []error
	if err := tlsutil.ValidID(s.ID); err != nil {
		errs = append(errs, fmt.Errorf("study id: %w", err))
	}
	if err := s.Model.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := s.Training.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := s.Strategy.Validate(); err != nil {
		errs = append(errs, err)
	}
	if s.Rounds < 1 {
		errs = append(errs, fmt.Errorf("study.rounds = %d, want >= 1", s.Rounds))
	}
	seen := map[string]bool{}
	for _, c := range s.Clients {
		if err := tlsutil.ValidID(c); err != nil {
			errs = append(errs, fmt.Errorf("study.clients: %w", err))
		}
		if seen[c] {
			errs = append(errs, fmt.Errorf("study.clients: %q listed twice", c))
		}
		seen[c] = true
	}
	if len(s.Clients) == 0 {
		errs = append(errs, errors.New("study.clients is empty: list the approved hospitals"))
	}
	if s.MinClients < 1 || s.MinClients > len(s.Clients) {
		errs = append(errs, fmt.Errorf("study.min_clients = %d, want 1..%d (the number of approved clients)", s.MinClients, len(s.Clients)))
	}
	switch s.Mode {
	case ModeSecure:
		if _, err := secure.LookupPreset(s.HEPreset); err != nil {
			errs = append(errs, fmt.Errorf("study.he_preset: %w", err))
		}
		if s.Threshold < 2 || s.Threshold > len(s.Clients) {
			errs = append(errs, fmt.Errorf("study.threshold = %d, want 2..%d: with t = 1 any single hospital could decrypt the others' updates", s.Threshold, len(s.Clients)))
		} else if 2*s.Threshold <= len(s.Clients) {
			errs = append(errs, fmt.Errorf("study.threshold = %d of %d clients is not a majority: two disjoint sets of t hospitals could each decrypt a different sum of one round, and the difference of two sums is one hospital's update; want at least %d", s.Threshold, len(s.Clients), len(s.Clients)/2+1))
		}
		if s.MinClients < 2 {
			errs = append(errs, fmt.Errorf("study.min_clients = %d: secure mode needs K >= 2, or an aggregate is one hospital's update", s.MinClients))
		}
		if len(s.CRSSeed) > 0 && len(s.CRSSeed) < 16 {
			errs = append(errs, fmt.Errorf("study.crs_seed has %d bytes, want >= 16", len(s.CRSSeed)))
		}
		if s.KeySetupTimeout <= 0 {
			errs = append(errs, errors.New("study.key_setup_timeout must be > 0"))
		}
	case ModePlaintext:
	default:
		errs = append(errs, fmt.Errorf("study.mode = %q, want %q or %q", s.Mode, ModeSecure, ModePlaintext))
	}
	if s.ValidationFraction < 0 || s.ValidationFraction >= 0.9 || math.IsNaN(s.ValidationFraction) {
		errs = append(errs, fmt.Errorf("study.validation_fraction = %v, want 0 (none) or in (0, 0.9)", s.ValidationFraction))
	}
	if s.Trial != nil && s.ValidationFraction == 0 {
		errs = append(errs, fmt.Errorf("study %q is trial %q of tuning %q but holds out no validation split: a trial is scored on validation data only", s.ID, s.Trial.Name, s.Trial.Tuning))
	}
	if s.DP != nil {
		if s.DP.Level != audit.DPClient && s.Training.LocalSteps < 1 {
			errs = append(errs, fmt.Errorf("study.dp: a DP study fixes training.local_steps (got %d): its privacy accounting counts steps", s.Training.LocalSteps))
		} else if b, err := s.DPBudget(); err != nil {
			errs = append(errs, fmt.Errorf("study.dp: %w", err))
		} else if n, err := b.Rounds(1); err != nil || n < 1 {
			spent, _ := b.Spent(1)
			errs = append(errs, fmt.Errorf("study.dp: one round already spends ε = %.3f, past the budget %g: raise the noise multiplier, or lower local_steps or the sample rate", spent, b.Epsilon))
		}
	}
	if s.NormBound < 0 || math.IsNaN(s.NormBound) || math.IsInf(s.NormBound, 0) {
		errs = append(errs, fmt.Errorf("study.norm_bound = %v, want 0 (none) or a finite bound > 0", s.NormBound))
	} else if s.NormBound > 0 && !s.Secure() {
		errs = append(errs, fmt.Errorf("study.norm_bound is checked under encryption, in secure studies; a plaintext study has no such check yet"))
	}
	if r, err := aggregation.ParseRobust(s.Robust); err != nil {
		errs = append(errs, fmt.Errorf("study.robust_aggregator: %w", err))
	} else if r != nil && s.Secure() {
		errs = append(errs, fmt.Errorf("study.robust_aggregator needs each hospital's update, which a secure study never shows the coordinator; bound every update with study.norm_bound instead"))
	} else if r != nil && s.MinClients < r.MinUpdates() {
		errs = append(errs, fmt.Errorf("study.robust_aggregator %s needs at least %d updates a round; study.min_clients is %d", r, r.MinUpdates(), s.MinClients))
	}
	if s.TunedBy != "" {
		if err := tlsutil.ValidID(s.TunedBy); err != nil {
			errs = append(errs, fmt.Errorf("study.tuned_by: %w", err))
		}
	}
	if s.RoundDeadline <= 0 || s.StartTimeout <= 0 {
		errs = append(errs, fmt.Errorf("study.round_deadline (%v) and study.start_timeout (%v) must be > 0", s.RoundDeadline, s.StartTimeout))
	}
	return errors.Join(errs...)
}

// Config configures a Coordinator.
type Config struct {
	DataDir string
	Study   StudyConfig
	// TLS is the server's mutual-TLS configuration; there is no other mode.
	TLS       *tls.Config
	ChunkSize int
	// OnRound, if set, is called after each round is committed.
	OnRound func(RoundReport)
	// OnFinish, if set, is called once the study has ended (before the
	// coordinator lingers).
	OnFinish func(StudyResult, error)
	// Recorder keeps the study's milestones (its start, key setup, every
	// round) and says where the study stands when the coordinator starts;
	// nil means a LogRecorder (no audit log: nothing to resume from).
	Recorder Recorder
	// RecordTimeout bounds one attempt to append a record; while the audit
	// log is unavailable the coordinator retries with backoff from
	// RetryMin to RetryMax, saying so in its log and status.
	RecordTimeout      time.Duration
	RetryMin, RetryMax time.Duration
	// Linger keeps the StudyAdmin status (with the final model and the
	// sites' results) and the final model's download served this long
	// after the study ends (0: stop at once; negative: until Run's context
	// ends).
	Linger time.Duration
	// TickInterval is how often deadlines are checked.
	TickInterval time.Duration
	// FinalEvalTimeout bounds the wait for clients' evaluation of the final
	// model.
	FinalEvalTimeout time.Duration
}

// DefaultConfig returns defaults for everything but the study, data
// directory and TLS.
func DefaultConfig() Config {
	return Config{ChunkSize: chunk.DefaultSize, TickInterval: 100 * time.Millisecond, FinalEvalTimeout: 30 * time.Second,
		RecordTimeout: 30 * time.Second, RetryMin: time.Second, RetryMax: 30 * time.Second}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir is empty"))
	}
	if c.TLS == nil || c.TLS.ClientAuth != tls.RequireAndVerifyClientCert {
		errs = append(errs, errors.New("coordinator: TLS with verified client certificates is required"))
	}
	if c.ChunkSize < 1024 || c.ChunkSize > 2*chunk.DefaultSize {
		errs = append(errs, fmt.Errorf("chunk size %d, want 1 KiB..2 MiB", c.ChunkSize))
	}
	if c.TickInterval <= 0 || c.FinalEvalTimeout <= 0 || c.RecordTimeout <= 0 || c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		errs = append(errs, errors.New("tick interval, final evaluation and record timeouts must be > 0, and the retry backoff a range"))
	}
	if err := c.Study.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
