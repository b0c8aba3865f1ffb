package coordinator

import (
	"context"
	"encoding/hex"
	"log/slog"
)

// Recorder is told about a study's milestones before the study moves on:
// the study's start (with its initial model), the end of secure key setup,
// and every finished round (aggregated or failed). AuditRecorder commits
// them to the audit log; an error stops the study, so a round counts as
// done only once it is recorded.
type Recorder interface {
	// StudyStarted checks the study can start (or resume) and says where
	// it stands: the last committed round and its model.
	StudyStarted(ctx context.Context, s StudyStart) (Resume, error)
	KeySetupDone(ctx context.Context, k KeySetup) error
	RecordRound(ctx context.Context, rep RoundReport) error
}

// StudyStart is the study as it begins.
type StudyStart struct {
	Study        StudyConfig
	InitialModel [32]byte
}

// KeySetup is the outcome of a secure key setup.
type KeySetup struct {
	Study         string
	HEPreset      string
	Threshold     int
	Participants  []string
	CollectiveKey [32]byte
}

// LogRecorder is the Recorder when no audit log is configured: it writes
// one slog line per milestone and never fails.
type LogRecorder struct {
	Logger *slog.Logger
}

// StudyStarted implements Recorder. Without a log there is nothing to
// resume from: the study starts at round 1.
func (r LogRecorder) StudyStarted(ctx context.Context, s StudyStart) (Resume, error) {
	if r.Logger != nil {
		r.Logger.WarnContext(ctx, "no audit log configured: rounds are not recorded on a replicated log, and a restarted coordinator starts the study over",
			slog.String("initial_model", hex.EncodeToString(s.InitialModel[:])))
	}
	return Resume{Model: s.InitialModel}, nil
}

// KeySetupDone implements Recorder.
func (r LogRecorder) KeySetupDone(context.Context, KeySetup) error { return nil }

// RecordRound implements Recorder.
func (r LogRecorder) RecordRound(ctx context.Context, rep RoundReport) error {
	if r.Logger == nil {
		return nil
	}
	r.Logger.InfoContext(ctx, "round finished (not on an audit log)", slog.Int("round", rep.Round),
		slog.Bool("failed", rep.Failed), slog.String("model", hex.EncodeToString(rep.Model[:])),
		slog.Any("contributors", rep.Contributors))
	return nil
}
