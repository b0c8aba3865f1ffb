package train

import (
	"math"
	"sort"

	"github.com/fedledger/fedledger/internal/model"
)

// Predict returns the model's logits for every row of data, computed in
// plain Go (it matches the Gorgonia graph; see the tests).
func Predict(spec model.Spec, params []float64, data *Dataset) ([]float64, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if len(params) != spec.NumParams() {
		return nil, model.ErrParams(spec, len(params))
	}
	if err := data.check(spec); err != nil {
		return nil, err
	}
	layers := spec.Layers()
	out := make([]float64, data.Len())
	for r, x := range data.X {
		h := x
		off := 0
		for li, l := range layers {
			w := params[off : off+l.In*l.Out]
			b := params[off+l.In*l.Out : off+l.In*l.Out+l.Out]
			off += l.In*l.Out + l.Out
			z := make([]float64, l.Out)
			copy(z, b)
			for i := 0; i < l.In; i++ {
				xi := h[i]
				row := w[i*l.Out : (i+1)*l.Out]
				for j := range z {
					z[j] += xi * row[j]
				}
			}
			if li < len(layers)-1 {
				for j := range z {
					z[j] = math.Max(0, z[j])
				}
			}
			h = z
		}
		out[r] = h[0]
	}
	return out, nil
}

// Evaluate computes loss, accuracy and ROC AUC of the model on data.
func Evaluate(spec model.Spec, params []float64, data *Dataset) (model.Metrics, error) {
	logits, err := Predict(spec, params, data)
	if err != nil {
		return model.Metrics{}, err
	}
	var loss float64
	correct := 0
	for i, z := range logits {
		loss += softplus(z) - data.Y[i]*z
		if (z > 0) == (data.Y[i] > 0.5) {
			correct++
		}
	}
	n := float64(len(logits))
	return model.Metrics{Loss: loss / n, Accuracy: float64(correct) / n, AUC: AUC(logits, data.Y), N: len(logits)}, nil
}

// AUC is the area under the ROC curve of scores against binary labels: the
// probability that a random positive scores above a random negative, ties
// counting half (Mann-Whitney U with average ranks). It is 0.5 when only
// one class is present.
func AUC(scores, labels []float64) float64 {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return scores[idx[a]] < scores[idx[b]] })
	var rankSumPos, nPos float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && scores[idx[j]] == scores[idx[i]] {
			j++
		}
		avgRank := float64(i+j+1) / 2 // ranks i+1..j
		for k := i; k < j; k++ {
			if labels[idx[k]] > 0.5 {
				rankSumPos += avgRank
				nPos++
			}
		}
		i = j
	}
	nNeg := float64(len(scores)) - nPos
	if nPos == 0 || nNeg == 0 {
		return 0.5
	}
	return (rankSumPos - nPos*(nPos+1)/2) / (nPos * nNeg)
}

func softplus(z float64) float64 {
	if z > 30 {
		return z
	}
	return math.Log1p(math.Exp(z))
}
