package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator/study"
)

// Recorder keeps a study's record and says where the study stands:
// AuditRecorder commits it to the audit log, LogRecorder only logs it.
type Recorder interface {
	// Begin checks the study can run as configured (with an audit log:
	// the admin's study record is on it and says the same; appending the
	// record the recorder was given if the log has none yet) and returns
	// where it stands, for a restarted coordinator to carry on from.
	Begin(ctx context.Context, s StudyStart) (LogState, error)
	// Record appends a key-setup or round record and returns once it is
	// committed. An error wrapping ErrLogUnavailable means nothing was
	// acknowledged and the same record may be appended again; any other
	// error means the log refused it.
	Record(ctx context.Context, r study.Record) error
	// Relay appends an admin's signed record (an exclusion) as it is and
	// returns once it is committed.
	Relay(ctx context.Context, env []byte) error
}

// ErrLogUnavailable: the audit log could not be reached or has no quorum.
var ErrLogUnavailable = errors.New("coordinator: the audit log is unavailable")

// StudyStart is the study as this coordinator is configured to run it.
type StudyStart struct {
	Study        StudyConfig
	InitialModel [32]byte
}

// LogState is where a study stands on the audit log.
type LogState struct {
	// Round is the last committed round (0: none), Model its output (the
	// initial model before any) and Optimizer the server optimiser's state
	// after the last completed round (zero: the initial state).
	Round     uint64
	Model     audit.Hash
	Optimizer audit.Hash
	Completed int
	Failed    int
	// Started: a key setup or a round is on the log.
	Started bool
	// KeySetup is the committed key setup, with the key holders'
	// identities (nil: none).
	KeySetup *study.KeySetup
	// Excluded are the sites an admin has excluded (not readmitted), and
	// NormViolations the first round each site's contribution was left
	// out by the norm check.
	Excluded       map[string]audit.Exclusion
	NormViolations map[string]uint64
}

// LogRecorder is the Recorder without an audit log: it writes one slog
// line per milestone and never fails. Nothing is vouched for, and a
// restarted coordinator starts the study over: for development only.
type LogRecorder struct {
	Logger *slog.Logger
}

// Begin implements Recorder: a study without a log starts at round 1.
func (r LogRecorder) Begin(ctx context.Context, s StudyStart) (LogState, error) {
	r.log().WarnContext(ctx, "no audit log configured: rounds are not recorded on a replicated log, and a restarted coordinator starts the study over",
		slog.String("initial_model", fmt.Sprintf("%x", s.InitialModel)))
	return LogState{Model: s.InitialModel}, nil
}

// Record implements Recorder.
func (r LogRecorder) Record(ctx context.Context, rec study.Record) error {
	if rec.Round != nil {
		r.log().InfoContext(ctx, "round finished (not on an audit log)", slog.Int("round", rec.Round.Round), slog.Bool("failed", rec.Round.Failed),
			slog.String("model", fmt.Sprintf("%x", rec.Round.Model)))
	}
	return nil
}

func (r LogRecorder) log() *slog.Logger {
	if r.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Logger
}
