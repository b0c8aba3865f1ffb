package study

import (
	"errors"
	"fmt"
	"log/slog"
)

// Exclusion by an admin. The detector and the norm check only advise: a
// site leaves the study's rounds when an admin signs its exclusion and the
// audit log holds it (audit.ExclusionRecord). The driver relays the
// admin's record to the log and then steps ExclusionChanged; from the
// exclusion's round on, the site is given no training task, and every
// audit node refuses a round that aggregates its update. It stays a key
// holder (decryption shares, countersignatures, the norm check).

// ErrExcluded: an update from a site an admin excluded from the round.
var ErrExcluded = errors.New("coordinator: site excluded from the study's rounds by an admin")

// MetricExclusions counts admins' exclusions (label "excluded") and
// readmissions ("readmitted") the study applied.
const MetricExclusions = "exclusions"

// excludedFrom reports whether site is excluded from round n.
func (m *Machine) excludedFrom(site string, n uint64) bool {
	x, out := m.excluded[site]
	return out && n >= x.From
}

// exclusionChanged applies an exclusion or readmission the log holds.
func (m *Machine) exclusionChanged(e ExclusionChanged) []Action {
	x := e.Exclusion
	if !e.Excluded {
		delete(m.excluded, x.Site)
		acts := []Action{Observe{Metric: MetricExclusions, Label: "readmitted", Value: 1},
			logf(slog.LevelWarn, "site readmitted by an admin", "client", x.Site, "from_round", x.From, "by", x.By, "reason", x.Reason)}
		if r := m.r; r != nil && m.phase == PhaseRoundOpen && r.n >= x.From && m.approved[x.Site] && (m.keys == nil || m.keys.holder(x.Site)) {
			r.eligible[x.Site] = true
			if m.live[x.Site] {
				acts = append(acts, m.assign(x.Site)...)
			}
		}
		return acts
	}
	m.excluded[x.Site] = x
	acts := []Action{Observe{Metric: MetricExclusions, Label: "excluded", Value: 1},
		logf(slog.LevelWarn, "site excluded by an admin", "client", x.Site, "from_round", x.From, "by", x.By, "reason", x.Reason)}
	r := m.r
	if r == nil || r.n < x.From || !m.inRound() {
		return acts
	}
	delete(r.eligible, x.Site)
	delete(r.assigned, x.Site)
	if _, reported := r.updates[x.Site]; !reported {
		if m.phase == PhaseRoundOpen {
			// The round may have been waiting only for it.
			acts = append(acts, m.checkCollect()...)
		}
		return acts
	}
	if m.phase == PhaseRoundOpen {
		delete(r.updates, x.Site)
		acts = append(acts, logf(slog.LevelWarn, "update of an excluded site dropped", "client", x.Site, "round", r.n))
		return append(acts, m.checkCollect()...)
	}
	// Its update is in this round's aggregate already: the log would
	// refuse the round, so it fails, and the next one runs without it.
	return append(acts, m.failRound(fmt.Sprintf("an admin excluded %s from round %d after its update was aggregated", x.Site, r.n))...)
}

// inRound reports whether a round is in progress (before its record).
func (m *Machine) inRound() bool {
	switch m.phase {
	case PhaseRoundOpen, PhaseBounding, PhaseAggregating, PhaseSketching, PhaseDecrypting, PhaseCombining, PhaseCountersigning:
		return true
	}
	return false
}

// noteViolations remembers the first round each site's contribution was
// past the norm bound.
func (m *Machine) noteViolations(rep *RoundReport) {
	for _, s := range rep.Excluded {
		if _, seen := m.violations[s]; !seen {
			m.violations[s] = uint64(rep.Round)
		}
	}
}

// violationFlags flags every contributor whose contribution was ever past
// the norm bound: an honest hospital clips its update, so one excess is
// evidence, and a site that got past the check in this round (the check
// sees one projection) is still suspect. skip are sites already flagged.
func (m *Machine) violationFlags(contributors []string, skip map[string]bool) []Flag {
	var out []Flag
	for _, s := range contributors {
		if v, ok := m.violations[s]; ok && !skip[s] {
			out = append(out, Flag{Site: s, Reason: fmt.Sprintf("its update was past the norm bound in round %d (an honest hospital's clipped update never is)", v)})
		}
	}
	return out
}
