package train

import (
	"math"
	"sort"
)

// Metrics of a model on a dataset.
type Metrics struct {
	Loss     float64 // mean binary cross-entropy
	Accuracy float64 // at threshold 0.5
	AUC      float64 // ROC AUC (0.5 when only one class is present)
	N        int
}

// Predict returns the model's logits for every row of data, computed in
// plain Go (it matches the Gorgonia graph; see the tests).
func Predict(spec ModelSpec, params []float64, data *Dataset) ([]float64, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if len(params) != spec.NumParams() {
		return nil, errParams(spec, len(params))
	}
	if err := data.check(spec); err != nil {
		return nil, err
	}
	layers := spec.layers()
	out := make([]float64, data.Len())
	for r, x := range data.X {
		h := x
		off := 0
		for li, l := range layers {
			w := params[off : off+l.in*l.out]
			b := params[off+l.in*l.out : off+l.in*l.out+l.out]
			off += l.in*l.out + l.out
			z := make([]float64, l.out)
			copy(z, b)
			for i := 0; i < l.in; i++ {
				xi := h[i]
				row := w[i*l.out : (i+1)*l.out]
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
func Evaluate(spec ModelSpec, params []float64, data *Dataset) (Metrics, error) {
	logits, err := Predict(spec, params, data)
	if err != nil {
		return Metrics{}, err
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
	return Metrics{Loss: loss / n, Accuracy: float64(correct) / n, AUC: AUC(logits, data.Y), N: len(logits)}, nil
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
