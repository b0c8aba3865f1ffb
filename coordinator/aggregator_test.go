package coordinator

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/aggregation"
)

func weighted(t *testing.T, client string, local, parent []float64, n uint64) Update {
	t.Helper()
	b, err := aggregation.EncodeWeightedDelta(local, parent, n)
	if err != nil {
		t.Fatal(err)
	}
	return Update{Client: client, Weight: n, Payload: b}
}

// TestPlaintextAggregatorFedAvg checks the plaintext seam by hand:
// a (n=2) moves [1,2] to [3,2], b (n=1) moves it to [1,5]; the weighted
// average delta is ([4,0]+[0,3])/3 and FedAvg with eta=1 adds it.
func TestPlaintextAggregatorFedAvg(t *testing.T) {
	cfg, err := aggregation.DefaultConfig(aggregation.FedAvg)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := NewPlaintextAggregator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	global := []float64{1, 2}
	ups := []Update{weighted(t, "a", []float64{3, 2}, global, 2), weighted(t, "b", []float64{1, 5}, global, 1)}
	next, err := agg.Aggregate(context.Background(), global, ups)
	if err != nil {
		t.Fatal(err)
	}
	want := []float64{1 + 4.0/3, 3}
	for i := range want {
		if math.Abs(next[i]-want[i]) > 1e-12 {
			t.Fatalf("next = %v, want %v", next, want)
		}
	}
	if global[0] != 1 || global[1] != 2 {
		t.Fatalf("global was modified: %v", global)
	}
}

func TestPlaintextAggregatorRejectsBadPayload(t *testing.T) {
	cfg, _ := aggregation.DefaultConfig(aggregation.FedAvg)
	agg, err := NewPlaintextAggregator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	global := []float64{1, 2}
	ups := []Update{weighted(t, "a", []float64{3, 2}, global, 2), {Client: "b", Weight: 1, Payload: []byte{1, 2, 3}}}
	_, err = agg.Aggregate(context.Background(), global, ups)
	if !errors.Is(err, aggregation.ErrUpdate) || !strings.Contains(err.Error(), "from b") {
		t.Fatalf("err = %v, want ErrUpdate naming client b", err)
	}
}
