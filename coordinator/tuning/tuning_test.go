package tuning

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator"
)

func plan() Plan {
	return Plan{ID: "tune-heart", Space: Space{LearningRates: []float64{0.001, 0.01, 0.1}, LocalSteps: []int{10, 50}, ServerLRs: []float64{1}},
		MinRounds: 2, MaxRounds: 18, Eta: 3}
}

func TestRungs(t *testing.T) {
	for _, tc := range []struct {
		p              Plan
		n              int
		budgets, sizes string
	}{
		{plan(), 6, "[2 6 18]", "[6 2 1]"},
		{Plan{MinRounds: 5, MaxRounds: 20, Eta: 3}, 6, "[5 15 20]", "[6 2 1]"},
		{Plan{MinRounds: 5, MaxRounds: 20, Eta: 2}, 12, "[5 10 20]", "[12 6 3]"},
		{Plan{MinRounds: 4, MaxRounds: 4, Eta: 3}, 9, "[4]", "[9]"},
		{Plan{MinRounds: 1, MaxRounds: 100, Eta: 2}, 1, "[1]", "[1]"},
	} {
		b, s := tc.p.Rungs(tc.n)
		if fmt.Sprint(b) != tc.budgets || fmt.Sprint(s) != tc.sizes {
			t.Errorf("%+v, %d candidates: budgets %v trials %v, want %s %s", tc.p, tc.n, b, s, tc.budgets, tc.sizes)
		}
	}
}

func TestPlanValidate(t *testing.T) {
	if err := plan().Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		edit func(*Plan)
		want string
	}{
		{func(p *Plan) { p.ID = "" }, "id"},
		{func(p *Plan) { p.Space.LocalSteps = nil }, "at least one"},
		{func(p *Plan) { p.Space.LearningRates[0] = -1 }, "learning rate -1"},
		{func(p *Plan) { p.Space.LocalSteps[0] = 0 }, "local steps 0"},
		{func(p *Plan) { p.MaxRounds = 1 }, "rounds 2..1"},
		{func(p *Plan) { p.Eta = 1 }, "eta = 1"},
		{func(p *Plan) { p.ValidationFraction = 0.95 }, "validation fraction 0.95"},
	} {
		p := plan()
		tc.edit(&p)
		if err := p.Validate(); err == nil || !errors.Is(err, ErrPlan) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an ErrPlan naming %q", err, tc.want)
		}
	}
}

// fakeRun plays a trial: the validation loss of the model after r rounds
// is a known function of the candidate (best at learning rate 0.01 with
// 50 steps, after 5 rounds), and the records are what the audit log would
// hold for the trial's study.
type fakeRun struct {
	studies []coordinator.StudyConfig
	fail    string // a study id whose every round fails
}

func loss(lr float64, steps, after int) float64 {
	return math.Abs(math.Log10(lr)+2) + 1/float64(steps) + 0.01*math.Abs(float64(after-5))
}

func (f *fakeRun) run(_ context.Context, st coordinator.StudyConfig) ([]*audit.Record, error) {
	f.studies = append(f.studies, st)
	rec := coordinator.StudyRecord(st, [32]byte{1}, "admin", timeZero)
	recs := []*audit.Record{rec}
	if st.ID == f.fail {
		return recs, fmt.Errorf("%w: every round failed", ErrTrialFailed)
	}
	for r := 1; r <= st.Rounds; r++ {
		round := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: st.ID, Round: uint64(r)}
		for i, site := range []string{"a", "b"} {
			l := loss(st.Training.LearningRate, st.Training.LocalSteps, r-1) + 0.1*float64(i)
			round.Evaluations = append(round.Evaluations, audit.Evaluation{Site: site, Metrics: []audit.Metric{
				{Name: "val_n", Value: float64(10 + 10*i)}, {Name: "global_val_accuracy", Value: 0.5}, {Name: "global_val_auc", Value: 0.6}, {Name: "global_val_loss", Value: l}}})
		}
		recs = append(recs, round)
	}
	return recs, nil
}

func TestRunSelectsOnValidationAndRecomputes(t *testing.T) {
	p := plan()
	base := coordinator.StudyConfig{ID: "heart", Rounds: 20}
	base.Training.LearningRate, base.Training.LocalSteps = 0.5, 1
	f := &fakeRun{}
	res, err := Run(t.Context(), base, p, f.run)
	if err != nil {
		t.Fatal(err)
	}
	// 6 + 2 + 1 trials, each study one round more than its budget.
	if len(f.studies) != 9 {
		t.Fatalf("%d trial studies, want 9", len(f.studies))
	}
	for _, st := range f.studies {
		if st.ValidationFraction != 0.25 || st.Trial == nil || st.Trial.Tuning != p.ID || !strings.HasPrefix(st.ID, p.ID+"-r") {
			t.Fatalf("trial study %+v", st)
		}
	}
	if got := f.studies[len(f.studies)-1]; got.Rounds != 19 || got.Training.LearningRate != 0.01 || got.Training.LocalSteps != 50 {
		t.Fatalf("last rung's study: %d rounds, lr %v, %d steps", got.Rounds, got.Training.LearningRate, got.Training.LocalSteps)
	}
	sel := res.Selected
	if sel.Candidate.LearningRate != 0.01 || sel.Candidate.LocalSteps != 50 || sel.Best.After != 5 || sel.Rung != 3 {
		t.Fatalf("selected %+v", sel)
	}
	// Sample-weighted: site b (weight 20 of 30) is 0.1 worse.
	if want := loss(0.01, 50, 5) + 0.1*20/30; math.Abs(sel.Best.Loss-want) > 1e-12 {
		t.Fatalf("best loss %v, want %v", sel.Best.Loss, want)
	}
	chosen := res.Chosen(base)
	if chosen.Rounds != 5 || chosen.Training.LearningRate != 0.01 || chosen.Training.LocalSteps != 50 || chosen.ID != "heart" {
		t.Fatalf("chosen study %+v", chosen)
	}

	// The same choice from the records alone.
	var log []audit.LineageStep
	for _, st := range f.studies {
		recs, _ := f.run(t.Context(), st)
		for _, r := range recs {
			log = append(log, audit.LineageStep{Index: int64(len(log)), Record: r})
		}
	}
	again, err := Recompute(log, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Trials) != 9 || again.Selected.Study != sel.Study || again.Selected.Best != sel.Best || again.Selected.Candidate != sel.Candidate {
		t.Fatalf("recomputed %+v, want %+v", again.Selected, sel)
	}
	if _, err := Recompute(log, "other"); !errors.Is(err, ErrRecompute) {
		t.Fatalf("another tuning id: %v", err)
	}
}

// TestRunSkipsFailedTrials: a trial whose study failed is unscored and not
// promoted; tuning goes on without it.
func TestRunSkipsFailedTrials(t *testing.T) {
	p := plan()
	f := &fakeRun{fail: p.ID + "-r1-c4"} // lr 0.01, 50 steps: the best
	res, err := Run(t.Context(), coordinator.StudyConfig{}, p, f.run)
	if err != nil {
		t.Fatal(err)
	}
	if res.Selected.Candidate.Name == "c4" {
		t.Fatal("a failed trial was selected")
	}
	if res.Selected.Candidate.LearningRate != 0.01 || res.Selected.Candidate.LocalSteps != 10 {
		t.Fatalf("selected %+v, want the next best (lr 0.01, 10 steps)", res.Selected.Candidate)
	}
	var failed *Trial
	for i := range res.Trials {
		if res.Trials[i].Study == f.fail {
			failed = &res.Trials[i]
		}
	}
	if failed == nil || failed.Scored || failed.Err == "" {
		t.Fatalf("failed trial %+v", failed)
	}
	stop := errors.New("federation gone")
	if _, err := Run(t.Context(), coordinator.StudyConfig{}, p, func(context.Context, coordinator.StudyConfig) ([]*audit.Record, error) {
		return nil, stop
	}); !errors.Is(err, stop) {
		t.Fatalf("an infrastructure error: %v", err)
	}
}

// TestScoresIgnoreTestFigures: only validation figures score a trial; a
// record whose evaluations name only test figures gives no score.
func TestScoresIgnoreTestFigures(t *testing.T) {
	recs := []*audit.Record{
		{Kind: audit.KindRoundCompleted, Round: 1},
		{Kind: audit.KindRoundCompleted, Round: 2, Evaluations: []audit.Evaluation{{Site: "a", Metrics: []audit.Metric{{Name: "test_n", Value: 10}, {Name: "global_test_loss", Value: 0.1}}}}},
		{Kind: audit.KindRoundFailed, Round: 3},
		{Kind: audit.KindRoundCompleted, Round: 4, Evaluations: []audit.Evaluation{{Site: "a", Metrics: []audit.Metric{{Name: "val_n", Value: 10}, {Name: "global_val_loss", Value: 0.7}}}}},
	}
	s := Scores(recs)
	if len(s) != 1 || s[0].After != 3 || s[0].Loss != 0.7 || s[0].Sites != 1 {
		t.Fatalf("scores %+v", s)
	}
}

var timeZero = time.Time{}
