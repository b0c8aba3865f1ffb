package anomaly

import (
	"math"
	"strings"
	"testing"
)

// zHistory is a hand-built history: 3 rounds × 3 sites, features
// [norm, loss, retries].
//
//	norm:    6..14           → median 10, |x−10| = 4,3,2,1,0,1,2,3,4 → MAD 2
//	loss:    0.1..0.9 + NaNs → median 0.5 (NaNs ignored), n = 9
//	retries: all 0           → median 0, MAD 0
func zHistory() []Observation {
	nan := math.NaN()
	norms := []float64{6, 7, 8, 9, 10, 11, 12, 13, 14}
	losses := []float64{0.9, 0.1, 0.8, 0.2, 0.7, 0.3, 0.6, 0.4, 0.5}
	sites := []string{"a", "b", "c"}
	var h []Observation
	for k := range norms {
		h = append(h, Observation{
			Site:   sites[k%3],
			Round:  uint64(1 + k/3),
			Values: []float64{norms[k], losses[k], 0},
		})
	}
	// Missing values must be ignored, not counted.
	h = append(h, Observation{Site: "d", Round: 3, Values: []float64{nan, nan, nan}})
	return h
}

var zFeatures = []string{"norm", "loss", "retries"}

func cur(site string, vals ...float64) Observation {
	return Observation{Site: site, Round: 4, Values: vals}
}

func TestRobustZReferenceStatistics(t *testing.T) {
	d := &RobustZ{Features: zFeatures, Threshold: 3.5, MinHistory: 9}
	sc, err := d.Scores(zHistory(), []Observation{cur("a", 12, 0.5, 0)})
	if err != nil {
		t.Fatal(err)
	}
	norm := sc[0][0]
	if norm.Median != 10 || norm.MAD != 2 || norm.Scale != 1.4826*2 || norm.N != 9 {
		t.Fatalf("norm reference = median %v MAD %v scale %v n %d, want 10, 2, 2.9652, 9", norm.Median, norm.MAD, norm.Scale, norm.N)
	}
	if want := 2 / 2.9652; math.Abs(norm.Z-want) > 1e-12 {
		t.Errorf("norm z = %v, want %v", norm.Z, want)
	}
	loss := sc[0][1]
	// |x−0.5| = 0.4,0.4,0.3,0.3,0.2,0.2,0.1,0.1,0 → MAD 0.2.
	if loss.N != 9 || math.Abs(loss.Median-0.5) > 1e-15 || math.Abs(loss.MAD-0.2) > 1e-15 || loss.Z != 0 {
		t.Errorf("loss reference = %+v, want n 9 median 0.5 MAD 0.2 z 0", loss)
	}
}

func TestRobustZThresholdEdge(t *testing.T) {
	const T = 3.5
	scale := 1.4826 * 2
	edge := 10 + T*scale // 20.3782; exactly representable as 10 + T·scale:
	if edge-10 != T*scale || 10-(10-T*scale) != T*scale {
		t.Fatalf("test arithmetic is not exact: %v − 10 ≠ %v", edge, T*scale)
	}
	d := &RobustZ{Features: zFeatures, Threshold: T, MinHistory: 9}
	for _, tc := range []struct {
		name string
		x    float64
		flag bool
	}{
		{"exactly threshold·scale above", edge, true},
		{"exactly threshold·scale below", 10 - T*scale, true},
		{"one ulp inside (above)", math.Nextafter(edge, 0), false},
		{"just inside (below)", 10 - T*scale + 1e-9, false},
		{"just inside", edge - 1e-9, false},
		{"well outside", 40, true},
	} {
		flags, err := d.Score(zHistory(), []Observation{cur("x", tc.x, 0.5, 0)})
		if err != nil {
			t.Fatal(err)
		}
		if got := len(flags) == 1; got != tc.flag {
			t.Errorf("%s: norm=%v flagged=%v, want %v (flags %+v)", tc.name, tc.x, got, tc.flag, flags)
			continue
		}
		if !tc.flag {
			continue
		}
		f := flags[0]
		if f.Site != "x" || f.Round != 4 || len(f.Features) != 1 || f.Features[0] != "norm" {
			t.Errorf("%s: flag = %+v, want site x round 4 features [norm]", tc.name, f)
		}
		wantZ := math.Abs(tc.x-10) / scale
		if math.Abs(f.Score-wantZ) > 1e-12 || f.Z != f.Score || !math.IsNaN(f.Isolation) {
			t.Errorf("%s: score %v z %v isolation %v, want %v, %v, NaN", tc.name, f.Score, f.Z, f.Isolation, wantZ, wantZ)
		}
		if !strings.Contains(f.Reason, "norm=") || !strings.Contains(f.Reason, "median 10") {
			t.Errorf("%s: reason %q does not describe the norm deviation", tc.name, f.Reason)
		}
	}
}

func TestRobustZIncludesCurrentOtherSites(t *testing.T) {
	// Reference for x = 9 history norms + y and z (not x itself):
	// 6..14, 15, 16 → median 11, |v−11| sorted 0,1,1,2,2,3,3,4,4,5,5 → MAD 3.
	d := &RobustZ{Features: zFeatures, Threshold: 3.5, MinHistory: 9}
	sc, err := d.Scores(zHistory(), []Observation{cur("x", 1000, 0.5, 0), cur("y", 15, 0.5, 0), cur("z", 16, 0.5, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if got := sc[0][0]; got.Median != 11 || got.MAD != 3 || got.N != 11 {
		t.Errorf("x's norm reference = median %v MAD %v n %d, want 11, 3, 11", got.Median, got.MAD, got.N)
	}
	// y's reference holds x's wild 1000 but stays robust: 6..14, 16, 1000
	// → median 11, MAD 3.
	if got := sc[1][0]; got.Median != 11 || got.MAD != 3 || got.Flagged {
		t.Errorf("y's norm reference = %+v, want median 11 MAD 3 unflagged", got)
	}
	if !sc[0][0].Flagged {
		t.Errorf("x (norm 1000) not flagged: %+v", sc[0][0])
	}
}

func TestRobustZMinScale(t *testing.T) {
	// retries is constant 0 in history: MAD 0.
	noFloor := &RobustZ{Features: zFeatures, Threshold: 3, MinHistory: 9}
	flags, err := noFloor.Score(zHistory(), []Observation{cur("x", 10, 0.5, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(flags) != 1 || flags[0].Features[0] != "retries" || !math.IsInf(flags[0].Score, 1) {
		t.Fatalf("without a floor one retry against constant 0 should flag with z=+Inf, got %+v", flags)
	}
	// Same value as the constant: never flags, even without a floor.
	flags, err = noFloor.Score(zHistory(), []Observation{cur("x", 10, 0.5, 0)})
	if err != nil || len(flags) != 0 {
		t.Fatalf("value equal to a constant feature flagged: %+v, %v", flags, err)
	}

	floor := &RobustZ{Features: zFeatures, Threshold: 3, MinHistory: 9, MinScale: []float64{0, 0, 0.5}}
	for _, tc := range []struct {
		retries float64
		flag    bool
		z       float64
	}{
		{1, false, 2},  // 1/0.5
		{1.5, true, 3}, // exactly 3·0.5
		{1.25, false, 2.5},
	} {
		flags, err := floor.Score(zHistory(), []Observation{cur("x", 10, 0.5, tc.retries)})
		if err != nil {
			t.Fatal(err)
		}
		if (len(flags) == 1) != tc.flag {
			t.Errorf("retries=%v with floor 0.5: flags %+v, want flagged=%v", tc.retries, flags, tc.flag)
		}
		sc, _ := floor.Scores(zHistory(), []Observation{cur("x", 10, 0.5, tc.retries)})
		if got := sc[0][2]; got.Scale != 0.5 || got.Z != tc.z {
			t.Errorf("retries=%v: scale %v z %v, want 0.5, %v", tc.retries, got.Scale, got.Z, tc.z)
		}
	}
	// A floor below 1.4826·MAD changes nothing.
	low := &RobustZ{Features: zFeatures, Threshold: 3, MinHistory: 9, MinScale: []float64{1, 0, 0}}
	sc, err := low.Scores(zHistory(), []Observation{cur("x", 10, 0.5, 0)})
	if err != nil || sc[0][0].Scale != 1.4826*2 {
		t.Errorf("floor 1 under MAD scale 2.9652 changed scale to %v (%v)", sc[0][0].Scale, err)
	}
}

func TestRobustZMissingValues(t *testing.T) {
	d := &RobustZ{Features: zFeatures, Threshold: 3, MinHistory: 9}
	// norm missing: ignored; loss wild: flags alone.
	flags, err := d.Score(zHistory(), []Observation{cur("x", math.NaN(), 5, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if len(flags) != 1 || len(flags[0].Features) != 1 || flags[0].Features[0] != "loss" {
		t.Fatalf("flags = %+v, want only loss", flags)
	}
	sc, _ := d.Scores(zHistory(), []Observation{cur("x", math.NaN(), 5, 0)})
	if !math.IsNaN(sc[0][0].Z) || sc[0][0].Flagged || sc[0][0].Median != 10 {
		t.Errorf("missing norm scored: %+v", sc[0][0])
	}
	// Everything missing: no flag, no error.
	flags, err = d.Score(zHistory(), []Observation{cur("x", math.NaN(), math.NaN(), math.NaN())})
	if err != nil || len(flags) != 0 {
		t.Errorf("all-missing observation: flags %+v, err %v", flags, err)
	}
}

func TestRobustZTooLittleHistory(t *testing.T) {
	// 9 non-missing values per feature (the NaN row does not count).
	short := &RobustZ{Features: zFeatures, Threshold: 3, MinHistory: 10}
	flags, err := short.Score(zHistory(), []Observation{cur("x", 1e6, 1e6, 1e6)})
	if err != nil || len(flags) != 0 {
		t.Fatalf("MinHistory 10 with 9 values: flags %+v, err %v; want none", flags, err)
	}
	sc, _ := short.Scores(zHistory(), []Observation{cur("x", 1e6, 1e6, 1e6)})
	if !math.IsNaN(sc[0][0].Z) || sc[0][0].N != 9 {
		t.Errorf("under-filled reference scored: %+v", sc[0][0])
	}
	// One more value (another current site) is enough.
	flags, err = short.Score(zHistory(), []Observation{cur("x", 1e6, 0.5, 0), cur("y", 10, 0.5, 0)})
	if err != nil || len(flags) != 1 || flags[0].Site != "x" {
		t.Errorf("MinHistory 10 with 10 values: flags %+v, err %v; want x", flags, err)
	}
	// No history at all, default MinHistory 20.
	def := &RobustZ{Features: zFeatures}
	flags, err = def.Score(nil, []Observation{cur("x", 1e6, 0, 0), cur("y", 1, 0, 0)})
	if err != nil || len(flags) != 0 {
		t.Errorf("empty history: flags %+v, err %v", flags, err)
	}
}

func TestRobustZErrors(t *testing.T) {
	d := &RobustZ{Features: zFeatures}
	good := cur("x", 1, 2, 3)
	for _, tc := range []struct {
		name    string
		d       *RobustZ
		history []Observation
		current []Observation
		want    []string
	}{
		{"current feature count", d, zHistory(), []Observation{good, cur("site-7", 1, 2)}, []string{`"site-7"`, "round 4", "2 values, want 3"}},
		{"history feature count", d, append(zHistory(), Observation{Site: "old", Round: 2, Values: []float64{1, 2, 3, 4}}), []Observation{good}, []string{"history", `"old"`, "round 2", "4 values"}},
		{"infinite value", d, zHistory(), []Observation{cur("x", 1, math.Inf(1), 3)}, []string{`"x"`, "round 4", `"loss"`, "+Inf"}},
		{"duplicate site", d, zHistory(), []Observation{good, good}, []string{`"x"`, "twice", "round 4"}},
		{"mixed rounds", d, zHistory(), []Observation{good, {Site: "y", Round: 5, Values: []float64{1, 2, 3}}}, []string{`"y"`, "round 5", "round 4"}},
		{"empty site", d, zHistory(), []Observation{{Round: 4, Values: []float64{1, 2, 3}}}, []string{"empty site", "round 4"}},
		{"MinScale length", &RobustZ{Features: zFeatures, MinScale: []float64{1}}, nil, []Observation{good}, []string{"1 MinScale", "3 features"}},
		{"negative MinScale", &RobustZ{Features: zFeatures, MinScale: []float64{0, -1, 0}}, nil, []Observation{good}, []string{`"loss"`, "-1"}},
		{"negative threshold", &RobustZ{Features: zFeatures, Threshold: -1}, nil, []Observation{good}, []string{"threshold -1"}},
		{"no features", &RobustZ{}, nil, nil, []string{"no features"}},
		{"duplicate feature", &RobustZ{Features: []string{"a", "a"}}, nil, nil, []string{`"a"`, "twice"}},
	} {
		_, err := tc.d.Score(tc.history, tc.current)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not mention %s", tc.name, err, w)
			}
		}
	}
}

func TestMedianSelect(t *testing.T) {
	for _, tc := range []struct {
		in        []float64
		med, madv float64
	}{
		{[]float64{3}, 3, 0},
		{[]float64{1, 2}, 1.5, 0.5},
		{[]float64{5, 1, 4, 2, 3}, 3, 1},
		{[]float64{0, 0, 0, 0, 1, 0, 0, 2}, 0, 0},
		{[]float64{7, 7, 7, 1, 1, 1}, 4, 3},
	} {
		in := append([]float64(nil), tc.in...)
		med, mad := medianMAD(in)
		if med != tc.med || mad != tc.madv {
			t.Errorf("medianMAD(%v) = %v, %v; want %v, %v", tc.in, med, mad, tc.med, tc.madv)
		}
	}
}
