package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/fedledger/fedledger/coordinator/study"
)

// The driver: one goroutine owns the study machine. It feeds it the
// handlers' events, ticks and the results of work, and performs the
// actions it returns: messages go to sessions at once, work (crypto, disk,
// the audit log) runs on one worker goroutine whose result comes back as
// an event, so a slow decryption or an unavailable audit log never stops
// the coordinator from answering its clients.

// prepare stores the initial model, reads where the study stands on the
// audit log (recording the study's start if needed) and what this
// coordinator kept on disk, and builds the machine from there.
func (c *Coordinator) prepare(ctx context.Context) (*study.Machine, []study.Action, error) {
	st := c.cfg.Study
	_, initial, sum, err := InitialModel(st)
	if err != nil {
		return nil, nil, err
	}
	if _, err := c.models.Put(initial); err != nil {
		return nil, nil, err
	}
	c.initial = study.Object{Hash: sum, Size: uint64(len(initial))}
	logged, err := c.recorder.Begin(ctx, StudyStart{Study: st, InitialModel: sum})
	if err != nil {
		return nil, nil, fmt.Errorf("coordinator: reading the study on the audit log: %w", err)
	}
	start, err := c.resumeState(logged, sum, uint64(len(initial)))
	if err != nil {
		return nil, nil, err
	}
	mc := c.machineConfig()
	// A DP study runs the rounds its privacy budget allows: the rules would
	// refuse the record of the next one.
	if b, err := st.DPBudget(); err != nil {
		return nil, nil, err
	} else if b != nil {
		n, err := b.Rounds(st.Rounds)
		if err != nil {
			return nil, nil, err
		}
		spent, _ := b.Spent(n)
		if n < st.Rounds {
			next, _ := b.Spent(n + 1)
			c.log.Warn("the study's privacy budget allows fewer rounds than it may run; it ends after them",
				slog.Int("rounds", n), slog.Int("of", st.Rounds), slog.Float64("epsilon_spent", spent), slog.Float64("next_round_epsilon", next),
				slog.Float64("budget", b.Epsilon), slog.Float64("delta", b.Delta))
			mc.Rounds = n
		}
		c.metrics.dpBudget.Set(b.Epsilon)
		c.log.Info("differentially private study", slog.Float64("epsilon_budget", b.Epsilon), slog.Float64("delta", b.Delta),
			slog.Float64("noise_multiplier", b.NoiseMultiplier), slog.Float64("clip_norm", b.ClipNorm), slog.Float64("sample_rate", b.SampleRate),
			slog.Int("rounds", mc.Rounds), slog.Float64("epsilon_at_end", spent))
	}
	m, acts, err := study.New(mc, start, time.Now())
	if err != nil {
		return nil, nil, err
	}
	c.log.Info("study ready to run", slog.String("initial_model", fmt.Sprintf("%x", sum)), slog.Int("rounds", st.Rounds),
		slog.Int("min_clients", st.MinClients), slog.Any("clients", st.Clients), slog.String("strategy", st.Strategy.Name),
		slog.Uint64("committed_rounds", start.Round))
	return m, acts, nil
}

func (c *Coordinator) machineConfig() study.Config {
	st := c.cfg.Study
	phase := st.PhaseTimeout
	if phase <= 0 {
		phase = st.RoundDeadline
	}
	return study.Config{Study: st.ID, Secure: st.Secure(), HEParams: st.HEPreset, Threshold: st.Threshold, K: st.MinClients, NormBound: st.NormBound,
		Rounds: st.Rounds, Sites: st.Clients, ManualStart: st.ManualStart, StartTimeout: st.StartTimeout,
		KeySetupTimeout: st.KeySetupTimeout, RoundDeadline: st.RoundDeadline, PhaseTimeout: phase,
		FinalEvalTimeout: c.cfg.FinalEvalTimeout, RetryMin: c.cfg.RetryMin, RetryMax: c.cfg.RetryMax}
}

// drive runs the machine until the study ends (nil or the study's
// failure) or ctx ends (ErrInterrupted).
func (c *Coordinator) drive(ctx context.Context, m *study.Machine, acts []study.Action) error {
	work := make(chan study.Action, 1)
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	go c.worker(workCtx, work)
	ticker := time.NewTicker(c.cfg.TickInterval)
	defer ticker.Stop()
	var queue []study.Action // work waiting for the worker
	var done *study.Done
	busy := false
	perform := func(acts []study.Action) {
		for _, a := range acts {
			switch a := a.(type) {
			case study.ComputeCollectiveKey, study.SaveKeySetup, study.Project, study.Aggregate, study.Combine, study.Record:
				queue = append(queue, a)
			case study.Done:
				done = &a
			default:
				c.perform(a)
			}
		}
		if !busy && len(queue) > 0 {
			busy = true
			work <- queue[0]
			queue = queue[1:]
		}
		c.mu.Lock()
		c.status = m.Status()
		c.mu.Unlock()
	}
	step := func(ev study.Event) error {
		acts, err := m.Step(time.Now(), ev)
		perform(acts)
		return err
	}
	perform(acts)
	for done == nil {
		select {
		case <-ctx.Done():
			return ErrInterrupted
		case <-ticker.C:
			step(study.Tick{})
		case r := <-c.events:
			err := step(r.ev)
			if r.reply != nil {
				r.reply <- err
			}
		case ev := <-c.results:
			busy = false
			step(ev)
		}
	}
	res := done.Result
	c.mu.Lock()
	c.result = StudyResult{Study: res.Study, Rounds: res.Rounds, FinalTest: res.FinalTest, FinalPersonal: res.FinalPersonal}
	c.mu.Unlock()
	if done.Err == nil {
		b, err := c.models.Get(res.Model.Hash)
		if err != nil {
			done.Err = fmt.Errorf("coordinator: the final model: %w", err)
		} else {
			c.mu.Lock()
			c.result.Model, c.result.ModelBytes = res.Model.Hash, b
			c.mu.Unlock()
			c.log.Info("final model", slog.String("path", c.models.path(res.Model.Hash)), slog.String("sha256", fmt.Sprintf("%x", res.Model.Hash)))
		}
	}
	c.finish(res, done.Err)
	return done.Err
}

// worker performs work actions one at a time and posts their results.
func (c *Coordinator) worker(ctx context.Context, work <-chan study.Action) {
	for {
		select {
		case <-ctx.Done():
			return
		case a := <-work:
			ev := c.do(ctx, a)
			if ctx.Err() != nil {
				// Shutting down: an append cut short is not the log's
				// refusal, and nothing more is recorded.
				return
			}
			select {
			case c.results <- ev:
			case <-ctx.Done():
				return
			}
		}
	}
}

// do performs one work action.
func (c *Coordinator) do(ctx context.Context, a study.Action) study.Event {
	switch a := a.(type) {
	case study.ComputeCollectiveKey:
		h, err := c.computeKey(a)
		return study.CollectiveKeyDone{Hash: h, Err: err}
	case study.SaveKeySetup:
		return study.KeySetupSaved{Err: c.saveKeySetup(a.KeySetup)}
	case study.Project:
		t0 := time.Now()
		proj, err := c.project(a)
		c.metrics.phaseSeconds.WithLabelValues("bound_work").Observe(time.Since(t0).Seconds())
		return study.Projected{Round: a.Round, Projections: proj, Err: err}
	case study.Aggregate:
		t0 := time.Now()
		obj, err := c.aggregate(a)
		c.metrics.phaseSeconds.WithLabelValues("aggregate_work").Observe(time.Since(t0).Seconds())
		return study.Aggregated{Round: a.Round, Aggregate: obj, Err: err}
	case study.Combine:
		t0 := time.Now()
		out, opt, err := c.combine(a)
		c.metrics.phaseSeconds.WithLabelValues("combine_work").Observe(time.Since(t0).Seconds())
		return study.Combined{Round: a.Round, Output: out, Optimizer: opt, Err: err}
	case study.Record:
		rctx, cancel := context.WithTimeout(ctx, c.cfg.RecordTimeout)
		defer cancel()
		err := c.recorder.Record(rctx, a)
		if err == nil && a.Round != nil && !a.Round.Failed {
			c.metrics.round(*a.Round)
		}
		if err == nil && a.Round != nil {
			if b, _ := c.cfg.Study.DPBudget(); b != nil {
				spent, _ := b.Spent(a.Round.Round)
				c.metrics.dpSpent.Set(spent)
			}
		}
		if err == nil && a.Round != nil && c.cfg.OnRound != nil {
			c.cfg.OnRound(*a.Round)
		}
		return study.Recorded{Err: err, Retry: err != nil && (errors.Is(err, ErrLogUnavailable) || ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded))}
	}
	panic(fmt.Sprintf("coordinator: %T is not work", a))
}

// perform does an immediate action.
func (c *Coordinator) perform(a study.Action) {
	switch a := a.(type) {
	case study.Send:
		c.send(a)
	case study.Store:
		if _, err := c.objects.Put(a.Payload); err != nil {
			c.log.Error("storing an accepted payload", slog.Any("err", err))
		}
	case study.Log:
		c.log.LogAttrs(context.Background(), a.Level, a.Msg, a.Attrs...)
	case study.Observe:
		c.metrics.observe(a)
	}
}
