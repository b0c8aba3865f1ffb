package anomaly

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
)

const (
	simSites  = 20
	simRounds = 30
	simSeeds  = 5
	attacker  = 3
	attackAt  = 10
)

// simRates runs one federation per seed (concurrently; each has its own
// Detector) and returns, after the warm-up (rounds >
// DefaultMinHistoryRounds): honest site-rounds flagged and honest
// site-rounds, and the attacker's flagged malicious rounds and malicious
// rounds (0 and 0 without an attacker).
func simRates(t *testing.T, boost float64, who int) (fp, fpN, det, detN int) {
	t.Helper()
	results := make([]map[uint64][]Flag, simSeeds)
	errs := make([]error, simSeeds)
	var wg sync.WaitGroup
	for k := range results {
		wg.Go(func() {
			fed := federation{sites: simSites, rounds: simRounds, seed: uint64(k + 1), attacker: who, attackFrom: attackAt, boost: boost}
			results[k], errs[k] = fed.run(newSimDetector())
		})
	}
	wg.Wait()
	bad := fmt.Sprintf("hospital-%02d", who)
	for k, flags := range results {
		if errs[k] != nil {
			t.Fatalf("seed %d: %v", k+1, errs[k])
		}
		for r := uint64(DefaultMinHistoryRounds + 1); r <= simRounds; r++ {
			malicious := who >= 0 && r >= attackAt
			if malicious {
				detN++
				fpN += simSites - 1
			} else {
				fpN += simSites
			}
			for _, f := range flags[r] {
				if malicious && f.Site == bad {
					det++
				} else {
					fp++
				}
			}
		}
	}
	return fp, fpN, det, detN
}

func pct(a, b int) float64 { return 100 * float64(a) / float64(b) }

func TestDetectorSimulatedFederation(t *testing.T) {
	// Clean runs: every flag is a false positive.
	fp, n, _, _ := simRates(t, 1, -1)
	t.Logf("clean, %d seeds × %d sites × %d rounds: false positives %d/%d = %.2f%% of site-rounds after a %d-round warm-up",
		simSeeds, simSites, simRounds, fp, n, pct(fp, n), DefaultMinHistoryRounds)
	if pct(fp, n) > 2 {
		t.Errorf("false-positive rate %.2f%% > 2%%", pct(fp, n))
	}

	// A site whose update norm is ×10 from round 10 on.
	fp, n, det, detN := simRates(t, 10, attacker)
	t.Logf("norm ×10 from round %d: attacker flagged in %d/%d = %.1f%% of malicious rounds; honest false positives %d/%d = %.2f%%",
		attackAt, det, detN, pct(det, detN), fp, n, pct(fp, n))
	if pct(det, detN) < 95 {
		t.Errorf("detection rate %.1f%% < 95%%", pct(det, detN))
	}
	if pct(fp, n) > 2 {
		t.Errorf("false-positive rate with an attacker present %.2f%% > 2%%", pct(fp, n))
	}
}

// TestSweep reproduces the figures quoted in the package documentation:
// false positives against the number of sites, and detection against the
// size of the norm boost. It takes a few seconds; -short leaves it out.
func TestSweep(t *testing.T) {
	if testing.Short() {
		t.Skip("the sweep takes a few seconds; run without -short")
	}
	for _, sites := range []int{3, 5, 10, 50} {
		var n, fp int
		for seed := uint64(1); seed <= 10; seed++ {
			flags, err := federation{sites: sites, rounds: simRounds, seed: seed, attacker: -1}.run(newSimDetector())
			if err != nil {
				t.Fatal(err)
			}
			for r := uint64(DefaultMinHistoryRounds + 1); r <= simRounds; r++ {
				n += sites
				fp += len(flags[r])
			}
		}
		t.Logf("%2d sites: false positives %d/%d = %.2f%%", sites, fp, n, pct(fp, n))
		if sites >= 10 && pct(fp, n) > 2 {
			t.Errorf("%d sites: false-positive rate %.2f%% > 2%%", sites, pct(fp, n))
		}
	}
	last := 0.0
	for _, boost := range []float64{1.5, 2, 3, 10} {
		_, _, det, detN := simRates(t, boost, attacker)
		t.Logf("norm ×%v: attacker flagged in %d/%d = %.1f%% of malicious rounds", boost, det, detN, pct(det, detN))
		if pct(det, detN) < last {
			t.Errorf("detection fell from %.1f%% to %.1f%% as the boost grew to ×%v", last, pct(det, detN), boost)
		}
		last = pct(det, detN)
	}
}

func TestDetectorFlagsNameTheNorm(t *testing.T) {
	fed := federation{sites: simSites, rounds: simRounds, seed: 9, attacker: attacker, attackFrom: attackAt, boost: 10}
	flags, err := fed.run(newSimDetector())
	if err != nil {
		t.Fatal(err)
	}
	f := flags[attackAt]
	i := slices.IndexFunc(f, func(f Flag) bool { return f.Site == "hospital-03" })
	if i < 0 {
		t.Fatalf("attacker not flagged in round %d: %+v", attackAt, f)
	}
	g := f[i]
	if g.Round != attackAt || g.Features[0] != "update_norm" || g.Score < 1 || g.Z < DefaultZThreshold || !strings.Contains(g.Reason, "update_norm=") {
		t.Errorf("attacker flag = %+v, want round %d led by update_norm with z >= %v", g, attackAt, DefaultZThreshold)
	}
	if math.IsNaN(g.Isolation) || g.Isolation <= 0 || g.Isolation >= 1 {
		t.Errorf("isolation score %v not in (0,1) after warm-up", g.Isolation)
	}
	t.Logf("round %d flag: %s (score %.2f)", attackAt, g.Reason, g.Score)
}

func TestDetectorDeterministic(t *testing.T) {
	run := func() string {
		fed := federation{sites: 8, rounds: 15, seed: 4, attacker: 2, attackFrom: 8, boost: 4}
		flags, err := fed.run(newSimDetector(WithForestThreshold(0.6), WithSeed(77)))
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(flags)
	}
	a, b := run(), run()
	if a != b {
		t.Errorf("same inputs and seed gave different flags:\n%s\n%s", a, b)
	}
	if !strings.Contains(a, "hospital-02") {
		t.Errorf("expected the attacker to be flagged: %s", a)
	}
}

// round builds one round of observations with features [x, y].
func round(r uint64, xs ...float64) []Observation {
	obs := make([]Observation, len(xs))
	for i, x := range xs {
		obs[i] = Observation{Site: fmt.Sprintf("s%d", i), Round: r, Values: []float64{x, 10 + float64(i%3)}}
	}
	return obs
}

func TestDetectorWarmupWindowAndScoringOrder(t *testing.T) {
	d := NewDetector([]string{"x", "y"}, WithMinHistory(2), WithMinValues(4), WithWindow(3), WithForestThreshold(0.99))
	var all [][]Observation
	for r := uint64(1); r <= 6; r++ {
		xs := []float64{1, 2, 3, 4, 5}
		if r <= 2 || r == 5 {
			xs[4] = 1000 // wild in warm-up, and again in round 5
		}
		obs := round(r, xs...)
		flags, err := d.Observe(r, obs)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case r <= 2 && len(flags) != 0:
			t.Errorf("round %d (warm-up) flagged %+v", r, flags)
		case r == 5 && (len(flags) != 1 || flags[0].Site != "s4" || flags[0].Features[0] != "x"):
			t.Errorf("round 5: flags %+v, want s4 on x", flags)
		case r != 5 && r > 2 && len(flags) != 0:
			t.Errorf("round %d flagged %+v", r, flags)
		}
		// The detector scores against the previous rounds in its window
		// (at most 3), then adds this round.
		if r > 2 {
			var hist []Observation
			for _, o := range all[max(0, len(all)-3):] {
				hist = append(hist, o...)
			}
			rz := RobustZ{Features: []string{"x", "y"}, MinHistory: 4}
			want, err := rz.Score(hist, obs)
			if err != nil {
				t.Fatal(err)
			}
			if len(want) != len(flags) || (len(want) == 1 && want[0].Z != flags[0].Z) {
				t.Errorf("round %d: detector flags %+v, robust z on the explicit window %+v", r, flags, want)
			}
		}
		all = append(all, obs)
		if got, want := d.HistoryRounds(), min(int(r), 3); got != want {
			t.Errorf("after round %d: %d rounds of history, want %d", r, got, want)
		}
	}
	// Round 6's reference holds round 5's wild 1000 (in the window) yet
	// the median/MAD are unmoved, so s4's normal 5 is not flagged (checked
	// above), and the caller's slices were copied.
	obs := round(7, 1, 2, 3, 4, 5)
	if _, err := d.Observe(7, obs); err != nil {
		t.Fatal(err)
	}
	obs[0].Values[0] = math.Inf(1)
	if _, err := d.Observe(8, round(8, 1, 2, 3, 4, 5)); err != nil {
		t.Errorf("mutating a returned-to caller slice corrupted the history: %v", err)
	}
}

func TestDetectorForestOnlyFlag(t *testing.T) {
	// Ten sites spread evenly along x ≈ y (think: bigger site, longer
	// upload). A site reporting large x with small y has each value in the
	// pooled range (robust z < 2) but a combination nobody has shown: only
	// the forest can see it.
	obsAt := func(r uint64, odd bool) []Observation {
		var obs []Observation
		for i := 0; i < 10; i++ {
			x := 10*float64(i) + 0.3*float64(r%4)
			y := x + 0.2*float64(r%3)
			if odd && i == 9 {
				y = 10
			}
			obs = append(obs, Observation{Site: fmt.Sprintf("s%d", i), Round: r, Values: []float64{x, y}})
		}
		return obs
	}
	run := func(opts ...Option) []Flag {
		d := NewDetector([]string{"x", "y"}, append([]Option{WithMinHistory(10), WithSeed(5)}, opts...)...)
		for r := uint64(1); r <= 10; r++ {
			if flags, err := d.Observe(r, obsAt(r, false)); err != nil || len(flags) != 0 {
				t.Fatalf("round %d: %+v, %v", r, flags, err)
			}
		}
		flags, err := d.Observe(11, obsAt(11, true))
		if err != nil {
			t.Fatal(err)
		}
		return flags
	}
	flags := run()
	if len(flags) != 1 {
		t.Fatalf("flags %+v, want exactly s9", flags)
	}
	f := flags[0]
	if f.Site != "s9" || !(f.Isolation > DefaultForestThreshold) || f.Z >= 2 ||
		math.Abs(f.Score-f.Isolation/DefaultForestThreshold) > 1e-15 || len(f.Features) != 1 ||
		!strings.Contains(f.Reason, "isolation score") || !strings.Contains(f.Reason, "largest deviations: ") {
		t.Errorf("forest-only flag = %+v", f)
	}
	t.Logf("forest-only flag: %s (score %.3f)", f.Reason, f.Score)

	// Trained on history only, the forest cannot isolate the new point.
	if flags := run(WithForestOnHistoryOnly()); len(flags) != 0 {
		t.Errorf("history-only forest flagged %+v; expected it to miss the new combination", flags)
	}
}

func TestDetectorErrors(t *testing.T) {
	feats := []string{"norm", "loss"}
	good := func(r uint64, site string) Observation {
		return Observation{Site: site, Round: r, Values: []float64{1, 0.5}}
	}
	d := NewDetector(feats)
	if _, err := d.Observe(3, []Observation{good(3, "a"), good(3, "b")}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		round uint64
		obs   []Observation
		want  []string
	}{
		{"feature count", 4, []Observation{good(4, "a"), {Site: "hosp-b", Round: 4, Values: []float64{1}}}, []string{`"hosp-b"`, "round 4", "1 values, want 2"}},
		{"infinite", 4, []Observation{{Site: "hosp-c", Round: 4, Values: []float64{math.Inf(-1), 0}}}, []string{`"hosp-c"`, "round 4", `"norm"`, "-Inf"}},
		{"round mismatch", 4, []Observation{good(5, "a")}, []string{`"a"`, "round 5", "round 4"}},
		{"round not increasing", 3, []Observation{good(3, "a")}, []string{"round 3", "after round 3"}},
		{"duplicate site", 4, []Observation{good(4, "a"), good(4, "a")}, []string{`"a"`, "twice"}},
	} {
		_, err := d.Observe(tc.round, tc.obs)
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
	if d.HistoryRounds() != 1 {
		t.Errorf("failed rounds were recorded: %d rounds of history, want 1", d.HistoryRounds())
	}
	for _, tc := range []struct {
		name string
		d    *Detector
		want string
	}{
		{"unknown min-scale feature", NewDetector(feats, WithMinScale("retries", 1)), `"retries"`},
		{"window shorter than warm-up", NewDetector(feats, WithWindow(2), WithMinHistory(3)), "window of 2 rounds"},
		{"zero z threshold", NewDetector(feats, WithZThreshold(0)), "z threshold 0"},
		{"no features", NewDetector(nil), "no features"},
		{"psi 1", NewDetector(feats, WithForest(10, 1)), "sub-sample 1"},
	} {
		_, err := tc.d.Observe(1, []Observation{good(1, "a")})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %s", tc.name, err, tc.want)
		}
	}
}
