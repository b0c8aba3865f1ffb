// Package tuning is federated hyperparameter tuning as a kind of study:
// successive halving over a grid of client learning rates, local steps and
// server learning rates, where every trial is an ordinary study on the
// audit log and is scored only on the hospitals' signed evaluations of
// validation data.
//
// A trial's study holds out a validation part of each hospital's training
// split (coordinator.StudyConfig.ValidationFraction; the study record says
// so and the hospitals check it), so a trial never touches a test split.
// In round r+1 every contributor signs its figures for round r+1's parent,
// the model after r rounds, on that part; a trial of budget b therefore
// runs b+1 rounds, and its score is the lowest sample-weighted validation
// loss among the models after rounds 1..b (which also chooses the number of
// rounds). Successive halving keeps the best 1/η of the trials of each rung
// and gives them η times the rounds, restarting them from the initial model.
//
// The selection is a function of the log alone: Recompute replays an
// exported log through the audit rules and finds the same trials, scores
// and choice, so a consortium member or a regulator can check how the
// hyperparameters of a study were chosen.
package tuning

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Space is the grid: every combination is a candidate.
type Space struct {
	LearningRates []float64 // the hospitals' local learning rate
	LocalSteps    []int
	ServerLRs     []float64 // the server optimiser's learning rate
}

// Plan is a tuning run.
type Plan struct {
	// ID names the run; trial studies are ID-r<rung>-<candidate>.
	ID    string
	Space Space
	// MinRounds is the first rung's budget; MaxRounds caps the budgets.
	MinRounds, MaxRounds int
	// Eta: each rung keeps the best ceil(n/Eta) trials and multiplies
	// the budget by Eta (default 3).
	Eta int
	// ValidationFraction of each hospital's training split is held out
	// for scoring (default 0.25).
	ValidationFraction float64
}

// Candidate is one point of the grid.
type Candidate struct {
	Name         string
	LearningRate float64
	LocalSteps   int
	ServerLR     float64
}

// ErrPlan: the tuning plan is not valid.
var ErrPlan = errors.New("tuning: invalid plan")

func (p Plan) eta() int {
	if p.Eta == 0 {
		return 3
	}
	return p.Eta
}

func (p Plan) fraction() float64 {
	if p.ValidationFraction == 0 {
		return 0.25
	}
	return p.ValidationFraction
}

// Validate checks the plan.
func (p Plan) Validate() error {
	var errs []error
	if err := tlsutil.ValidID(p.ID); err != nil {
		errs = append(errs, fmt.Errorf("%w: id: %w", ErrPlan, err))
	}
	s := p.Space
	if len(s.LearningRates) == 0 || len(s.LocalSteps) == 0 || len(s.ServerLRs) == 0 {
		errs = append(errs, fmt.Errorf("%w: the grid needs at least one learning rate, local step count and server learning rate", ErrPlan))
	}
	for _, v := range slices.Concat(s.LearningRates, s.ServerLRs) {
		if !(v > 0) || math.IsInf(v, 0) {
			errs = append(errs, fmt.Errorf("%w: learning rate %v, want > 0", ErrPlan, v))
		}
	}
	for _, v := range s.LocalSteps {
		if v < 1 {
			errs = append(errs, fmt.Errorf("%w: local steps %d, want >= 1", ErrPlan, v))
		}
	}
	if p.MinRounds < 1 || p.MaxRounds < p.MinRounds {
		errs = append(errs, fmt.Errorf("%w: rounds %d..%d, want 1 <= min <= max", ErrPlan, p.MinRounds, p.MaxRounds))
	}
	if p.eta() < 2 {
		errs = append(errs, fmt.Errorf("%w: eta = %d, want >= 2", ErrPlan, p.Eta))
	}
	if f := p.fraction(); !(f > 0 && f < 0.9) {
		errs = append(errs, fmt.Errorf("%w: validation fraction %v, want in (0, 0.9)", ErrPlan, f))
	}
	return errors.Join(errs...)
}

// Candidates lists the grid in a fixed order (learning rate, then local
// steps, then server learning rate).
func (p Plan) Candidates() []Candidate {
	var out []Candidate
	for _, lr := range p.Space.LearningRates {
		for _, steps := range p.Space.LocalSteps {
			for _, slr := range p.Space.ServerLRs {
				out = append(out, Candidate{Name: fmt.Sprintf("c%d", len(out)+1), LearningRate: lr, LocalSteps: steps, ServerLR: slr})
			}
		}
	}
	return out
}

// Rungs are the budgets in rounds, MinRounds·Eta^i capped at MaxRounds,
// with the number of trials each runs (the first all of n).
func (p Plan) Rungs(n int) (budgets, trials []int) {
	for b, k := p.MinRounds, n; k >= 1; b, k = b*p.eta(), (k+p.eta()-1)/p.eta() {
		b = min(b, p.MaxRounds)
		budgets, trials = append(budgets, b), append(trials, k)
		if b == p.MaxRounds || k == 1 {
			break
		}
	}
	return budgets, trials
}

// Study is the trial study of candidate c at rung with budget rounds: the
// base study with the candidate's hyperparameters, budget+1 rounds (the
// last round's evaluations score the budget's model), a validation split,
// and its id, purpose and trial on the record.
func (p Plan) Study(base coordinator.StudyConfig, c Candidate, rung, budget int) coordinator.StudyConfig {
	st := base
	st.ID = fmt.Sprintf("%s-r%d-%s", p.ID, rung+1, c.Name)
	st.Training.LearningRate, st.Training.LocalSteps, st.Training.Epochs = c.LearningRate, c.LocalSteps, 0
	st.Strategy.ServerLR = c.ServerLR
	st.Rounds = budget + 1
	st.ValidationFraction = p.fraction()
	st.Trial = &coordinator.Trial{Tuning: p.ID, Name: c.Name}
	st.Purpose = fmt.Sprintf("tuning %s, rung %d, trial %s: learning rate %g, %d local steps, server learning rate %g, %d rounds scored on validation data",
		p.ID, rung+1, c.Name, c.LearningRate, c.LocalSteps, c.ServerLR, budget)
	return st
}

// Score is a model's validation figures, from the hospitals' signed
// evaluations: the sample-weighted mean loss and accuracy over the sites
// that evaluated it, and the mean of their AUCs.
type Score struct {
	// After is the number of rounds behind the model.
	After    int
	Loss     float64
	Accuracy float64
	AUC      float64
	N        int
	Sites    int
}

// Scores reads a trial study's validation figures from its round
// records: the evaluations on round r+1's record score the model after r
// rounds. Rounds whose record has no validation figures give no score.
func Scores(records []*audit.Record) []Score {
	var out []Score
	for _, r := range records {
		if r.Kind != audit.KindRoundCompleted || r.Round < 2 {
			continue
		}
		s := Score{After: int(r.Round) - 1}
		var loss, acc, auc, n float64
		for _, e := range r.Evaluations {
			fig := map[string]float64{}
			for _, m := range e.Metrics {
				fig[m.Name] = m.Value
			}
			w, ok := fig["val_n"]
			l, okL := fig["global_val_loss"]
			if !ok || !okL || w < 1 {
				continue
			}
			loss, acc, auc, n = loss+w*l, acc+w*fig["global_val_accuracy"], auc+fig["global_val_auc"], n+w
			s.Sites++
		}
		if s.Sites == 0 {
			continue
		}
		s.Loss, s.Accuracy, s.AUC, s.N = loss/n, acc/n, auc/float64(s.Sites), int(n)
		out = append(out, s)
	}
	return out
}

// Best is the score with the lowest loss (ties: fewer rounds); ok is false
// when there are none.
func Best(scores []Score) (best Score, ok bool) {
	for _, s := range scores {
		if !ok || s.Loss < best.Loss || s.Loss == best.Loss && s.After < best.After {
			best, ok = s, true
		}
	}
	return best, ok
}

// Trial is one trial's outcome.
type Trial struct {
	Study     string
	Rung      int // from 1
	Candidate Candidate
	Budget    int
	Scores    []Score
	// Best is the lowest-loss model of the trial; Scored is false when the
	// trial produced no validation figures (every round failed, or no
	// site evaluated).
	Best   Score
	Scored bool
	Err    string // why the trial's study failed, if it did
}

// Result is a tuning run's outcome.
type Result struct {
	ID     string
	Trials []Trial
	// Selected is the chosen trial: the best score of the last rung.
	Selected Trial
}

// Chosen applies the selected trial to base: its hyperparameters and the
// number of rounds of its best model.
func (r *Result) Chosen(base coordinator.StudyConfig) coordinator.StudyConfig {
	c := r.Selected.Candidate
	base.Training.LearningRate, base.Training.LocalSteps, base.Training.Epochs = c.LearningRate, c.LocalSteps, 0
	base.Strategy.ServerLR = c.ServerLR
	base.Rounds = r.Selected.Best.After
	return base
}

// RunTrial runs a trial's study to its end and returns its records from
// the audit log, in log order. An error that is not the study's own
// failure (the federation is gone, ctx ended) stops the tuning.
type RunTrial func(ctx context.Context, st coordinator.StudyConfig) ([]*audit.Record, error)

// ErrTrialFailed wraps a trial study's own failure (for example every round
// failed): the trial is unscored and tuning goes on.
var ErrTrialFailed = errors.New("tuning: trial failed")

// Run tunes: each rung runs its trials (in candidate order), ranks them by
// Best, and promotes the best ceil(n/Eta) to the next rung's budget.
func Run(ctx context.Context, base coordinator.StudyConfig, p Plan, run RunTrial) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	res := &Result{ID: p.ID}
	cands := p.Candidates()
	budgets, sizes := p.Rungs(len(cands))
	for rung, budget := range budgets {
		cands = cands[:min(len(cands), sizes[rung])]
		var trials []Trial
		for _, c := range cands {
			st := p.Study(base, c, rung, budget)
			t := Trial{Study: st.ID, Rung: rung + 1, Candidate: c, Budget: budget}
			recs, err := run(ctx, st)
			switch {
			case errors.Is(err, ErrTrialFailed):
				t.Err = err.Error()
			case err != nil:
				return res, fmt.Errorf("tuning %s: trial %s: %w", p.ID, st.ID, err)
			}
			t.Scores = Scores(recs)
			t.Best, t.Scored = Best(t.Scores)
			trials = append(trials, t)
		}
		res.Trials = append(res.Trials, trials...)
		rank(trials)
		cands = cands[:0]
		for _, t := range trials {
			if t.Scored {
				cands = append(cands, t.Candidate)
			}
		}
		if len(cands) == 0 {
			return res, fmt.Errorf("tuning %s: no trial of rung %d was scored", p.ID, rung+1)
		}
		res.Selected = trials[0]
	}
	return res, nil
}

// rank orders trials best first: scored before unscored, then by Best's
// loss, then by candidate order.
func rank(ts []Trial) {
	slices.SortStableFunc(ts, func(a, b Trial) int {
		switch {
		case a.Scored != b.Scored:
			if a.Scored {
				return -1
			}
			return 1
		case !a.Scored:
			return 0
		case a.Best.Loss < b.Best.Loss:
			return -1
		case a.Best.Loss > b.Best.Loss:
			return 1
		}
		return 0
	})
}

// ErrRecompute: the log does not hold a tuning run as its records say.
var ErrRecompute = errors.New("tuning: the log's trials do not make a tuning run")

// Recompute finds tuning run id's trials among records (a replayed log,
// in order: audit.ReplayBundle) by their study records, scores them from
// their round records and selects as Run does: the best trial of the last
// rung. It trusts only what the records say; ReplayBundle has held them
// to the audit rules and the hospitals' signatures.
func Recompute(records []audit.LineageStep, id string) (*Result, error) {
	res := &Result{ID: id}
	byStudy := map[string]int{}
	rounds := map[string][]*audit.Record{}
	for _, s := range records {
		r := s.Record
		if r.Kind == audit.KindStudyCreated && r.Param("tuning") == id {
			t, err := trialOf(r)
			if err != nil {
				return nil, err
			}
			byStudy[r.StudyID] = len(res.Trials)
			res.Trials = append(res.Trials, t)
			continue
		}
		if _, ok := byStudy[r.StudyID]; ok {
			rounds[r.StudyID] = append(rounds[r.StudyID], r)
		}
	}
	if len(res.Trials) == 0 {
		return nil, fmt.Errorf("%w: no trial of tuning %q on the log", ErrRecompute, id)
	}
	last := 0
	for i := range res.Trials {
		t := &res.Trials[i]
		t.Scores = Scores(rounds[t.Study])
		t.Best, t.Scored = Best(t.Scores)
		last = max(last, t.Rung)
	}
	var final []Trial
	for _, t := range res.Trials {
		if t.Rung == last {
			final = append(final, t)
		}
	}
	rank(final)
	if !final[0].Scored {
		return res, fmt.Errorf("%w: no trial of the last rung (%d) was scored", ErrRecompute, last)
	}
	res.Selected = final[0]
	return res, nil
}

// trialOf reads a trial's candidate, rung and budget from its study
// record.
func trialOf(r *audit.Record) (Trial, error) {
	bad := func(what string, err error) (Trial, error) {
		return Trial{}, fmt.Errorf("%w: study %q: %s: %v", ErrRecompute, r.StudyID, what, err)
	}
	lr, err := strconv.ParseFloat(r.Param("learning_rate"), 64)
	if err != nil {
		return bad("learning_rate", err)
	}
	steps, err := strconv.Atoi(r.Param("local_steps"))
	if err != nil {
		return bad("local_steps", err)
	}
	slr, err := strconv.ParseFloat(r.Param("server_lr"), 64)
	if err != nil {
		return bad("server_lr", err)
	}
	var rung int
	if _, err := fmt.Sscanf(r.StudyID[len(r.Param("tuning")):], "-r%d-", &rung); err != nil {
		return bad("rung in the study id", err)
	}
	if f, err := strconv.ParseFloat(r.Param("validation_fraction"), 64); err != nil || !(f > 0) {
		return bad("validation_fraction", fmt.Errorf("%q: a trial is scored on a validation split its record declares", r.Param("validation_fraction")))
	}
	if r.Rounds < 2 {
		return bad("rounds", fmt.Errorf("%d, a trial runs at least 2", r.Rounds))
	}
	c := Candidate{Name: r.Param("trial"), LearningRate: lr, LocalSteps: steps, ServerLR: slr}
	return Trial{Study: r.StudyID, Rung: rung, Candidate: c, Budget: int(r.Rounds) - 1}, nil
}
