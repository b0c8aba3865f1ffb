package console

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	pb "github.com/fedledger/fedledger/proto"
)

func liveStatus() *pb.StudyStatus {
	return &pb.StudyStatus{StudyId: "heart", Mode: "secure", Phase: "training", Round: 4, Rounds: 64, RoundsCompleted: 2, RoundsFailed: 1,
		Connected: []string{"site-a", "site-b"}, DpEpsilonBudget: 4, DpEpsilonSpent: 1.25, DpDelta: 1e-5, WaitingFor: "the audit log: no quorum"}
}

// TestCoordinatorPages: the overview and study pages, built from the log
// (checked against the trust) and the coordinator's status.
func TestCoordinatorPages(t *testing.T) {
	f := newLogFixture(t)
	n := newFakeNode(f)
	h, err := NewCoordinator(CoordinatorConfig{Status: liveStatus, Log: &fakeLog{n: n}, Trust: f.trustFunc})
	if err != nil {
		t.Fatal(err)
	}
	spent := audit.Metric{}
	for _, m := range f.L.Leaves() {
		env, _ := audit.UnmarshalEnvelope(m)
		rec, _ := audit.UnmarshalRecord(env.Body)
		for _, x := range rec.Metrics {
			if x.Name == audit.MetricDPEpsilon {
				spent = x
			}
		}
	}
	if spent.Name == "" {
		t.Fatal("the fixture's rounds state no ε")
	}
	for _, tc := range []struct {
		target string
		status int
		want   []string
	}{
		{"/", 200, []string{`id="status-rounds-completed">2<`, `id="status-dp-spent" data-value="1.25"`, "the audit log: no quorum",
			`data-study="heart"`, `class="num completed">2<`, `href="/studies/heart"`}},
		{"/studies/heart", 200, []string{`id="rounds-completed">2<`, `id="rounds-failed">1<`, `id="checkpoint-size">5<`, "signed by audit-1, audit-2 (2 needed)",
			`id="dp-spent" data-value="` + exact(spent.Value) + `"`, `id="dp-budget" data-value="4"`,
			`data-round="1" class="completed"`, `data-round="2" class="failed"`, `data-round="3" class="completed"`,
			`class="contributors" data-count="3"`, `class="contributors" data-count="2"`, "fewer than K updates by the deadline",
			"did not contribute: site-c", `id="chart-accuracy"`, `id="chart-epsilon"`, "<polyline", "budget ε = 4",
			// round 1: (10·0.5 + 20·0.6 + 30·0.7) / 60
			`class="num accuracy" data-value="` + exact((10*0.5+20*0.6+30*0.7)/60) + `"`,
			`id="live-status"`}},
		{"/studies/other", 404, []string{`study "other" is not on the audit log`}},
		{"/studies/", 404, nil},
		{"/nope", 404, []string{"no page /nope"}},
	} {
		status, body := get(t, h, "GET", tc.target, nil, "")
		if status != tc.status {
			t.Errorf("%s: %d, want %d\n%s", tc.target, status, tc.status, body)
			continue
		}
		for _, w := range tc.want {
			if w == `id="live-status"` { // the status card is there
				w = `id="status"`
			}
			if !strings.Contains(body, w) {
				t.Errorf("%s: no %q in\n%s", tc.target, w, body)
			}
		}
	}
	if status, _ := get(t, h, "POST", "/", nil, ""); status != 405 {
		t.Errorf("POST /: %d, want 405", status)
	}
}

func exact(v float64) string { return funcs["exact"].(func(float64) string)(v) }

// TestCoordinatorLogProblems: a log that cannot be read, or that does not
// check out, is a 503 naming the reason; the status still shows.
func TestCoordinatorLogProblems(t *testing.T) {
	f := newLogFixture(t)
	n := newFakeNode(f)
	down := &fakeLog{n: n, err: errDown}
	h, err := NewCoordinator(CoordinatorConfig{Status: liveStatus, Log: down, Trust: f.trustFunc})
	if err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, h, "GET", "/", nil, ""); status != 200 || !strings.Contains(body, `id="log-error"`) || !strings.Contains(body, `id="status-phase">training<`) {
		t.Errorf("overview with the log down: %d\n%s", status, body)
	}
	if status, body := get(t, h, "GET", "/studies/heart", nil, ""); status != 503 || !strings.Contains(body, "no leader") {
		t.Errorf("study with the log down: %d\n%s", status, body)
	}
	// A replica whose entries do not hash to the cosigned root.
	n.tamper = func(b *audit.Bundle) { b.Leaves[3] = bytes.Clone(b.Leaves[3]); b.Leaves[3][len(b.Leaves[3])-1] ^= 1 }
	h, _ = NewCoordinator(CoordinatorConfig{Status: liveStatus, Log: &fakeLog{n: n}, Trust: f.trustFunc})
	if status, body := get(t, h, "GET", "/studies/heart", nil, ""); status != 503 || !strings.Contains(body, "could not be read and checked: audit: entry 3") {
		t.Errorf("tampered log: %d\n%s", status, body)
	}
	// Keys that did not sign the checkpoint.
	n.tamper = nil
	other := newLogFixture(t)
	h, _ = NewCoordinator(CoordinatorConfig{Log: &fakeLog{n: n}, Trust: other.trustFunc})
	if status, body := get(t, h, "GET", "/studies/heart", nil, ""); status != 503 || !strings.Contains(body, "checkpoint signature") {
		t.Errorf("unknown keys: %d\n%s", status, body)
	}
}

// TestCoordinatorWithoutLog: a coordinator with no audit log shows its
// status, and its own study from it alone.
func TestCoordinatorWithoutLog(t *testing.T) {
	h, err := NewCoordinator(CoordinatorConfig{Status: liveStatus})
	if err != nil {
		t.Fatal(err)
	}
	if status, body := get(t, h, "GET", "/", nil, ""); status != 200 || !strings.Contains(body, "no audit log configured") {
		t.Errorf("overview: %d\n%s", status, body)
	}
	if status, body := get(t, h, "GET", "/studies/heart", nil, ""); status != 200 || !strings.Contains(body, `id="not-on-log"`) {
		t.Errorf("own study: %d\n%s", status, body)
	}
	if status, _ := get(t, h, "GET", "/studies/other", nil, ""); status != 404 {
		t.Errorf("another study: %d", status)
	}
	for _, bad := range []CoordinatorConfig{{}, {Log: &fakeLog{}}, {Status: liveStatus, Timeout: -time.Second}} {
		if _, err := NewCoordinator(bad); err == nil {
			t.Errorf("config %+v accepted", bad)
		}
	}
}

// TestBuildStudy: the study view from records as the log holds them:
// outcomes, contributors and who did not, exclusions and flags, the
// sites' tallies, the evaluations' weighted means and the ε stated.
func TestBuildStudy(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	study := &audit.Record{Kind: audit.KindStudyCreated, StudyID: "s", ApprovedSites: []string{"a", "b", "c"}, MinContributors: 2, Rounds: 5,
		OutputModel: audittest.Model(0), TimestampUnixNs: t0, SubmitterID: "admin", Hyperparameters: dpParams()}
	eval := func(site string, n, acc, loss float64) audit.Evaluation {
		return audit.Evaluation{Site: site, Metrics: []audit.Metric{{Name: "test_n", Value: n}, {Name: "global_test_accuracy", Value: acc}, {Name: "global_test_loss", Value: loss}}}
	}
	r1 := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: "s", Round: 1, OutputModel: audittest.Model(1), TimestampUnixNs: t0 + 1e9,
		Contributions:     []audit.Contribution{{Site: "a", Samples: 10}, {Site: "b", Samples: 20}},
		Countersignatures: []audit.Countersignature{{Site: "a"}, {Site: "b"}},
		Metrics:           []audit.Metric{{Name: "duration_s", Value: 1.5}, {Name: audit.MetricDPEpsilon, Value: 1.1}},
		Hyperparameters:   []audit.Param{{Name: audit.ParamExcluded, Value: "c"}, {Name: audit.ParamAnomalyPrefix + "b", Value: "late update"}},
		Evaluations:       []audit.Evaluation{eval("a", 10, 0.5, 0.9), eval("b", 30, 0.9, 0.5)}}
	r2 := &audit.Record{Kind: audit.KindRoundFailed, StudyID: "s", Round: 2, TimestampUnixNs: t0 + 2e9,
		Metrics:         []audit.Metric{{Name: audit.MetricDPEpsilon, Value: 1.6}},
		Hyperparameters: []audit.Param{{Name: "failure", Value: "decryptor left"}, {Name: "contributors", Value: "[a c]"}}}
	other := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: "t", Round: 1}
	steps := []audit.LineageStep{{Index: 0, Record: study}, {Index: 1, Record: other}, {Index: 2, Record: r1}, {Index: 3, Record: r2}}
	leaves := [][]byte{make([]byte, 100), make([]byte, 50), make([]byte, 700), make([]byte, 300)}
	if _, ok := buildStudy("u", steps, leaves); ok {
		t.Fatal("a study not on the log was found")
	}
	v, ok := buildStudy("s", steps, leaves)
	if !ok {
		t.Fatal("study s not found")
	}
	if v.Completed != 1 || v.Failed != 1 || len(v.Rounds) != 2 || v.LatestModel != hexOf(audittest.Model(1)) {
		t.Fatalf("completed %d failed %d rounds %d latest %s", v.Completed, v.Failed, len(v.Rounds), v.LatestModel)
	}
	a, b := v.Rounds[0], v.Rounds[1]
	if !a.Completed || a.Bytes != 700 || a.Duration != 1500*time.Millisecond || !a.HasEval || a.Accuracy != (10*0.5+30*0.9)/40 || a.Loss != (10*0.9+30*0.5)/40 {
		t.Errorf("round 1: %+v", a)
	}
	if len(a.Absent) != 0 || len(a.Excluded) != 1 || a.Excluded[0] != "c" || len(a.Flags) != 1 || a.Flags[0].Site != "b" {
		t.Errorf("round 1: absent %v excluded %v flags %v", a.Absent, a.Excluded, a.Flags)
	}
	if b.Completed || b.Failure != "decryptor left" || strings.Join(b.Contributors, ",") != "a,c" || strings.Join(b.Absent, ",") != "b" || b.HasEval {
		t.Errorf("round 2: %+v", b)
	}
	want := map[string]siteView{
		"a": {Site: "a", Contributed: 1, Countersigned: 1, Samples: 10, Accuracy: 0.5, HasAccuracy: true, AccuracyAt: 1},
		"b": {Site: "b", Contributed: 1, Countersigned: 1, Flagged: 1, Absent: 1, Samples: 20, Accuracy: 0.9, HasAccuracy: true, AccuracyAt: 1},
		"c": {Site: "c", Excluded: 1},
	}
	for _, s := range v.SiteRows {
		if s != want[s.Site] {
			t.Errorf("site %s: %+v, want %+v", s.Site, s, want[s.Site])
		}
	}
	if d := v.DP; d == nil || d.Budget != 4 || d.Spent != 1.6 || d.SpentAt != 2 || d.Frac != 0.4 || d.StepsPerRound != 20 {
		t.Errorf("privacy %+v", v.DP)
	}
	if len(v.Flags) != 1 || len(v.Exclusions) != 1 || v.Exclusions[0].Round != 1 {
		t.Errorf("flags %v exclusions %v", v.Flags, v.Exclusions)
	}
	ids := map[string]bool{}
	for _, c := range v.Charts {
		ids[c.ID] = !c.Empty
	}
	for id, nonEmpty := range map[string]bool{"chart-accuracy": true, "chart-loss": true, "chart-contributions": true, "chart-bytes": true, "chart-duration": true, "chart-epsilon": true} {
		if ids[id] != nonEmpty {
			t.Errorf("chart %s: drawn %v, want %v", id, ids[id], nonEmpty)
		}
	}
}
