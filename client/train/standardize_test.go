package train

import (
	"errors"
	"math"
	"testing"
)

// TestConsortiumStandardization: the four hospitals' summaries pool to the
// statistics of their training rows together, so after Restandardize the
// union of the training splits has mean 0 and std 1 per input, while each
// site keeps its own offsets (Switzerland's maximum heart rate stays well
// below Cleveland's). The preprocessing record says so.
func TestConsortiumStandardization(t *testing.T) {
	trains, tests := map[string]*Dataset{}, map[string]*Dataset{}
	var sums []Summary
	for _, h := range Hospitals {
		tr, te, err := LoadHeart(h, HeartSplitSeed)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Summarize(tr)
		if err != nil {
			t.Fatal(err)
		}
		trains[h], tests[h], sums = tr, te, append(sums, s)
	}
	std, err := PoolSummaries(sums...)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range Hospitals {
		if err := Restandardize(trains[h], tests[h], std); err != nil {
			t.Fatal(err)
		}
		if p := trains[h].Preprocessing; !p.Consortium || p.Mean[0] != std.Mean[0] || tests[h].Preprocessing != p {
			t.Fatalf("%s: preprocessing record %+v", h, p)
		}
	}
	all := concat(trains)
	for j := range HeartFeatures {
		var m, v float64
		for _, r := range all.X {
			m += r[j] / float64(all.Len())
		}
		for _, r := range all.X {
			v += (r[j] - m) * (r[j] - m) / float64(all.Len())
		}
		if math.Abs(m) > 1e-9 || math.Abs(v-1) > 1e-9 {
			t.Errorf("%s: pooled mean %v, variance %v", HeartFeatures[j], m, v)
		}
	}
	thalach := 5
	mean := func(d *Dataset) float64 {
		var m float64
		for _, r := range d.X {
			m += r[thalach] / float64(d.Len())
		}
		return m
	}
	if mean(trains["switzerland"]) > mean(trains["cleveland"])-1 {
		t.Errorf("consortium standardisation lost the sites' offsets: thalach %.2f (Switzerland) vs %.2f (Cleveland)", mean(trains["switzerland"]), mean(trains["cleveland"]))
	}

	bad := sums[1]
	bad.Features = bad.Features[1:]
	if _, err := PoolSummaries(sums[0], bad); !errors.Is(err, ErrStandardization) {
		t.Errorf("summaries of other inputs pooled: %v", err)
	}
	if _, err := PoolSummaries(); !errors.Is(err, ErrStandardization) {
		t.Error("no summaries pooled")
	}
	zero := std
	zero.Std = append([]float64{0}, std.Std[1:]...)
	tr, te, _ := LoadHeart("va", HeartSplitSeed)
	before := tr.X[0][0]
	if err := Restandardize(tr, te, zero); !errors.Is(err, ErrStandardization) || tr.X[0][0] != before {
		t.Errorf("a zero std: %v, data changed %v", err, tr.X[0][0] != before)
	}
}
