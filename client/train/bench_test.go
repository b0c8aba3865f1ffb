package train

import (
	"context"
	"testing"
	"time"

	"github.com/fedledger/fedledger/internal/model"
)

// BenchmarkLocalTraining measures local training throughput in samples per
// second on the Cleveland training split, for logistic regression and an
// MLP, and reports the MLP's throughput as a ratio of the logistic
// regression's measured in the same run.
func BenchmarkLocalTraining(b *testing.B) {
	tr, _, err := LoadHeart("cleveland", HeartSplitSeed)
	if err != nil {
		b.Fatal(err)
	}
	cfg := model.DefaultTrainConfig()
	cfg.BatchSize = 32
	cfg.Epochs = 0
	cfg.LocalSteps = 200
	specs := []model.Spec{{Kind: model.KindLogReg, Inputs: 13}, {Kind: model.KindMLP, Inputs: 13, Hidden: []int{64, 32}}}
	rate := map[string]float64{}
	for _, spec := range specs {
		b.Run(spec.Kind, func(b *testing.B) {
			p0, _ := model.InitParams(spec, 1)
			samples := 0
			start := time.Now()
			for i := 0; i < b.N; i++ {
				_, st, err := Train(context.Background(), spec, p0, tr, cfg)
				if err != nil {
					b.Fatal(err)
				}
				samples += st.Samples
			}
			rate[spec.Kind] = float64(samples) / time.Since(start).Seconds()
			b.ReportMetric(rate[spec.Kind], "samples/s")
			if spec.Kind == model.KindMLP && rate[model.KindLogReg] > 0 {
				b.ReportMetric(rate[model.KindMLP]/rate[model.KindLogReg], "x_logreg_throughput")
			}
		})
	}
}
