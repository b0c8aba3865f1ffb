package demo

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestDemoRunsTheFederation runs the real demo (dev CA, coordinator, four
// hospital clients over gRPC+mTLS on loopback) for a few rounds and checks
// what it reports.
func TestDemoRunsTheFederation(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	var out strings.Builder
	cfg.Out = &out
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	t.Log("\n" + out.String())
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rep.Rows))
	}
	if len(rep.Rounds) != cfg.Rounds {
		t.Fatalf("%d round reports, want %d", len(rep.Rounds), cfg.Rounds)
	}
	for _, r := range rep.Rounds {
		if r.Failed || len(r.Contributors) != 4 {
			t.Fatalf("round %d: failed=%v contributors=%v", r.Round, r.Failed, r.Contributors)
		}
	}
	tests := 0
	for _, r := range rep.Rows {
		tests += r.Test
		for _, acc := range []float64{r.Federated.Accuracy, r.Local.Accuracy, r.Pooled.Accuracy} {
			if acc <= 0 || acc > 1 {
				t.Fatalf("%s: accuracy %v out of range", r.Hospital, acc)
			}
		}
	}
	if tests != 104+89+16+45 {
		t.Fatalf("%d test rows in all, want 254", tests)
	}
	fed, _, pooled := rep.MeanAccuracy()
	// The demo's default study (20 rounds of FedAdam) must reach the
	// foundation's bar, and the baselines must be real models.
	if fed < 0.70 || pooled < 0.65 {
		t.Fatalf("federated mean accuracy %.3f (pooled %.3f)", fed, pooled)
	}
	for _, want := range []string{"round 20/20", "Cleveland", "VA Long Beach", "federated", "pooled", "plaintext mode"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not contain %q", want)
		}
	}
}
