package aggregation

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func TestWeightedAverage(t *testing.T) {
	parent := []float64{1, 1}
	s := NewWeightedSum(2)
	for _, c := range []struct {
		local []float64
		n     uint64
	}{{[]float64{2, 1}, 3}, {[]float64{1, 3}, 1}} {
		b, err := EncodeWeightedDelta(c.local, parent, c.n)
		if err != nil {
			t.Fatal(err)
		}
		d, err := DecodeWeightedDelta(b, 2)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Add(d, float64(c.n)); err != nil {
			t.Fatal(err)
		}
	}
	avg, err := s.Average()
	if err != nil {
		t.Fatal(err)
	}
	// (3·[1,0] + 1·[0,2]) / 4 = [0.75, 0.5]
	if !near(avg[0], 0.75) || !near(avg[1], 0.5) {
		t.Fatalf("average %v, want [0.75 0.5]", avg)
	}
}

func TestBadUpdates(t *testing.T) {
	if _, err := DecodeWeightedDelta(make([]byte, 15), 2); !errors.Is(err, ErrUpdate) {
		t.Fatalf("short payload: %v", err)
	}
	nan := make([]byte, 8)
	copy(nan, []byte{1, 0, 0, 0, 0, 0, 0xf8, 0x7f})
	if _, err := DecodeWeightedDelta(nan, 1); !errors.Is(err, ErrUpdate) {
		t.Fatalf("NaN payload: %v", err)
	}
	if _, err := EncodeWeightedDelta([]float64{1}, []float64{1, 2}, 1); !errors.Is(err, ErrUpdate) {
		t.Fatalf("length mismatch: %v", err)
	}
	s := NewWeightedSum(1)
	if err := s.Add([]float64{1}, 0); !errors.Is(err, ErrUpdate) {
		t.Fatalf("zero weight: %v", err)
	}
	if _, err := s.Average(); !errors.Is(err, ErrUpdate) {
		t.Fatalf("empty average: %v", err)
	}
}

// TestOptimisersByHand checks one step of each optimiser against values
// computed by hand from the update rules in Reddi et al.
func TestOptimisersByHand(t *testing.T) {
	x := []float64{1, -1}
	d := []float64{0.5, -0.2}
	const eta, b1, b2, tau = 0.1, 0.9, 0.99, 0.001
	want := map[string][]float64{}
	want[FedAvg] = []float64{1 + 0.1*0.5, -1 + 0.1*-0.2}
	m := []float64{0.1 * 0.5, 0.1 * -0.2}
	for _, name := range []string{FedAdam, FedYogi, FedAdagrad} {
		var v []float64
		for i := range d {
			v0, d2 := tau*tau, d[i]*d[i]
			switch name {
			case FedAdam:
				v = append(v, b2*v0+(1-b2)*d2)
			case FedYogi:
				v = append(v, v0-(1-b2)*d2*-1) // v0 < d² so sign is -1
			case FedAdagrad:
				v = append(v, v0+d2)
			}
		}
		want[name] = []float64{x[0] + eta*m[0]/(math.Sqrt(v[0])+tau), x[1] + eta*m[1]/(math.Sqrt(v[1])+tau)}
	}
	for name, w := range want {
		cfg := Config{Name: name, ServerLR: 0.1, Beta1: b1, Beta2: b2, Tau: tau}
		o, err := NewServerOptimizer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		got, err := o.Step(x, d)
		if err != nil {
			t.Fatal(err)
		}
		if !near(got[0], w[0]) || !near(got[1], w[1]) {
			t.Errorf("%s: %v, want %v", name, got, w)
		}
		if x[0] != 1 {
			t.Fatal("Step modified its input")
		}
	}
}

func TestOptimiserStateRoundTrip(t *testing.T) {
	for _, name := range []string{FedAvg, FedAdam, FedYogi, FedAdagrad} {
		cfg, _ := DefaultConfig(name)
		a, _ := NewServerOptimizer(cfg)
		x := []float64{0.3, 0.1, -2}
		x1, _ := a.Step(x, []float64{0.1, 0.2, 0.3})
		saved, err := a.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		b, err := UnmarshalServerOptimizer(saved)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		next := []float64{-0.1, 0.05, 0}
		xa, _ := a.Step(x1, next)
		xb, _ := b.Step(x1, next)
		if !slices.Equal(xa, xb) {
			t.Fatalf("%s: restored optimiser diverged: %v vs %v", name, xa, xb)
		}
	}
}

// TestNextModelIsWhatCountersignersRecompute: the coordinator and a
// hospital each run NextModel from the same parent, state and sum and get
// the same bits; a state for another strategy, or any change to the state
// file, is refused.
func TestNextModelIsWhatCountersignersRecompute(t *testing.T) {
	cfg, _ := DefaultConfig(FedAdam)
	parent := []float64{0.5, -1, 2}
	sum, w := []float64{3, -6, 1.5}, 12.0
	n1, s1, err := NextModel(cfg, parent, nil, sum, w)
	if err != nil {
		t.Fatal(err)
	}
	n2, s2, _ := NextModel(cfg, parent, nil, slices.Clone(sum), w)
	if !slices.Equal(n1, n2) || !bytes.Equal(s1, s2) {
		t.Fatal("NextModel is not deterministic")
	}
	n3, s3, err := NextModel(cfg, n1, s1, sum, w)
	if err != nil || slices.Equal(n3, n1) || bytes.Equal(s3, s1) {
		t.Fatalf("second step: %v", err)
	}
	other, _ := DefaultConfig(FedYogi)
	if _, _, err := NextModel(other, n1, s1, sum, w); !errors.Is(err, ErrConfig) {
		t.Fatalf("FedAdam state used for FedYogi: %v", err)
	}
	lr := cfg
	lr.ServerLR = 0.5
	if _, _, err := NextModel(lr, n1, s1, sum, w); !errors.Is(err, ErrConfig) {
		t.Fatalf("state for another server learning rate: %v", err)
	}
	for i := 0; i < len(s1); i++ {
		bad := bytes.Clone(s1)
		bad[i] ^= 0x40
		if o, err := UnmarshalServerOptimizer(bad); err == nil {
			// A flip inside a moment may still decode (another finite
			// number); it must then be a different state.
			again, _ := o.MarshalBinary()
			if bytes.Equal(again, s1) {
				t.Fatalf("flip at %d decoded to the original state", i)
			}
		}
	}
	if _, err := UnmarshalServerOptimizer(append(bytes.Clone(s1), 0)); !errors.Is(err, ErrConfig) {
		t.Fatalf("trailing byte: %v", err)
	}
	if _, _, err := NextModel(cfg, parent, nil, sum, 0); !errors.Is(err, ErrUpdate) {
		t.Fatalf("zero weight: %v", err)
	}
}

func TestSumRoundTrip(t *testing.T) {
	b := EncodeSum([]float64{1, -2}, 3)
	s, w, err := DecodeSum(b, 2)
	if err != nil || !slices.Equal(s, []float64{1, -2}) || w != 3 {
		t.Fatalf("%v %v %v", s, w, err)
	}
	if _, _, err := DecodeSum(EncodeSum([]float64{1}, 0), 1); !errors.Is(err, ErrUpdate) {
		t.Fatalf("zero weight: %v", err)
	}
	if _, _, err := DecodeSum(b, 3); !errors.Is(err, ErrUpdate) {
		t.Fatalf("wrong size: %v", err)
	}
}

func FuzzUnmarshalServerOptimizer(f *testing.F) {
	for _, name := range []string{FedAvg, FedAdam} {
		cfg, _ := DefaultConfig(name)
		o, _ := NewServerOptimizer(cfg)
		o.Step([]float64{1, 2}, []float64{0.1, 0.2})
		b, _ := o.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := UnmarshalServerOptimizer(b)
		if err != nil {
			return
		}
		again, err := o.MarshalBinary()
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded state does not re-encode to the same bytes")
		}
	})
}

func TestConfigValidation(t *testing.T) {
	if _, err := DefaultConfig("fedmagic"); !errors.Is(err, ErrConfig) {
		t.Fatal("unknown strategy accepted")
	}
	for _, c := range []Config{{Name: FedAvg}, {Name: FedAdam, ServerLR: 0.1, Beta1: 1, Beta2: 0.9, Tau: 1e-3}, {Name: FedYogi, ServerLR: 0.1, Beta1: 0.9, Beta2: 0.9}} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("%+v accepted", c)
		}
	}
}

func FuzzDecodeWeightedDelta(f *testing.F) {
	good, _ := EncodeWeightedDelta([]float64{1, 2}, []float64{0, 0}, 3)
	f.Add(good, 2)
	f.Add(good[:9], 1)
	f.Fuzz(func(t *testing.T, b []byte, n int) {
		if n > 1<<16 {
			return
		}
		out, err := DecodeWeightedDelta(b, n)
		if err == nil && len(out) != n {
			t.Fatalf("decoded %d values, want %d", len(out), n)
		}
	})
}
