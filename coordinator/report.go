package coordinator

import (
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/model"
)

// RoundReport is what happened in one round: what its record says.
type RoundReport = study.RoundReport

// StudyResult is the outcome of a study.
type StudyResult struct {
	Study      string
	Model      [32]byte
	ModelBytes []byte
	Rounds     []RoundReport
	// FinalTest holds each client's metrics of the final model on its local
	// test split, as it reported them; FinalPersonal those of the personal
	// models the personalising clients made from it.
	FinalTest, FinalPersonal map[string]model.Metrics
}

// meanAccuracy is the sample-weighted mean of per-site accuracies, and the
// number of samples behind it.
func meanAccuracy(m map[string]model.Metrics) (float64, float64) {
	var acc, n float64
	for _, v := range m {
		acc += v.Accuracy * float64(v.N)
		n += float64(v.N)
	}
	if n == 0 {
		return 0, 0
	}
	return acc / n, n
}
