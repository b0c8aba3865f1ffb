package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// The model file: what the coordinator stores under its SHA-256 and what a
// regulator is handed.
//
//	"FLMODEL\x00"            8-byte magic
//	version      uint16 BE   1
//	spec length  uint32 BE   at most 64 KiB
//	spec         JSON        Spec
//	count        uint64 BE   number of parameters, = spec.NumParams()
//	params       count × float64 little-endian, all finite
const (
	modelMagic   = "FLMODEL\x00"
	modelVersion = 1
	maxSpecLen   = 64 << 10
)

// ErrFile marks a malformed model file.
var ErrFile = errors.New("model: malformed model file")

// Encode serialises a model.
func Encode(spec Spec, params []float64) ([]byte, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	if len(params) != spec.NumParams() {
		return nil, fmt.Errorf("model: %d parameters for %s, want %d", len(params), spec, spec.NumParams())
	}
	if i := FirstNonFinite(params); i >= 0 {
		return nil, fmt.Errorf("model: parameter %d is %v", i, params[i])
	}
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Grow(len(modelMagic) + 2 + 4 + len(js) + 8 + 8*len(params))
	b.WriteString(modelMagic)
	binary.Write(&b, binary.BigEndian, uint16(modelVersion))
	binary.Write(&b, binary.BigEndian, uint32(len(js)))
	b.Write(js)
	binary.Write(&b, binary.BigEndian, uint64(len(params)))
	buf := make([]byte, 8)
	for _, v := range params {
		binary.LittleEndian.PutUint64(buf, math.Float64bits(v))
		b.Write(buf)
	}
	return b.Bytes(), nil
}

// Decode parses a model file strictly: magic, version, spec, count and
// length must all agree, and every parameter must be finite.
func Decode(b []byte) (Spec, []float64, error) {
	var spec Spec
	if len(b) < len(modelMagic)+2+4 || string(b[:len(modelMagic)]) != modelMagic {
		return spec, nil, fmt.Errorf("%w: bad magic", ErrFile)
	}
	b = b[len(modelMagic):]
	if v := binary.BigEndian.Uint16(b); v != modelVersion {
		return spec, nil, fmt.Errorf("%w: version %d, want %d", ErrFile, v, modelVersion)
	}
	n := binary.BigEndian.Uint32(b[2:])
	b = b[6:]
	if n > maxSpecLen || int(n) > len(b) {
		return spec, nil, fmt.Errorf("%w: spec length %d exceeds file", ErrFile, n)
	}
	dec := json.NewDecoder(bytes.NewReader(b[:n]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&spec); err != nil {
		return spec, nil, fmt.Errorf("%w: spec: %v", ErrFile, err)
	}
	if err := spec.Validate(); err != nil {
		return spec, nil, fmt.Errorf("%w: %v", ErrFile, err)
	}
	b = b[n:]
	if len(b) < 8 {
		return spec, nil, fmt.Errorf("%w: truncated before parameter count", ErrFile)
	}
	count := binary.BigEndian.Uint64(b)
	b = b[8:]
	if count != uint64(spec.NumParams()) {
		return spec, nil, fmt.Errorf("%w: %d parameters for %s, want %d", ErrFile, count, spec, spec.NumParams())
	}
	if uint64(len(b)) != 8*count {
		return spec, nil, fmt.Errorf("%w: %d bytes of parameters, want %d", ErrFile, len(b), 8*count)
	}
	params := make([]float64, count)
	for i := range params {
		params[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
	}
	if i := FirstNonFinite(params); i >= 0 {
		return spec, nil, fmt.Errorf("%w: parameter %d is %v", ErrFile, i, params[i])
	}
	return spec, params, nil
}

// FirstNonFinite is the index of the first NaN or infinite value, or -1.
func FirstNonFinite(v []float64) int {
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return i
		}
	}
	return -1
}
