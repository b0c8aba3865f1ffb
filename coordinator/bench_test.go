package coordinator_test

import (
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
)

// BenchmarkFullRound runs whole studies on the fedtest federation (real
// gRPC + mTLS on loopback, four hospital clients on the heart data, every
// round countersigned and committed to a one-node audit log), once in
// plaintext and once in secure mode (t = 3), on the same model and
// clients, and reports the mean wall time of a round (announce → train →
// upload → aggregate → decrypt → combine → countersign → record; key
// setup excluded) and the secure/plaintext ratio. Two models: the study's
// logistic regression (14 parameters, fixed costs dominate) and an MLP of
// about 10^6 parameters.
func BenchmarkFullRound(b *testing.B) {
	for _, bc := range []struct {
		name  string
		model model.Spec
	}{
		{"logreg-14", model.Spec{Kind: model.KindLogReg, Inputs: 13}},
		{"mlp-1M", model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{1000, 985}}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			const rounds = 3
			for i := 0; i < b.N; i++ {
				mean := map[string]time.Duration{}
				for _, mode := range []string{coordinator.ModePlaintext, coordinator.ModeSecure} {
					fed := startFed(b, fedtest.Config{Study: benchStudy(bc.model, rounds, mode), AuditNodes: 1})
					startClients(b, fed, nil)
					res, err := fed.Wait(30 * time.Minute)
					if err != nil {
						b.Fatal(err)
					}
					fed.Close()
					var total time.Duration
					for _, r := range res.Rounds {
						if r.Failed {
							b.Fatalf("%s round %d failed: %s", mode, r.Round, r.Reason)
						}
						total += r.Duration
					}
					mean[mode] = total / time.Duration(len(res.Rounds))
				}
				b.ReportMetric(float64(bc.model.NumParams()), "params")
				b.ReportMetric(mean[coordinator.ModePlaintext].Seconds(), "plaintext_s/round")
				b.ReportMetric(mean[coordinator.ModeSecure].Seconds(), "secure_s/round")
				b.ReportMetric(mean[coordinator.ModeSecure].Seconds()/mean[coordinator.ModePlaintext].Seconds(), "x_secure/plaintext")
			}
		})
	}
}

func benchStudy(spec model.Spec, rounds int, mode string) coordinator.StudyConfig {
	strat, _ := aggregation.DefaultConfig(aggregation.FedAvg)
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps = 0, 20
	return coordinator.StudyConfig{
		ID: "bench", Model: spec, Training: tc, Rounds: rounds, MinClients: 4, Clients: train.Hospitals,
		RoundDeadline: 10 * time.Minute, StartTimeout: time.Minute, Strategy: strat, Seed: 1, Mode: mode,
		HEPreset: secure.Default.ID, Threshold: 3, KeySetupTimeout: 5 * time.Minute,
	}
}
