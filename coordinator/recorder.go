package coordinator

import (
	"context"
	"encoding/hex"
	"log/slog"
)

// RoundRecorder is told about every finished round (aggregated or failed)
// before the study moves on. This is where "round committed to the audit
// log" will happen; an error stops the study.
type RoundRecorder interface {
	RecordRound(ctx context.Context, rep RoundReport) error
}

// LogRecorder is the stand-in RoundRecorder until the audit log exists: it
// writes one slog line per round and never fails.
type LogRecorder struct {
	Logger *slog.Logger
}

// RecordRound implements RoundRecorder.
func (r LogRecorder) RecordRound(ctx context.Context, rep RoundReport) error {
	if r.Logger == nil {
		return nil
	}
	r.Logger.InfoContext(ctx, "round recorded (no audit log yet)", slog.Int("round", rep.Round),
		slog.Bool("failed", rep.Failed), slog.String("model", hex.EncodeToString(rep.Model[:])),
		slog.Any("contributors", rep.Contributors))
	return nil
}
