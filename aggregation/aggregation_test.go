package aggregation

import (
	"errors"
	"math"
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
	cfg, _ := DefaultConfig(FedAdam)
	a, _ := NewServerOptimizer(cfg)
	x := []float64{0.3, 0.1, -2}
	x1, _ := a.Step(x, []float64{0.1, 0.2, 0.3})
	saved, err := a.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	b, err := RestoreServerOptimizer(saved)
	if err != nil {
		t.Fatal(err)
	}
	next := []float64{-0.1, 0.05, 0}
	xa, _ := a.Step(x1, next)
	xb, _ := b.Step(x1, next)
	for i := range xa {
		if xa[i] != xb[i] {
			t.Fatalf("restored optimiser diverged: %v vs %v", xa, xb)
		}
	}
	if _, err := RestoreServerOptimizer([]byte(`{"config":{"name":"fedmagic"}}`)); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad state: %v", err)
	}
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
