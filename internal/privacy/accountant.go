package privacy

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Entry is a run of Steps steps of the sampled Gaussian mechanism with
// sampling rate Q and noise multiplier Sigma.
type Entry struct {
	Q     float64
	Sigma float64
	Steps int
}

// Accountant tracks the privacy spent by a sequence of sampled Gaussian
// steps whose parameters may differ from step to step. The zero value is an
// accountant that has spent nothing. An Accountant is not safe for
// concurrent use.
type Accountant struct {
	entries []Entry
}

// Step records steps more steps with sampling rate q and noise multiplier
// sigma. It rejects q outside [0, 1], a negative or non-finite sigma, and
// negative steps, recording nothing.
func (a *Accountant) Step(q, sigma float64, steps int) error {
	if err := checkStep(q, sigma, steps); err != nil {
		return err
	}
	if steps == 0 {
		return nil
	}
	if n := len(a.entries); n > 0 && a.entries[n-1].Q == q && a.entries[n-1].Sigma == sigma {
		last := &a.entries[n-1]
		if last.Steps > math.MaxInt-steps {
			return fmt.Errorf("privacy: step count overflows: %d + %d", last.Steps, steps)
		}
		last.Steps += steps
		return nil
	}
	a.entries = append(a.entries, Entry{Q: q, Sigma: sigma, Steps: steps})
	return nil
}

// Entries returns the recorded steps, consecutive steps with equal
// parameters merged into one entry.
func (a *Accountant) Entries() []Entry {
	return slices.Clone(a.entries)
}

// Epsilon returns the ε such that the steps recorded so far are
// (ε, delta)-DP; it is EpsilonFor(a.Entries(), delta).
func (a *Accountant) Epsilon(delta float64) (float64, error) {
	return EpsilonFor(a.entries, delta)
}

// EpsilonFor returns the ε such that the composition of entries is
// (ε, delta)-DP: the RDP of every entry at [DefaultOrders], summed and
// converted by [Epsilon]. Entries with Q = 0 or Steps = 0 touch no data
// and are skipped; if nothing is left, ε is exactly 0. (Converting an RDP
// of zero would instead give the conversion's floor, about 0.1 at δ = 1e-5.)
//
// EpsilonFor is a pure function of the multiset of steps: it merges entries
// with equal parameters and sums them in a canonical order, so reordering
// or splitting entries does not change a single bit of the result. An
// auditor recomputing ε from declared parameters on the same platform gets
// exactly the declared value. Across CPU architectures floating-point
// results (the math library, fused multiply-adds) may differ in the last
// bits, so compare with a small relative tolerance, such as 1e-9, there.
func EpsilonFor(entries []Entry, delta float64) (float64, error) {
	if !(delta > 0 && delta < 1) {
		return 0, fmt.Errorf("privacy: delta = %v, want in (0, 1)", delta)
	}
	canon, err := canonical(entries)
	if err != nil || len(canon) == 0 {
		return 0, err
	}
	rdp, err := composeRDP(canon, accountingOrders)
	if err != nil {
		return 0, err
	}
	eps, _, err := Epsilon(accountingOrders, rdp, delta)
	return eps, err
}

// ComposeRDP returns the RDP at each of orders of the composition of
// entries, computed deterministically as described at [EpsilonFor].
func ComposeRDP(entries []Entry, orders []float64) ([]float64, error) {
	if err := checkOrders(orders); err != nil {
		return nil, err
	}
	canon, err := canonical(entries)
	if err != nil {
		return nil, err
	}
	return composeRDP(canon, orders)
}

// composeRDP sums the RDP of canonical entries at orders.
func composeRDP(canon []Entry, orders []float64) ([]float64, error) {
	total := make([]float64, len(orders))
	for _, e := range canon {
		rdp, err := RDP(e.Q, e.Sigma, e.Steps, orders)
		if err != nil {
			return nil, err
		}
		for i, r := range rdp {
			total[i] += r
		}
	}
	return total, nil
}

// canonical validates entries and returns them sorted by (Q, Sigma), with
// equal parameters merged and entries that touch no data (Q = 0 or
// Steps = 0) dropped.
func canonical(entries []Entry) ([]Entry, error) {
	canon := make([]Entry, 0, len(entries))
	for i, e := range entries {
		if p := stepProblem(e.Q, e.Sigma, e.Steps); p != "" {
			return nil, fmt.Errorf("privacy: entries[%d]: %s", i, p)
		}
		if e.Steps > 0 && e.Q > 0 {
			canon = append(canon, e)
		}
	}
	slices.SortFunc(canon, func(x, y Entry) int {
		return cmp.Or(cmp.Compare(x.Q, y.Q), cmp.Compare(x.Sigma, y.Sigma))
	})
	merged := canon[:0]
	for _, e := range canon {
		if n := len(merged); n > 0 && merged[n-1].Q == e.Q && merged[n-1].Sigma == e.Sigma {
			if merged[n-1].Steps > math.MaxInt-e.Steps {
				return nil, fmt.Errorf("privacy: step count overflows: %d + %d", merged[n-1].Steps, e.Steps)
			}
			merged[n-1].Steps += e.Steps
			continue
		}
		merged = append(merged, e)
	}
	return merged, nil
}
