package model

import (
	"errors"
	"math"
	"slices"
	"testing"
)

func TestModelFileRoundTrip(t *testing.T) {
	for _, spec := range []Spec{{Kind: KindLogReg, Inputs: 13}, {Kind: KindMLP, Inputs: 4, Hidden: []int{3, 2}}} {
		p, _ := InitParams(spec, 2)
		b, err := Encode(spec, p)
		if err != nil {
			t.Fatal(err)
		}
		s2, p2, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if s2.String() != spec.String() || !slices.Equal(p, p2) {
			t.Fatalf("round trip changed the model: %v %v", s2, spec)
		}
	}
}

func TestModelFileRejectsCorruption(t *testing.T) {
	spec := Spec{Kind: KindLogReg, Inputs: 3}
	p, _ := InitParams(spec, 2)
	good, _ := Encode(spec, p)
	nan := slices.Clone(good)
	copy(nan[len(nan)-8:], []byte{0, 0, 0, 0, 0, 0, 0xf8, 0x7f}) // NaN
	badVersion := slices.Clone(good)
	badVersion[9] = 9
	cases := map[string][]byte{
		"empty":       nil,
		"bad magic":   append([]byte("XXMODEL\x00"), good[8:]...),
		"version":     badVersion,
		"truncated":   good[:len(good)-3],
		"extra bytes": append(slices.Clone(good), 0),
		"NaN":         nan,
	}
	for name, b := range cases {
		if _, _, err := Decode(b); !errors.Is(err, ErrFile) {
			t.Errorf("%s: got %v, want ErrFile", name, err)
		}
	}
	if _, err := Encode(spec, []float64{1, 2, math.Inf(1), 0}); err == nil {
		t.Fatal("encoded an infinite parameter")
	}
	if _, err := Encode(spec, p[:2]); err == nil {
		t.Fatal("encoded a short parameter vector")
	}
}

func FuzzDecodeModel(f *testing.F) {
	spec := Spec{Kind: KindMLP, Inputs: 2, Hidden: []int{2}}
	p, _ := InitParams(spec, 1)
	good, _ := Encode(spec, p)
	f.Add(good)
	f.Add(good[:20])
	f.Add([]byte("FLMODEL\x00\x00\x01\x00\x00\x00\x02{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		spec, params, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes must re-encode to the same bytes.
		again, err := Encode(spec, params)
		if err != nil {
			t.Fatalf("decoded model does not re-encode: %v", err)
		}
		if _, p2, err := Decode(again); err != nil || len(p2) != len(params) {
			t.Fatalf("re-encoded model does not decode: %v", err)
		}
	})
}
