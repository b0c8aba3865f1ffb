package study

import (
	"fmt"
	"log/slog"
	"math"
	"slices"
)

// The norm check (secure studies with a norm bound B), between collect and
// aggregate: t live key holders each give, for every contribution, a
// projection share onto the round's direction (a unit vector drawn from the
// digest of the round's manifest, which nobody chooses); the driver opens
// one scalar per contribution, ⟨n·Δ, u⟩; a contribution with
// |⟨n·Δ, u⟩| > n·B·(1 + boundSlack) is left out before the aggregate is
// formed. An honest hospital clips Δ to B, so by Cauchy–Schwarz it is never
// left out. The projections and the exclusions go on the round's record.

// boundSlack covers the opening's noise (about 6e-7 of a unit projection).
const boundSlack = 1e-4

// requestBounds asks t live key holders, contributors first, for their
// projection shares.
func (m *Machine) requestBounds() []Action {
	r := m.r
	r.boundShares, r.projections, r.excluded = map[string]map[string][]uint64{}, nil, map[string]float64{}
	r.bounders = m.pickHolders()
	if len(r.bounders) < m.cfg.Threshold {
		return m.failRound(fmt.Sprintf("only %d key holders online, the norm check needs t=%d", len(r.bounders), m.cfg.Threshold))
	}
	m.setPhase(PhaseBounding)
	m.deadline = m.now.Add(m.cfg.PhaseTimeout)
	task := m.boundTask()
	acts := []Action{logf(slog.LevelInfo, "norm check requested", "round", r.n, "holders", r.bounders, "contributions", len(r.updates), "bound", m.cfg.NormBound)}
	for _, s := range r.bounders {
		acts = append(acts, Send{To: s, Msg: task})
	}
	return acts
}

func (m *Machine) boundTask() BoundTask {
	r := m.r
	points := make([]uint64, len(r.bounders))
	for i, s := range r.bounders {
		points[i] = m.keys.point(s)
	}
	slices.Sort(points)
	return BoundTask{Round: r.n, Parent: m.parent, Contributions: r.contributions(), Active: points, Deadline: m.deadline}
}

func (m *Machine) stepBound(ev Event) ([]Action, error) {
	r := m.r
	switch e := ev.(type) {
	case Tick:
		if !m.now.Before(m.deadline) && r.projections == nil {
			return m.failRound(fmt.Sprintf("norm check: %d of %d key holders answered by the deadline", len(r.boundShares), len(r.bounders))), nil
		}
	case Joined:
		if slices.Contains(r.bounders, e.Site) {
			if _, done := r.boundShares[e.Site]; !done {
				return []Action{Send{To: e.Site, Msg: m.boundTask()}}, nil
			}
		}
	case Left:
		if _, done := r.boundShares[e.Site]; slices.Contains(r.bounders, e.Site) && !done && r.projections == nil {
			return m.failRound(fmt.Sprintf("norm check: key holder %s left", e.Site)), nil
		}
	case Refused:
		if e.Round == r.n && slices.Contains(r.bounders, e.Site) && r.projections == nil {
			return m.failRound(fmt.Sprintf("norm check: key holder %s refused: %s", e.Site, e.Reason)), nil
		}
	case BoundIn:
		if err := m.acceptBound(e); err != nil {
			return nil, err
		}
		if len(r.boundShares) < len(r.bounders) {
			return nil, nil
		}
		points := m.boundTask().Active
		return []Action{Project{Round: r.n, Parent: m.parent, Updates: r.contributions(), Active: points, Shares: r.boundShares}}, nil
	case Projected:
		if e.Round == r.n && r.projections == nil {
			return m.onProjected(e), nil
		}
	default:
		return nil, m.refuseOutOfPhase(ev)
	}
	return nil, nil
}

// acceptBound checks a holder's shares cover every contribution; it
// changes nothing on error.
func (m *Machine) acceptBound(e BoundIn) error {
	r := m.r
	switch {
	case !slices.Contains(r.bounders, e.From):
		return fmt.Errorf("%w: %q was not asked for projection shares in round %d", ErrNotAssigned, e.From, r.n)
	case e.Round != r.n:
		return fmt.Errorf("%w: projection shares for round %d, this is round %d", ErrWrongRound, e.Round, r.n)
	}
	if _, dup := r.boundShares[e.From]; dup {
		return fmt.Errorf("%w: %q already sent its projection shares", ErrDuplicate, e.From)
	}
	if len(e.Shares) != len(r.updates) {
		return fmt.Errorf("%w: %d projection shares from %q, round %d has %d contributions", ErrBadUpdate, len(e.Shares), e.From, r.n, len(r.updates))
	}
	for site := range e.Shares {
		if _, ok := r.updates[site]; !ok {
			return fmt.Errorf("%w: a projection share for %q, who did not contribute to round %d", ErrBadUpdate, site, r.n)
		}
	}
	r.boundShares[e.From] = e.Shares
	return nil
}

// onProjected leaves out the contributions past the bound and aggregates
// the rest, or fails the round if fewer than K remain.
func (m *Machine) onProjected(e Projected) []Action {
	r := m.r
	acts := []Action{Observe{Metric: MetricPhaseSeconds, Label: "bound", Value: m.now.Sub(m.phaseAt).Seconds()}}
	if e.Err != nil {
		return append(acts, m.failRound("norm check: "+e.Err.Error())...)
	}
	r.projections = map[string]float64{}
	for _, site := range sortedKeys(r.updates) {
		p, ok := e.Projections[site]
		if !ok {
			return append(acts, m.failRound(fmt.Sprintf("norm check: no projection for %q", site))...)
		}
		r.projections[site] = p
		limit := float64(r.updates[site].c.Samples) * m.cfg.NormBound * (1 + boundSlack)
		if math.IsNaN(p) || math.Abs(p) > limit {
			r.excluded[site] = p
			delete(r.updates, site)
			acts = append(acts, Observe{Metric: MetricProjections, Label: "excluded", Value: 1},
				logf(slog.LevelWarn, "contribution past the norm bound left out", "round", r.n, "client", site, "projection", p, "limit", limit))
			continue
		}
		acts = append(acts, Observe{Metric: MetricProjections, Label: "within", Value: 1})
	}
	if len(r.updates) < m.cfg.K {
		return append(acts, m.failRound(fmt.Sprintf("%d contributions past the norm bound left out (%v); %d remain, K=%d", len(r.excluded), sortedKeys(r.excluded), len(r.updates), m.cfg.K))...)
	}
	m.setPhase(PhaseAggregating)
	return append(acts, Aggregate{Round: r.n, Updates: r.contributions()})
}
