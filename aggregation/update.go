package aggregation

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// EncodingWeightedDelta names the plaintext update payload: client i's
// n_i·(w_i − w_parent) as float64 little-endian, with n_i sent alongside.
const EncodingWeightedDelta = "f64le-weighted-delta/v1"

// ErrUpdate marks a malformed or inconsistent update.
var ErrUpdate = errors.New("aggregation: bad update")

// WeightedDelta returns n·(local − parent), the vector a client
// contributes (in plaintext or under encryption), checking every value is
// finite.
func WeightedDelta(local, parent []float64, n uint64) ([]float64, error) {
	if len(local) != len(parent) {
		return nil, fmt.Errorf("%w: local model has %d parameters, parent %d", ErrUpdate, len(local), len(parent))
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: zero samples", ErrUpdate)
	}
	out := make([]float64, len(local))
	w := float64(n)
	for i := range local {
		v := w * (local[i] - parent[i])
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: delta %d is %v", ErrUpdate, i, v)
		}
		out[i] = v
	}
	return out, nil
}

// EncodeWeightedDelta encodes n·(local − parent).
func EncodeWeightedDelta(local, parent []float64, n uint64) ([]byte, error) {
	d, err := WeightedDelta(local, parent, n)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 8*len(d))
	for i, v := range d {
		binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(v))
	}
	return out, nil
}

// DecodeWeightedDelta decodes a payload that must hold exactly want finite
// values.
func DecodeWeightedDelta(b []byte, want int) ([]float64, error) {
	if want < 0 || len(b) != 8*want {
		return nil, fmt.Errorf("%w: %d bytes, want %d (%d float64)", ErrUpdate, len(b), 8*want, want)
	}
	out := make([]float64, want)
	for i := range out {
		v := math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: value %d is %v", ErrUpdate, i, v)
		}
		out[i] = v
	}
	return out, nil
}

// WeightedSum accumulates weighted deltas. Adding in a fixed order (the
// coordinator adds in client-id order) makes the result bit-reproducible.
type WeightedSum struct {
	Sum    []float64
	Weight float64
	Count  int
}

// NewWeightedSum starts an empty sum over vectors of length dim.
func NewWeightedSum(dim int) *WeightedSum { return &WeightedSum{Sum: make([]float64, dim)} }

// Add adds one client's weighted delta n·Δ and its weight n.
func (s *WeightedSum) Add(weighted []float64, n float64) error {
	if len(weighted) != len(s.Sum) {
		return fmt.Errorf("%w: %d values, want %d", ErrUpdate, len(weighted), len(s.Sum))
	}
	if !(n > 0) || math.IsInf(n, 0) {
		return fmt.Errorf("%w: weight %v", ErrUpdate, n)
	}
	for i, v := range weighted {
		s.Sum[i] += v
	}
	s.Weight += n
	s.Count++
	return nil
}

// Average returns Σ n_i Δ_i / Σ n_i.
func (s *WeightedSum) Average() ([]float64, error) {
	if s.Count == 0 || s.Weight <= 0 {
		return nil, fmt.Errorf("%w: no updates to average", ErrUpdate)
	}
	return Average(s.Sum, s.Weight)
}

// Average divides a weighted sum by its total weight (also used on the
// decrypted sums of secure aggregation).
func Average(sum []float64, weight float64) ([]float64, error) {
	if !(weight > 0) || math.IsInf(weight, 0) {
		return nil, fmt.Errorf("%w: total weight %v", ErrUpdate, weight)
	}
	out := make([]float64, len(sum))
	for i, v := range sum {
		out[i] = v / weight
	}
	return out, nil
}
