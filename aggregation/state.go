package aggregation

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// The server optimiser's state file: what the coordinator stores under its
// SHA-256 after each round, what a round record names (OptimizerBefore,
// OptimizerAfter) and what a countersigning hospital fetches to recompute
// the round's model. Canonical: the decoder rejects anything Marshal would
// not have produced, so one state has one hash.
//
//	"FLOPT\x00"          6-byte magic
//	version   u8         1
//	name      u8 length, then the strategy name
//	server_lr, beta1, beta2, tau   float64 bits, big endian
//	steps     u64 BE
//	dim       u64 BE     0 until an adaptive optimiser's first step
//	m, v      dim float64 each, little endian (adaptive optimisers only)
const (
	stateMagic   = "FLOPT\x00"
	stateVersion = 1
	maxStateDim  = 1 << 26
)

// MarshalBinary encodes the optimiser's configuration and state.
func (o *ServerOptimizer) MarshalBinary() ([]byte, error) {
	c := o.cfg
	if len(c.Name) > 255 {
		return nil, fmt.Errorf("%w: strategy name of %d bytes", ErrConfig, len(c.Name))
	}
	if len(o.M) != len(o.V) {
		return nil, fmt.Errorf("%w: %d first and %d second moments", ErrConfig, len(o.M), len(o.V))
	}
	b := make([]byte, 0, len(stateMagic)+2+len(c.Name)+48+16*len(o.M))
	b = append(b, stateMagic...)
	b = append(b, stateVersion, byte(len(c.Name)))
	b = append(b, c.Name...)
	for _, v := range []float64{c.ServerLR, c.Beta1, c.Beta2, c.Tau} {
		b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
	}
	b = binary.BigEndian.AppendUint64(b, uint64(o.Steps))
	b = binary.BigEndian.AppendUint64(b, uint64(len(o.M)))
	for _, vec := range [][]float64{o.M, o.V} {
		for _, v := range vec {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
	}
	return b, nil
}

// UnmarshalServerOptimizer strictly decodes a state file: magic, version,
// a valid configuration, finite moments of a consistent size, and the
// canonical encoding.
func UnmarshalServerOptimizer(b []byte) (*ServerOptimizer, error) {
	bad := func(format string, a ...any) (*ServerOptimizer, error) {
		return nil, fmt.Errorf("%w: optimiser state: %s", ErrConfig, fmt.Sprintf(format, a...))
	}
	if len(b) < len(stateMagic)+2 || string(b[:len(stateMagic)]) != stateMagic {
		return bad("bad magic")
	}
	r := b[len(stateMagic):]
	if r[0] != stateVersion {
		return bad("version %d, want %d", r[0], stateVersion)
	}
	n := int(r[1])
	r = r[2:]
	if len(r) < n+48 {
		return bad("truncated")
	}
	cfg := Config{Name: string(r[:n])}
	r = r[n:]
	f := make([]float64, 4)
	for i := range f {
		f[i] = math.Float64frombits(binary.BigEndian.Uint64(r[8*i:]))
	}
	cfg.ServerLR, cfg.Beta1, cfg.Beta2, cfg.Tau = f[0], f[1], f[2], f[3]
	steps, dim := binary.BigEndian.Uint64(r[32:]), binary.BigEndian.Uint64(r[40:])
	r = r[48:]
	o, err := NewServerOptimizer(cfg)
	if err != nil {
		return nil, err
	}
	switch {
	case steps > math.MaxInt32:
		return bad("%d steps", steps)
	case dim > maxStateDim:
		return bad("%d values exceed the limit of %d", dim, maxStateDim)
	case uint64(len(r)) != 16*dim:
		return bad("%d bytes of moments for %d values", len(r), dim)
	case dim > 0 && cfg.Name == FedAvg:
		return bad("FedAvg keeps no moments")
	}
	o.Steps = int(steps)
	if dim > 0 {
		o.M, o.V = make([]float64, dim), make([]float64, dim)
		for i := range o.M {
			o.M[i] = math.Float64frombits(binary.LittleEndian.Uint64(r[8*i:]))
			o.V[i] = math.Float64frombits(binary.LittleEndian.Uint64(r[8*(int(dim)+i):]))
			if math.IsNaN(o.M[i]) || math.IsInf(o.M[i], 0) || math.IsNaN(o.V[i]) || math.IsInf(o.V[i], 0) {
				return bad("moment %d is not finite", i)
			}
		}
	}
	if again, err := o.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
		return bad("non-canonical encoding")
	}
	return o, nil
}

// NextModel is one server update, as the coordinator computes it and as
// every countersigning hospital recomputes it: from the parent parameters,
// the optimiser's state before the round (nil: the initial state of cfg),
// and the round's weighted sum Σ n_i·Δ_i with its total weight Σ n_i. It
// returns the new parameters and the encoded state after the round. The
// state before must be for cfg: a coordinator cannot switch strategy
// mid-study.
func NextModel(cfg Config, parent []float64, before []byte, sum []float64, weight float64) (next []float64, after []byte, err error) {
	var o *ServerOptimizer
	if before == nil {
		o, err = NewServerOptimizer(cfg)
	} else {
		o, err = UnmarshalServerOptimizer(before)
		if err == nil && o.cfg != cfg {
			err = fmt.Errorf("%w: optimiser state is for %+v, the study uses %+v", ErrConfig, o.cfg, cfg)
		}
	}
	if err != nil {
		return nil, nil, err
	}
	avg, err := Average(sum, weight)
	if err != nil {
		return nil, nil, err
	}
	if next, err = o.Step(parent, avg); err != nil {
		return nil, nil, err
	}
	after, err = o.MarshalBinary()
	return next, after, err
}

// EncodingSum names the plaintext aggregate: Σ n_i·Δ_i followed by Σ n_i,
// float64 little endian. The coordinator stores it in plaintext studies so
// that countersigning hospitals can recompute the round's model from it.
const EncodingSum = "f64le-weighted-sum/v1"

// EncodeSum encodes a weighted sum and its total weight.
func EncodeSum(sum []float64, weight float64) []byte {
	out := make([]byte, 0, 8*(len(sum)+1))
	for _, v := range append(sum[:len(sum):len(sum)], weight) {
		out = binary.LittleEndian.AppendUint64(out, math.Float64bits(v))
	}
	return out
}

// DecodeSum decodes a plaintext aggregate of dim values and its weight.
func DecodeSum(b []byte, dim int) (sum []float64, weight float64, err error) {
	v, err := DecodeWeightedDelta(b, dim+1)
	if err != nil {
		return nil, 0, err
	}
	if !(v[dim] > 0) {
		return nil, 0, fmt.Errorf("%w: total weight %v", ErrUpdate, v[dim])
	}
	return v[:dim], v[dim], nil
}
