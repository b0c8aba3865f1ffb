package coordinator

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// StudyConfig describes one study: the model, the local training every
// client runs, the rounds and the server strategy.
type StudyConfig struct {
	ID       string
	Model    train.ModelSpec
	Training train.TrainConfig
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
	// OnRound, if set, is called from the study goroutine after each round.
	OnRound func(RoundReport)
	// Aggregator combines a round's updates; nil means a PlaintextAggregator
	// for Study.Strategy.
	Aggregator Aggregator
	// Recorder is told about every round; nil means a LogRecorder.
	Recorder RoundRecorder
	// TickInterval is how often deadlines are checked.
	TickInterval time.Duration
	// FinalEvalTimeout bounds the wait for clients' evaluation of the final
	// model.
	FinalEvalTimeout time.Duration
}

// DefaultConfig returns defaults for everything but the study, data
// directory and TLS.
func DefaultConfig() Config {
	return Config{ChunkSize: chunk.DefaultSize, TickInterval: 100 * time.Millisecond, FinalEvalTimeout: 30 * time.Second}
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
	if c.TickInterval <= 0 || c.FinalEvalTimeout <= 0 {
		errs = append(errs, errors.New("tick interval and final evaluation timeout must be > 0"))
	}
	if err := c.Study.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RoundReport is what happened in one round.
type RoundReport struct {
	Round        int
	Contributors []string
	Dropped      []string
	Failed       bool
	Reason       string
	// Model is the round's output model (the unchanged parent if it failed).
	Model    [32]byte
	Duration time.Duration
	// ParentTest holds each contributor's metrics of the round's starting
	// model on its local test split.
	ParentTest map[string]train.Metrics
	// TrainLoss is the sample-weighted mean local training loss.
	TrainLoss float64
}

// StudyResult is the outcome of a study.
type StudyResult struct {
	Study      string
	Model      [32]byte
	ModelBytes []byte
	Rounds     []RoundReport
	// FinalTest holds each client's metrics of the final model on its local
	// test split.
	FinalTest map[string]train.Metrics
}
