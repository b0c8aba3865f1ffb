package aggregation

import (
	"errors"
	"slices"
	"testing"
)

func TestParseRobust(t *testing.T) {
	for _, s := range []string{"median", "trimmed-mean:1", "multi-krum:2"} {
		r, err := ParseRobust(s)
		if err != nil || r.String() != s {
			t.Fatalf("%q: %v, %v", s, r, err)
		}
	}
	if r, err := ParseRobust(""); r != nil || err != nil {
		t.Fatalf("empty: %v %v", r, err)
	}
	for _, s := range []string{"mean", "median:1", "trimmed-mean", "trimmed-mean:0", "trimmed-mean:x", "multi-krum", "multi-krum:-1", "krum:1"} {
		if _, err := ParseRobust(s); !errors.Is(err, ErrConfig) {
			t.Fatalf("%q: err = %v, want ErrConfig", s, err)
		}
	}
}

// Each aggregator through Robust, against the known answer of the
// function it names.
func TestRobustAggregate(t *testing.T) {
	ups := [][]float64{{1, 10}, {2, 20}, {3, 30}, {4, 40}, {100, -100}}
	for s, want := range map[string][]float64{
		"median":         {3, 20},
		"trimmed-mean:1": {3, 20},
		"multi-krum:1":   {2.5, 25},
	} {
		r, err := ParseRobust(s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Aggregate(ups)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%s: %v, %v; want %v", s, got, err, want)
		}
		if r.MinUpdates() > len(ups) {
			t.Fatalf("%s needs %d updates", s, r.MinUpdates())
		}
	}
}
