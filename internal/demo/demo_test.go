package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
)

// runDemo runs the real demo (dev CA, coordinator, four hospital clients
// over gRPC+mTLS on loopback) in the given mode.
func runDemo(t *testing.T, mode string, rounds int) (*Report, string) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Mode, cfg.Rounds = mode, rounds
	var out strings.Builder
	cfg.Out = &out
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("%s demo: %v\n%s", mode, err, out.String())
	}
	if len(rep.Rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rep.Rows))
	}
	if len(rep.Rounds) != rounds {
		t.Fatalf("%d round reports, want %d", len(rep.Rounds), rounds)
	}
	for _, r := range rep.Rounds {
		if r.Failed || len(r.Contributors) != 4 {
			t.Fatalf("%s round %d: failed=%v (%s) contributors=%v", mode, r.Round, r.Failed, r.Reason, r.Contributors)
		}
		if secure := len(r.Decryptors) > 0; secure != (mode == coordinator.ModeSecure) {
			t.Fatalf("%s round %d decrypted by %v", mode, r.Round, r.Decryptors)
		}
	}
	// The regulator's offline check: the final model's lineage on the audit
	// log covers every round.
	if rep.Audit == nil || !rep.Audit.Verified || len(rep.Audit.Rounds) != rounds || len(rep.Audit.Signers) < 2 {
		t.Fatalf("%s: audit verification %+v", mode, rep.Audit)
	}
	if got := rep.Audit.HEParams != ""; got != (mode == coordinator.ModeSecure) {
		t.Fatalf("%s: lineage says HE parameters %q", mode, rep.Audit.HEParams)
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
	return rep, out.String()
}

// TestDemoSecureMatchesPlaintext runs the demo in secure mode (the default)
// and in plaintext mode with the same seeds: encryption, threshold
// decryption and DecodePublic must not cost the federated model more than
// half a percentage point of accuracy at any hospital.
func TestDemoSecureMatchesPlaintext(t *testing.T) {
	rounds := DefaultConfig().Rounds
	if testing.Short() {
		rounds = 3
	}
	sec, secOut := runDemo(t, coordinator.ModeSecure, rounds)
	plain, plainOut := runDemo(t, coordinator.ModePlaintext, rounds)
	t.Log("\n" + secOut)
	for i, r := range sec.Rows {
		p := plain.Rows[i]
		if d := math.Abs(r.Federated.Accuracy - p.Federated.Accuracy); d > 0.005 {
			t.Errorf("%s: secure accuracy %.4f, plaintext %.4f (%.2f pp apart, bound 0.5)", r.Hospital, r.Federated.Accuracy, p.Federated.Accuracy, 100*d)
		}
		t.Logf("%-14s secure %.4f plaintext %.4f", r.Hospital, r.Federated.Accuracy, p.Federated.Accuracy)
	}
	if rounds == DefaultConfig().Rounds {
		// The demo's default study (20 rounds of FedAdam) must reach the
		// foundation's bar, and the baselines must be real models.
		if fed, _, pooled := sec.MeanAccuracy(); fed < 0.70 || pooled < 0.65 {
			t.Fatalf("federated mean accuracy %.3f (pooled %.3f)", fed, pooled)
		}
	}
	for _, want := range []string{fmt.Sprintf("round %2d/%d", rounds, rounds), "Cleveland", "VA Long Beach", "federated", "pooled", "secure mode", "decrypted by", "VERIFIED", "fedledger verify"} {
		if !strings.Contains(secOut, want) {
			t.Errorf("secure output does not contain %q", want)
		}
	}
	if !strings.Contains(plainOut, "PLAINTEXT MODE") {
		t.Error("plaintext demo does not say so loudly")
	}
}

// TestDemoPersonalisedWithConsortiumStandardization: with the consortium's
// standardisation and personalisation on, every hospital reports a personal
// model of the final one on its whole test split, each round's record
// carries the contributors' personal metrics, the table shows the
// personalised column, and the pooled baseline trains on the pooled
// standardisation (it predicts Switzerland's all-positive test rows far
// better than a model on per-site standardisation can).
func TestDemoPersonalisedWithConsortiumStandardization(t *testing.T) {
	cfg := DefaultConfig()
	cfg.DataDir, cfg.Rounds, cfg.Mode, cfg.Strategy = t.TempDir(), 3, coordinator.ModePlaintext, "fedavg"
	cfg.Standardization = StandardizeConsortium
	pt := cfg.Training
	pt.LocalSteps = 100
	cfg.Personal = &client.PersonalConfig{Method: train.PersonalIntercept, Train: pt, Lambdas: []float64{1, 0}}
	var out strings.Builder
	cfg.Out = &out
	rep, err := Run(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	pm, ok := rep.MeanPersonal()
	if !ok || pm <= 0 || pm > 1 {
		t.Fatalf("personal models: mean %v, reported by all %v", pm, ok)
	}
	for _, r := range rep.Rows {
		if r.Personal.N != r.Test {
			t.Errorf("%s: personal model evaluated on %d rows, its test split has %d", r.Hospital, r.Personal.N, r.Test)
		}
		if r.Hospital == train.HospitalName("switzerland") && r.Pooled.Accuracy < 0.6 {
			t.Errorf("pooled baseline at Switzerland %.3f: not trained on the pooled standardisation", r.Pooled.Accuracy)
		}
	}
	for _, r := range rep.Rounds {
		if len(r.PersonalTest) != 4 {
			t.Errorf("round %d: personal metrics from %d sites", r.Round, len(r.PersonalTest))
		}
	}
	if !strings.Contains(out.String(), "personalised") || !strings.Contains(out.String(), "consortium standardisation") {
		t.Fatalf("the demo output does not show personalisation:\n%s", out.String())
	}
}
