package study

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
)

// One round:
//
//	collect        every live eligible site gets the train task; the round
//	               closes once every live assigned site has reported (with
//	               at least K updates), or at the deadline with at least K;
//	               fewer than K, or K out of reach, fails it
//	aggregate      the driver adds the updates (ciphertexts, or plaintext)
//	sketch         secure: every live contributor signs a sketch of its own
//	               contribution against the committed aggregate; the phase
//	               ends when all have answered or left, or at its deadline
//	decrypt        secure: t live key holders, contributors first, each
//	               check the aggregate against the sketches (downloading
//	               the contributions that have none) and give a signed
//	               decryption share over the manifest they checked
//	combine        the driver decrypts (or reads) the sum and applies the
//	               server optimiser: the new model and optimiser state
//	countersign    hospitals recompute the new model from the same inputs
//	               and sign the outcome: the decryptors (t) in a secure
//	               study, every live site (K needed) in a plaintext one
//	record         the round's record, with every hospital signature, is
//	               appended to the audit log; the round counts once it is
//	               committed
//
// Any step that cannot finish fails the round: its record says so, and the
// next round starts from the same parent.

type accepted struct {
	c          Contribution
	id         Identity
	train      *model.Metrics
	parentTest *model.Metrics
	personal   *model.Metrics
	evaluation *audit.Evaluation
	// uploaded is how long after the round opened the update arrived.
	uploaded time.Duration
}

type round struct {
	n        uint64
	start    time.Time
	eligible map[string]bool
	assigned map[string]bool
	refused  map[string]string
	updates  map[string]accepted

	aggregate Object
	sketchers map[string]bool // contributors asked for a sketch, not yet answered
	sketches  map[string]audit.Sketch
	active    []string // decryptors, sorted
	shares    map[string]SignedShare
	output    Object
	optAfter  Object
	signers   []string // asked to countersign, sorted
	need      int
	countered map[string]audit.Countersignature
	csIDs     map[string]Identity
	declined  map[string]bool
	// The norm check (secure studies with a norm bound): the key holders
	// asked, their projection shares by holder, the opened projections by
	// contributor, and the contributions left out for being past the bound.
	bounders    []string
	boundShares map[string]map[string][]uint64
	projections map[string]float64
	excluded    map[string]float64
}

func (m *Machine) beginRound() []Action {
	m.ks, m.afterKeys = nil, false
	r := &round{n: m.round, start: m.now, eligible: map[string]bool{}, assigned: map[string]bool{}, refused: map[string]string{},
		updates: map[string]accepted{}, shares: map[string]SignedShare{}, countered: map[string]audit.Countersignature{},
		sketchers: map[string]bool{}, sketches: map[string]audit.Sketch{},
		csIDs: map[string]Identity{}, declined: map[string]bool{}}
	for s := range m.approved {
		// Only key holders can encrypt under the study's key.
		if (m.keys == nil || m.keys.holder(s)) && !m.excludedFrom(s, r.n) {
			r.eligible[s] = true
		}
	}
	m.r = r
	m.setPhase(PhaseRoundOpen)
	m.deadline = m.now.Add(m.cfg.RoundDeadline)
	acts := []Action{logf(slog.LevelInfo, "round announced", "round", r.n, "parent", short(m.parent.Hash), "clients", len(m.live))}
	for _, s := range sortedKeys(m.live) {
		acts = append(acts, m.assign(s)...)
	}
	return append(acts, m.checkCollect()...)
}

// assign gives a live eligible site the round's task, unless it reported.
func (m *Machine) assign(site string) []Action {
	r := m.r
	if !r.eligible[site] || m.phase != PhaseRoundOpen {
		return nil
	}
	if _, reported := r.updates[site]; reported {
		return nil
	}
	r.assigned[site] = true
	delete(r.refused, site) // a reconnecting site may try again
	return []Action{Send{To: site, Msg: TrainTask{Round: r.n, Parent: m.parent, Deadline: m.deadline}}}
}

func (m *Machine) stepRound(ev Event) ([]Action, error) {
	switch m.phase {
	case PhaseRoundOpen:
		return m.stepCollect(ev)
	case PhaseBounding:
		return m.stepBound(ev)
	case PhaseSketching:
		return m.stepSketch(ev)
	case PhaseDecrypting:
		return m.stepDecrypt(ev)
	case PhaseCountersigning:
		return m.stepCountersign(ev)
	}
	if err := m.refuseOutOfPhase(ev); err != nil {
		return nil, err
	}
	switch e := ev.(type) {
	case Aggregated:
		if m.phase == PhaseAggregating && e.Round == m.r.n {
			return m.onAggregated(e), nil
		}
	case Combined:
		if m.phase == PhaseCombining && e.Round == m.r.n {
			return m.onCombined(e), nil
		}
	}
	return nil, nil
}

func (m *Machine) stepCollect(ev Event) ([]Action, error) {
	r := m.r
	switch e := ev.(type) {
	case Joined:
		return append(m.assign(e.Site), m.checkCollect()...), nil
	case Left:
		return m.checkCollect(), nil
	case Refused:
		if e.Round == r.n && r.eligible[e.Site] {
			if _, done := r.updates[e.Site]; !done {
				r.refused[e.Site] = e.Reason
			}
		}
		return m.checkCollect(), nil
	case UpdateIn:
		if err := m.accept(e); err != nil {
			return nil, err
		}
		return append([]Action{
			Store{Payload: e.Payload},
			logf(slog.LevelInfo, "update accepted", "round", r.n, "client", e.From.Site, "samples", e.Update.Samples, "sha256", short(e.Update.UpdateHash)),
			Observe{Metric: MetricUpdates, Label: "accepted", Value: 1},
			Observe{Metric: MetricUpdateBytes, Value: float64(len(e.Payload))},
		}, m.checkCollect()...), nil
	case Tick:
		if m.now.Before(m.deadline) {
			return nil, nil
		}
		if len(r.updates) >= m.cfg.K {
			return m.closeCollect(), nil
		}
		return m.failRound(fmt.Sprintf("deadline passed with %d of the %d updates needed", len(r.updates), m.cfg.K)), nil
	}
	return nil, m.refuseOutOfPhase(ev)
}

// accept checks an update against the round; it changes nothing on error.
func (m *Machine) accept(u UpdateIn) error {
	r := m.r
	site := u.From.Site
	key := u.From.Key
	if m.keys != nil {
		key = m.keys.Keys[site]
	}
	switch {
	case !m.approved[site]:
		return fmt.Errorf("%w: %q", ErrUnknownClient, site)
	case m.excludedFrom(site, r.n):
		x := m.excluded[site]
		return fmt.Errorf("%w: %q is excluded from round %d on by %s (%s)", ErrExcluded, site, x.From, x.By, x.Reason)
	case !r.eligible[site]:
		return fmt.Errorf("%w: %q", ErrNotKeyHolder, site)
	case u.Round != r.n:
		return fmt.Errorf("%w: round %d, this is round %d", ErrWrongRound, u.Round, r.n)
	case u.Parent != m.parent.Hash:
		return fmt.Errorf("%w: %s, round %d starts from %s", ErrWrongParent, short(u.Parent), r.n, short(m.parent.Hash))
	case !r.assigned[site]:
		return fmt.Errorf("%w: %q", ErrNotAssigned, site)
	case u.Update.Samples == 0:
		return fmt.Errorf("%w: zero sample count", ErrBadUpdate)
	case u.Update.Site != site:
		return fmt.Errorf("%w: update names site %q, sent by %q", ErrBadUpdate, u.Update.Site, site)
	case sha256.Sum256(u.Payload) != u.Update.UpdateHash:
		return fmt.Errorf("%w: payload does not hash to %s", ErrBadUpdate, short(u.Update.UpdateHash))
	}
	if prev, ok := r.updates[site]; ok {
		return fmt.Errorf("%w: %q already sent %s", ErrDuplicate, site, short(prev.c.UpdateHash))
	}
	if !verify(key, u.Update.Message(m.cfg.Study, r.n, u.Parent), u.Update.Signature) {
		return fmt.Errorf("%w: contribution of %q", ErrBadSignature, site)
	}
	if e := u.Evaluation; e != nil {
		if e.Site != site || !verify(key, e.Message(m.cfg.Study, r.n, u.Parent), e.Signature) {
			return fmt.Errorf("%w: evaluation of %q", ErrBadSignature, site)
		}
		if err := e.Check(); err != nil {
			return fmt.Errorf("%w: %w", ErrBadUpdate, err)
		}
	}
	r.updates[site] = accepted{c: Contribution{Contribution: u.Update, Size: uint64(len(u.Payload))}, id: u.From, train: u.Train, parentTest: u.ParentTest, personal: u.PersonalTest, evaluation: u.Evaluation,
		uploaded: m.now.Sub(r.start)}
	delete(r.refused, site)
	return nil
}

// checkCollect closes the round once nothing more is gained by waiting.
func (m *Machine) checkCollect() []Action {
	r := m.r
	if m.phase != PhaseRoundOpen {
		return nil
	}
	pending := 0
	for s := range m.live {
		if _, ok := r.updates[s]; !ok && r.assigned[s] {
			if _, no := r.refused[s]; !no {
				pending++
			}
		}
	}
	if pending == 0 && len(r.updates) >= m.cfg.K {
		return m.closeCollect()
	}
	if possible := len(r.eligible) - len(r.refused); possible < m.cfg.K {
		return m.failRound(fmt.Sprintf("only %d approved clients can still contribute (%d refused), %d needed", possible, len(r.refused), m.cfg.K))
	}
	return nil
}

// contributions are the round's accepted updates in site order.
func (r *round) contributions() []Contribution {
	out := make([]Contribution, 0, len(r.updates))
	for _, s := range sortedKeys(r.updates) {
		out = append(out, r.updates[s].c)
	}
	return out
}

func (r *round) signed() []audit.Contribution {
	out := make([]audit.Contribution, 0, len(r.updates))
	for _, c := range r.contributions() {
		out = append(out, c.Contribution)
	}
	return out
}

func (r *round) weight() uint64 {
	var w uint64
	for _, u := range r.updates {
		w += u.c.Samples
	}
	return w
}

func (m *Machine) closeCollect() []Action {
	if m.cfg.Secure && m.cfg.NormBound > 0 {
		return m.requestBounds()
	}
	m.setPhase(PhaseAggregating)
	return []Action{Aggregate{Round: m.r.n, Updates: m.r.contributions()}}
}

func (m *Machine) onAggregated(e Aggregated) []Action {
	if e.Err != nil {
		return m.failRound("aggregating: " + e.Err.Error())
	}
	r := m.r
	r.aggregate = e.Aggregate
	acts := []Action{Observe{Metric: MetricPhaseSeconds, Label: "aggregate", Value: m.now.Sub(m.phaseAt).Seconds()}}
	if !m.cfg.Secure {
		return append(acts, m.combine()...)
	}
	m.setPhase(PhaseSketching)
	m.deadline = m.now.Add(m.cfg.PhaseTimeout)
	task := m.sketchTask()
	var asked []string
	for _, s := range sortedKeys(r.updates) {
		if m.live[s] {
			r.sketchers[s] = true
			asked = append(asked, s)
		}
	}
	acts = append(acts, logf(slog.LevelInfo, "sketches requested", "round", r.n, "asked", asked, "aggregate", short(r.aggregate.Hash)))
	for _, s := range asked {
		acts = append(acts, Send{To: s, Msg: task})
	}
	return append(acts, m.checkSketches()...)
}

func (m *Machine) stepSketch(ev Event) ([]Action, error) {
	r := m.r
	switch e := ev.(type) {
	case Tick:
		if !m.now.Before(m.deadline) {
			return m.requestDecryption(), nil
		}
	case Joined:
		// A contributor back on a new connection is asked again (its
		// sketch is deterministic).
		if _, contributed := r.updates[e.Site]; contributed {
			if _, done := r.sketches[e.Site]; !done {
				r.sketchers[e.Site] = true
				return []Action{Send{To: e.Site, Msg: m.sketchTask()}}, nil
			}
		}
	case Left:
		delete(r.sketchers, e.Site)
		return m.checkSketches(), nil
	case Refused:
		if e.Round == r.n && r.sketchers[e.Site] {
			delete(r.sketchers, e.Site)
			return append([]Action{logf(slog.LevelWarn, "sketch refused; the decryptors will download the contribution", "round", r.n, "client", e.Site, "reason", e.Reason)},
				m.checkSketches()...), nil
		}
	case SketchIn:
		if err := m.acceptSketch(e); err != nil {
			return nil, err
		}
		delete(r.sketchers, e.Sketch.Site)
		return append([]Action{Observe{Metric: MetricSketches, Label: "accepted", Value: 1}}, m.checkSketches()...), nil
	default:
		return nil, m.refuseOutOfPhase(ev)
	}
	return nil, nil
}

func (m *Machine) sketchTask() SketchTask {
	r := m.r
	return SketchTask{Round: r.n, Parent: m.parent.Hash, Contributions: r.contributions(), Aggregate: r.aggregate, Deadline: m.deadline}
}

// acceptSketch checks a sketch against the round; it changes nothing on
// error.
func (m *Machine) acceptSketch(e SketchIn) error {
	r := m.r
	site := e.Sketch.Site
	_, contributed := r.updates[site]
	switch {
	case !contributed:
		return fmt.Errorf("%w: %q did not contribute to round %d", ErrNotAssigned, site, r.n)
	case e.Round != r.n:
		return fmt.Errorf("%w: sketch for round %d, this is round %d", ErrWrongRound, e.Round, r.n)
	case e.Aggregate != r.aggregate.Hash:
		return fmt.Errorf("%w: sketch against aggregate %s, round %d's is %s", ErrWrongObject, short(e.Aggregate), r.n, short(r.aggregate.Hash))
	}
	if _, dup := r.sketches[site]; dup {
		return fmt.Errorf("%w: %q already sent its sketch", ErrDuplicate, site)
	}
	manifest := audit.ManifestDigest(m.cfg.Study, r.n, m.parent.Hash, r.signed())
	if !verify(m.keys.Keys[site], e.Sketch.Message(m.cfg.Study, r.n, r.aggregate.Hash, manifest), e.Sketch.Signature) {
		return fmt.Errorf("%w: sketch of %q", ErrBadSignature, site)
	}
	r.sketches[site] = e.Sketch
	return nil
}

// checkSketches moves on to decryption once no asked contributor is still
// to answer.
func (m *Machine) checkSketches() []Action {
	if len(m.r.sketchers) > 0 {
		return nil
	}
	return m.requestDecryption()
}

// pickHolders is an active set: up to t live key holders, the round's
// contributors first, each group in site order; sorted.
func (m *Machine) pickHolders() []string {
	var out []string
	for _, pass := range [][]string{sortedKeys(m.r.updates), m.cfg.Sites} {
		for _, s := range slices.Sorted(slices.Values(pass)) {
			if m.live[s] && m.keys.holder(s) && len(out) < m.cfg.Threshold && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return out
}

// requestDecryption asks t live key holders, contributors first, for
// their decryption shares, with the sketches collected.
func (m *Machine) requestDecryption() []Action {
	r := m.r
	acts := []Action{Observe{Metric: MetricPhaseSeconds, Label: "sketch", Value: m.now.Sub(m.phaseAt).Seconds()}}
	if missing := len(r.updates) - len(r.sketches); missing > 0 {
		acts = append(acts, Observe{Metric: MetricSketches, Label: "missing", Value: float64(missing)},
			logf(slog.LevelWarn, "contributions without a sketch; the decryptors will download them", "round", r.n, "missing", missing))
	}
	r.active = m.pickHolders()
	if len(r.active) < m.cfg.Threshold {
		return append(acts, m.failRound(fmt.Sprintf("only %d key holders online, decryption needs t=%d", len(r.active), m.cfg.Threshold))...)
	}
	points := make([]uint64, len(r.active))
	for i, s := range r.active {
		points[i] = m.keys.point(s)
	}
	slices.Sort(points)
	m.setPhase(PhaseDecrypting)
	m.deadline = m.now.Add(m.cfg.PhaseTimeout)
	task := DecryptTask{Round: r.n, Parent: m.parent.Hash, Contributions: r.contributions(), Aggregate: r.aggregate, Active: points, Deadline: m.deadline}
	for _, s := range sortedKeys(r.sketches) {
		task.Sketches = append(task.Sketches, r.sketches[s])
	}
	acts = append(acts, logf(slog.LevelInfo, "decryption requested", "round", r.n, "active", r.active, "aggregate", short(r.aggregate.Hash), "sketches", len(r.sketches)))
	for _, s := range r.active {
		acts = append(acts, Send{To: s, Msg: task})
	}
	return acts
}

func (m *Machine) stepDecrypt(ev Event) ([]Action, error) {
	r := m.r
	switch e := ev.(type) {
	case Tick:
		if !m.now.Before(m.deadline) {
			return m.failRound(fmt.Sprintf("decryption deadline passed with %d of the %d shares", len(r.shares), len(r.active))), nil
		}
	case Left:
		if _, got := r.shares[e.Site]; slices.Contains(r.active, e.Site) && !got {
			return m.failRound(fmt.Sprintf("decryptor %q disconnected before giving its share", e.Site)), nil
		}
	case Refused:
		if slices.Contains(r.active, e.Site) && e.Round == r.n {
			return m.failRound(fmt.Sprintf("decryptor %q refused: %s", e.Site, e.Reason)), nil
		}
	case ShareIn:
		if err := m.acceptShare(e); err != nil {
			return nil, err
		}
		acts := []Action{Store{Payload: e.Payload},
			logf(slog.LevelInfo, "decryption share accepted", "round", r.n, "client", e.Site, "have", len(r.shares), "need", len(r.active)),
			Observe{Metric: MetricShares, Label: "accepted", Value: 1}}
		if len(r.shares) == len(r.active) {
			acts = append(acts, Observe{Metric: MetricPhaseSeconds, Label: "decryption_shares", Value: m.now.Sub(m.phaseAt).Seconds()})
			acts = append(acts, m.combine()...)
		}
		return acts, nil
	default:
		return nil, m.refuseOutOfPhase(ev)
	}
	return nil, nil
}

func (m *Machine) acceptShare(e ShareIn) error {
	r := m.r
	switch {
	case !slices.Contains(r.active, e.Site):
		return fmt.Errorf("%w: %q is not in round %d's active set", ErrNotAssigned, e.Site, r.n)
	case e.Round != r.n:
		return fmt.Errorf("%w: decryption share for round %d, this is round %d", ErrWrongRound, e.Round, r.n)
	case e.Aggregate != r.aggregate.Hash:
		return fmt.Errorf("%w: decryption share of aggregate %s, round %d decrypts %s", ErrWrongObject, short(e.Aggregate), r.n, short(r.aggregate.Hash))
	case e.Share.Site != e.Site || sha256.Sum256(e.Payload) != e.Share.ShareHash:
		return fmt.Errorf("%w: decryption share does not name its payload and sender", ErrBadUpdate)
	}
	if _, dup := r.shares[e.Site]; dup {
		return fmt.Errorf("%w: %q already gave its share", ErrDuplicate, e.Site)
	}
	manifest := audit.ManifestDigest(m.cfg.Study, r.n, m.parent.Hash, r.signed())
	if !verify(m.keys.Keys[e.Site], e.Share.Message(m.cfg.Study, r.n, r.aggregate.Hash, manifest), e.Share.Signature) {
		return fmt.Errorf("%w: decryption share of %q", ErrBadSignature, e.Site)
	}
	r.shares[e.Site] = SignedShare{Share: e.Share, Size: uint64(len(e.Payload))}
	return nil
}

func (m *Machine) combine() []Action {
	r := m.r
	m.setPhase(PhaseCombining)
	act := Combine{Round: r.n, Parent: m.parent, OptimizerBefore: m.optimizer, Aggregate: r.aggregate, Weight: r.weight()}
	for _, s := range r.active {
		act.Shares = append(act.Shares, r.shares[s].Share.ShareHash)
	}
	return []Action{act}
}

func (m *Machine) onCombined(e Combined) []Action {
	if e.Err != nil {
		return m.failRound(e.Err.Error())
	}
	r := m.r
	r.output, r.optAfter = e.Output, e.Optimizer
	acts := []Action{Observe{Metric: MetricPhaseSeconds, Label: "combine", Value: m.now.Sub(m.phaseAt).Seconds()}}
	// Who vouches: the decryptors (t) in a secure study; in a plaintext
	// one any K live sites (they need not have contributed).
	if m.cfg.Secure {
		r.signers, r.need = nil, m.cfg.Threshold
		for _, s := range r.active {
			if m.live[s] {
				r.signers = append(r.signers, s)
			}
		}
	} else {
		r.signers, r.need = sortedKeys(m.live), m.cfg.K
	}
	if len(r.signers) < r.need {
		return append(acts, m.failRound(fmt.Sprintf("only %d sites online to countersign, %d needed", len(r.signers), r.need))...)
	}
	m.setPhase(PhaseCountersigning)
	m.deadline = m.now.Add(m.cfg.PhaseTimeout)
	task := CountersignTask{Round: r.n, Parent: m.parent, Contributions: r.contributions(), Aggregate: r.aggregate,
		OptimizerBefore: m.optimizer, OptimizerAfter: r.optAfter, Output: r.output, Deadline: m.deadline}
	for _, s := range r.active {
		task.Shares = append(task.Shares, r.shares[s])
	}
	acts = append(acts, logf(slog.LevelInfo, "countersignatures requested", "round", r.n, "model", short(r.output.Hash), "signers", r.signers))
	for _, s := range r.signers {
		acts = append(acts, Send{To: s, Msg: task})
	}
	return acts
}

func (m *Machine) outcome() audit.Outcome {
	r := m.r
	return audit.Outcome{Study: m.cfg.Study, Round: r.n, Parent: m.parent.Hash, Aggregate: r.aggregate.Hash, Output: r.output.Hash,
		OptimizerBefore: m.optimizer.Hash, OptimizerAfter: r.optAfter.Hash}
}

func (m *Machine) stepCountersign(ev Event) ([]Action, error) {
	r := m.r
	switch e := ev.(type) {
	case Tick:
		if !m.now.Before(m.deadline) {
			if len(r.countered) >= r.need {
				return m.recordRound(), nil
			}
			return m.failRound(fmt.Sprintf("countersigning deadline passed with %d of the %d countersignatures needed", len(r.countered), r.need)), nil
		}
	case Left:
		if _, signed := r.countered[e.Site]; slices.Contains(r.signers, e.Site) && !signed {
			r.declined[e.Site] = true
			return m.checkCountersign(), nil
		}
	case Refused:
		if _, signed := r.countered[e.Site]; slices.Contains(r.signers, e.Site) && e.Round == r.n && !signed {
			r.declined[e.Site] = true
			return m.checkCountersign(), nil
		}
	case CountersignIn:
		if err := m.acceptCountersign(e); err != nil {
			return nil, err
		}
		return append([]Action{logf(slog.LevelInfo, "countersignature accepted", "round", r.n, "client", e.From.Site, "have", len(r.countered), "need", r.need),
			Observe{Metric: MetricCountersignatures, Label: "accepted", Value: 1}}, m.checkCountersign()...), nil
	default:
		return nil, m.refuseOutOfPhase(ev)
	}
	return nil, nil
}

func (m *Machine) acceptCountersign(e CountersignIn) error {
	r := m.r
	site := e.From.Site
	key := e.From.Key
	if m.keys != nil {
		key = m.keys.Keys[site]
	}
	switch {
	case !slices.Contains(r.signers, site):
		return fmt.Errorf("%w: %q was not asked to countersign round %d", ErrNotAssigned, site, r.n)
	case e.Round != r.n:
		return fmt.Errorf("%w: countersignature for round %d, this is round %d", ErrWrongRound, e.Round, r.n)
	case e.Output != r.output.Hash:
		return fmt.Errorf("%w: countersignature of model %s, round %d produced %s", ErrWrongObject, short(e.Output), r.n, short(r.output.Hash))
	}
	if _, dup := r.countered[site]; dup {
		return fmt.Errorf("%w: %q already countersigned", ErrDuplicate, site)
	}
	if !verify(key, audit.CountersignMessage(site, m.outcome()), e.Signature) {
		return fmt.Errorf("%w: countersignature of %q", ErrBadSignature, site)
	}
	r.countered[site] = audit.Countersignature{Site: site, Signature: e.Signature}
	r.csIDs[site] = e.From
	return nil
}

// checkCountersign records the round once every signer answered (with
// enough signatures), and fails it once enough can no longer come.
func (m *Machine) checkCountersign() []Action {
	r := m.r
	if len(r.countered)+len(r.declined) == len(r.signers) && len(r.countered) >= r.need {
		return m.recordRound()
	}
	if possible := len(r.signers) - len(r.declined); possible < r.need {
		return m.failRound(fmt.Sprintf("only %d of the %d countersignatures needed can still come", possible, r.need))
	}
	return nil
}

// report describes the round for its record.
func (m *Machine) report() *RoundReport {
	r := m.r
	rep := &RoundReport{Round: int(r.n), Parent: m.parent.Hash, Model: m.parent.Hash, Contributors: sortedKeys(r.updates),
		ParentTest: map[string]model.Metrics{}, PersonalTest: map[string]model.Metrics{}, Duration: m.now.Sub(r.start)}
	if m.keys != nil {
		rep.HEParams, rep.CollectiveKey = m.keys.HEParams, m.keys.CollectiveKey
	}
	for s := range r.assigned {
		_, ok := r.updates[s]
		if _, out := r.excluded[s]; !ok && !out {
			rep.Dropped = append(rep.Dropped, s)
		}
	}
	if len(r.projections) > 0 {
		rep.Projections = maps.Clone(r.projections)
		rep.Excluded = sortedKeys(r.excluded)
	}
	slices.Sort(rep.Dropped)
	var lossW, w float64
	for _, s := range rep.Contributors {
		u := r.updates[s]
		if u.parentTest != nil {
			rep.ParentTest[s] = *u.parentTest
		}
		if u.personal != nil {
			rep.PersonalTest[s] = *u.personal
		}
		if u.train != nil {
			lossW += u.train.Loss * float64(u.c.Samples)
			w += float64(u.c.Samples)
		}
	}
	if w > 0 {
		rep.TrainLoss = lossW / w
	}
	return rep
}

func (m *Machine) recordRound() []Action {
	r := m.r
	rep := m.report()
	rep.Model, rep.Aggregate = r.output.Hash, r.aggregate.Hash
	rep.Contributions = r.signed()
	for _, s := range sortedKeys(r.updates) {
		if e := r.updates[s].evaluation; e != nil {
			rep.Evaluations = append(rep.Evaluations, *e)
		}
	}
	rep.OptimizerBefore, rep.OptimizerAfter = m.optimizer.Hash, r.optAfter.Hash
	for _, s := range r.active {
		rep.DecryptionShares = append(rep.DecryptionShares, r.shares[s].Share)
	}
	rep.Decryptors = slices.Clone(r.active)
	for _, s := range sortedKeys(r.countered) {
		rep.Countersignatures = append(rep.Countersignatures, r.countered[s])
	}
	if !m.cfg.Secure {
		// The log does not know plaintext signers' certificates: the
		// record carries one per hospital that signed something in it.
		certs := map[string][]byte{}
		for s, u := range r.updates {
			certs[s] = u.id.Cert
		}
		for s, id := range r.csIDs {
			certs[s] = id.Cert
		}
		for _, s := range sortedKeys(certs) {
			rep.Certificates = append(rep.Certificates, certs[s])
		}
	}
	rep.Flags = m.detect()
	m.noteViolations(rep)
	acts := append(m.detectorLog(),
		Action(Observe{Metric: MetricPhaseSeconds, Label: "countersign", Value: m.now.Sub(m.phaseAt).Seconds()}),
		Observe{Metric: MetricRounds, Label: "aggregated", Value: 1},
		Observe{Metric: MetricRoundSeconds, Value: rep.Duration.Seconds()},
		logf(slog.LevelInfo, "round aggregated", "round", r.n, "updates", len(rep.Contributions), "dropped", rep.Dropped,
			"decryptors", rep.Decryptors, "model", short(rep.Model), "train_loss", rep.TrainLoss, "took", rep.Duration),
	)
	for _, f := range rep.Flags {
		acts = append(acts, Observe{Metric: MetricAnomalies, Label: f.Site, Value: 1},
			logf(slog.LevelWarn, "anomaly flagged", "round", r.n, "client", f.Site, "reason", f.Reason))
	}
	return append(acts, m.record(Record{Round: rep}, false)...)
}

// failRound ends the round without a new model; its record says why.
func (m *Machine) failRound(reason string) []Action {
	rep := m.report()
	rep.Failed, rep.Reason = true, reason
	m.noteViolations(rep)
	acts := []Action{
		Observe{Metric: MetricRounds, Label: "failed", Value: 1},
		Observe{Metric: MetricRoundSeconds, Value: rep.Duration.Seconds()},
		logf(slog.LevelError, "round failed", "round", m.r.n, "reason", reason),
	}
	return append(acts, m.record(Record{Round: rep}, false)...)
}
