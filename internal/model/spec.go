package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
)

// Model kinds.
const (
	KindLogReg = "logreg"
	KindMLP    = "mlp"
)

// MaxParams bounds a model's size (2^26 parameters, 512 MiB as float64).
const MaxParams = 1 << 26

// ErrSpec marks an invalid model specification.
var ErrSpec = errors.New("model: invalid model spec")

// Spec describes a model's architecture.
type Spec struct {
	Kind   string `json:"kind"`
	Inputs int    `json:"inputs"`
	Hidden []int  `json:"hidden,omitempty"`
}

// Validate checks the spec.
func (s Spec) Validate() error {
	switch s.Kind {
	case KindLogReg:
		if len(s.Hidden) != 0 {
			return fmt.Errorf("%w: logreg takes no hidden layers, got %v", ErrSpec, s.Hidden)
		}
	case KindMLP:
		if len(s.Hidden) == 0 {
			return fmt.Errorf("%w: mlp needs at least one hidden layer", ErrSpec)
		}
	default:
		return fmt.Errorf("%w: kind %q (want %q or %q)", ErrSpec, s.Kind, KindLogReg, KindMLP)
	}
	if s.Inputs < 1 {
		return fmt.Errorf("%w: inputs = %d, want >= 1", ErrSpec, s.Inputs)
	}
	for i, h := range s.Hidden {
		if h < 1 {
			return fmt.Errorf("%w: hidden[%d] = %d, want >= 1", ErrSpec, i, h)
		}
	}
	n := 0
	for _, l := range s.Layers() {
		n += l.In*l.Out + l.Out
		if n > MaxParams {
			return fmt.Errorf("%w: more than %d parameters", ErrSpec, MaxParams)
		}
	}
	return nil
}

// Layer is one dense layer: In inputs, Out outputs.
type Layer struct{ In, Out int }

// Layers lists the dense layers from input to the single-logit output.
func (s Spec) Layers() []Layer {
	var ls []Layer
	in := s.Inputs
	for _, h := range s.Hidden {
		ls = append(ls, Layer{in, h})
		in = h
	}
	return append(ls, Layer{in, 1})
}

// NumParams is the length of the model's parameter vector.
func (s Spec) NumParams() int {
	n := 0
	for _, l := range s.Layers() {
		n += l.In*l.Out + l.Out
	}
	return n
}

// String is a short human description, e.g. "mlp 13-16-8-1".
func (s Spec) String() string {
	out := fmt.Sprintf("%s %d", s.Kind, s.Inputs)
	for _, h := range s.Hidden {
		out += fmt.Sprintf("-%d", h)
	}
	return out + "-1"
}

// InitParams returns initial parameters: Glorot-uniform weights and zero
// biases, the same for the same seed.
func InitParams(spec Spec, seed int64) ([]float64, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(seed))
	p := make([]float64, 0, spec.NumParams())
	for _, l := range spec.Layers() {
		limit := math.Sqrt(6 / float64(l.In+l.Out))
		for i := 0; i < l.In*l.Out; i++ {
			p = append(p, (rng.Float64()*2-1)*limit)
		}
		p = append(p, make([]float64, l.Out)...)
	}
	return p, nil
}

// ErrParams says params do not fit spec.
func ErrParams(spec Spec, got int) error {
	return fmt.Errorf("%w: %d parameters for %s, want %d", ErrSpec, got, spec, spec.NumParams())
}
