package study

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/anomaly"
	"github.com/fedledger/fedledger/internal/model"
)

// Errors an event can be rejected with (Step's error; the driver maps them
// to status codes for the hospital that sent it), and that end a study.
var (
	ErrUnknownClient = errors.New("coordinator: client is not approved for this study")
	ErrNotKeyHolder  = errors.New("coordinator: client is not a key holder of this study")
	ErrWrongRound    = errors.New("coordinator: message is for another round")
	ErrWrongParent   = errors.New("coordinator: update was trained from another parent model")
	ErrDuplicate     = errors.New("coordinator: already received from this client")
	ErrRoundClosed   = errors.New("coordinator: nothing of this kind is open now")
	ErrNotAssigned   = errors.New("coordinator: client was not given this task")
	ErrBadUpdate     = errors.New("coordinator: malformed update")
	ErrWrongObject   = errors.New("coordinator: message is about another aggregate or model")
	ErrBadSignature  = errors.New("coordinator: signature does not verify against the signer's key")
	ErrKeySetup      = errors.New("coordinator: key setup failed")
	ErrResume        = errors.New("coordinator: cannot resume the study")
	ErrStudyOver     = errors.New("coordinator: the study has finished")
	ErrRecord        = errors.New("coordinator: the audit log refused a record")
)

// Phase is where a study is.
type Phase int

// Phases, in the order a study goes through them.
const (
	PhaseCreated Phase = iota
	PhaseWaiting
	PhaseKeySetup
	PhaseRoundOpen
	PhaseBounding
	PhaseAggregating
	PhaseSketching
	PhaseDecrypting
	PhaseCombining
	PhaseCountersigning
	PhaseRecording
	PhaseFinalEval
	PhaseFinished
	PhaseFailed
)

var phaseNames = [...]string{"created", "waiting_for_clients", "key_setup", "round_open", "bounding", "aggregating", "sketching", "decrypting", "combining",
	"countersigning", "recording", "final_evaluation", "finished", "failed"}

func (p Phase) String() string { return phaseNames[p] }

// Status is what StudyAdmin.Status reports.
type Status struct {
	Phase                  Phase
	Round                  uint64
	Rounds                 int
	Connected, Reported    []string
	Completed, Failed      int
	LastTrainLoss          float64
	LastParentTestAccuracy float64
	LatestModel            audit.Hash
	// WaitingFor says why the study is not moving (e.g. the audit log has
	// no quorum), when it is not.
	WaitingFor string
	Failure    string
	// FinalTest and FinalPersonal: the final model, and the personal
	// models made from it, on each site's test split.
	FinalTest, FinalPersonal map[string]model.Metrics
	// LastParentTest and LastPersonalTest: the last committed round's
	// start model, and the sites' personal models, on their test splits.
	LastParentTest, LastPersonalTest map[string]model.Metrics
	// Flags are the anomaly flags of the last committed round, and
	// Excluded the sites its norm check left out.
	Flags    []Flag
	Excluded []string
	// Exclusions are the sites an admin has excluded from the study's
	// rounds (audit log), by site.
	Exclusions []audit.Exclusion
}

// Machine is one study's protocol state. It is not safe for concurrent
// use; the driver owns it.
type Machine struct {
	cfg      Config
	start    Start
	now      time.Time
	phase    Phase
	approved map[string]bool
	live     map[string]bool
	deadline time.Time
	phaseAt  time.Time

	startRound        uint64
	round             uint64 // the round in progress, or the next one
	parent, optimizer Object
	completed, failed int
	reports           []RoundReport
	lastLoss, lastAcc float64

	keys *KeySetup // the study's finished key setup
	ks   *keySetup // a key setup in progress
	r    *round    // the round in progress

	recording  *Record // a record awaiting its commit
	afterKeys  bool    // the record is the key setup's
	retryAt    time.Time
	backoff    time.Duration
	waitingFor string

	asked                []string
	final, finalPersonal map[string]model.Metrics

	// detector flags unusual sites from each completed round's signals
	// (internal/anomaly); its history starts afresh after a restart.
	detector    *anomaly.Detector
	detectorErr error
	// excluded: the sites an admin excluded (on the log), by site;
	// violations: the first round each site's contribution was past the
	// norm bound (an honest hospital's never is).
	excluded   map[string]audit.Exclusion
	violations map[string]uint64

	done    bool
	failure string
}

// New starts the machine at time now from where the study stands. It
// returns the first actions (log lines; nothing to send until sites join).
func New(cfg Config, start Start, now time.Time) (*Machine, []Action, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	if start.Round > uint64(cfg.Rounds) {
		return nil, nil, fmt.Errorf("%w: the log has %d rounds of study %q, which has %d", ErrResume, start.Round, cfg.Study, cfg.Rounds)
	}
	m := &Machine{cfg: cfg, start: start, now: now, approved: map[string]bool{}, live: map[string]bool{},
		startRound: start.Round + 1, round: start.Round + 1, parent: start.Model, optimizer: start.Optimizer,
		completed: start.Completed, failed: start.Failed, final: map[string]model.Metrics{}, finalPersonal: map[string]model.Metrics{},
		detector: newDetector(), excluded: maps.Clone(start.Excluded), violations: maps.Clone(start.NormViolations)}
	if m.excluded == nil {
		m.excluded = map[string]audit.Exclusion{}
	}
	if m.violations == nil {
		m.violations = map[string]uint64{}
	}
	for _, s := range cfg.Sites {
		m.approved[s] = true
	}
	var acts []Action
	if start.Round > 0 {
		acts = append(acts, logf(slog.LevelWarn, "resuming after a restart", "last_committed_round", start.Round, "model", short(start.Model.Hash)))
	}
	if start.Round == uint64(cfg.Rounds) && start.Round > 0 {
		// Every round is on the log: the study is over. A coordinator
		// restarted after the last record must not wait for hospitals that
		// have already been told it finished.
		acts = append(acts, logf(slog.LevelInfo, "every round of the study is on the audit log; nothing left to run", "rounds", start.Round,
			"model", short(start.Model.Hash)))
		return m, append(acts, m.finish()...), nil
	}
	if cfg.ManualStart && !start.Started && start.Round == 0 {
		m.setPhase(PhaseCreated)
		acts = append(acts, logf(slog.LevelInfo, "study created; waiting for an admin to start it (fedledger study start)"))
		return m, acts, nil
	}
	m.beginWaiting()
	return m, acts, nil
}

func (m *Machine) setPhase(p Phase) {
	m.phase, m.phaseAt = p, m.now
}

func (m *Machine) beginWaiting() {
	m.setPhase(PhaseWaiting)
	m.deadline = m.now.Add(m.cfg.StartTimeout)
}

// Phase is the study's current phase.
func (m *Machine) Phase() Phase { return m.phase }

// Done reports whether the study is over.
func (m *Machine) Done() bool { return m.done }

// Status is a snapshot for StudyAdmin.Status.
func (m *Machine) Status() Status {
	s := Status{Phase: m.phase, Round: min(m.round, uint64(m.cfg.Rounds)), Rounds: m.cfg.Rounds, Connected: sortedKeys(m.live), Completed: m.completed,
		Failed: m.failed, LastTrainLoss: m.lastLoss, LastParentTestAccuracy: m.lastAcc, LatestModel: m.parent.Hash,
		WaitingFor: m.waitingFor, Failure: m.failure}
	for i := len(m.reports) - 1; i >= 0; i-- {
		if r := m.reports[i]; !r.Failed {
			s.LastParentTest, s.LastPersonalTest = maps.Clone(r.ParentTest), maps.Clone(r.PersonalTest)
			s.Flags, s.Excluded = slices.Clone(r.Flags), slices.Clone(r.Excluded)
			break
		}
	}
	if m.r != nil {
		s.Reported = sortedKeys(m.r.updates)
	}
	for _, site := range sortedKeys(m.excluded) {
		s.Exclusions = append(s.Exclusions, m.excluded[site])
	}
	if m.phase == PhaseFinished || m.phase == PhaseFinalEval {
		s.FinalTest, s.FinalPersonal = maps.Clone(m.final), maps.Clone(m.finalPersonal)
	}
	return s
}

// Result is the study's outcome so far.
func (m *Machine) Result() *Result {
	st := m.Status()
	return &Result{Study: m.cfg.Study, Model: m.parent, Rounds: slices.Clone(m.reports), FinalTest: st.FinalTest, FinalPersonal: st.FinalPersonal}
}

// Step applies ev, which happened at now. An error rejects ev (a
// hospital's message, an admin's request) and changes nothing in the
// study; the actions returned with it only log and count the rejection,
// and the driver tells the sender.
func (m *Machine) Step(now time.Time, ev Event) ([]Action, error) {
	if m.done {
		return nil, ErrStudyOver
	}
	if now.After(m.now) {
		m.now = now
	}
	var acts []Action
	switch e := ev.(type) {
	case Joined:
		if !m.approved[e.Site] {
			return nil, fmt.Errorf("%w: %q", ErrUnknownClient, e.Site)
		}
		m.live[e.Site] = true
		acts = append(acts, logf(slog.LevelInfo, "client connected", "client", e.Site, "connected", len(m.live)),
			Observe{Metric: MetricConnected, Value: float64(len(m.live))})
	case Left:
		if !m.live[e.Site] {
			return nil, nil
		}
		delete(m.live, e.Site)
		acts = append(acts, logf(slog.LevelWarn, "client disconnected", "client", e.Site, "connected", len(m.live)),
			Observe{Metric: MetricConnected, Value: float64(len(m.live))})
	case ExclusionChanged:
		return m.exclusionChanged(e), nil
	case Refused:
		acts = append(acts, logf(slog.LevelWarn, "client refused a task", "client", e.Site, "round", e.Round, "reason", e.Reason),
			Observe{Metric: MetricRefusals, Value: 1})
	case Tick:
		if m.recording != nil && !m.retryAt.IsZero() && !m.now.Before(m.retryAt) {
			m.retryAt = time.Time{}
			return append(acts, logf(slog.LevelInfo, "retrying the audit log", "round", m.round), *m.recording), nil
		}
	case EvalIn:
		if e.Model == m.parent.Hash {
			m.final[e.Site] = e.Test
			if e.Personal != nil {
				m.finalPersonal[e.Site] = *e.Personal
			}
		}
	}
	var more []Action
	var err error
	switch m.phase {
	case PhaseCreated:
		more, err = m.stepCreated(ev)
	case PhaseWaiting:
		more, err = m.stepWaiting(ev)
	case PhaseKeySetup:
		more, err = m.stepKeySetup(ev)
	case PhaseRoundOpen, PhaseBounding, PhaseAggregating, PhaseSketching, PhaseDecrypting, PhaseCombining, PhaseCountersigning:
		more, err = m.stepRound(ev)
	case PhaseRecording:
		more, err = m.stepRecording(ev)
	case PhaseFinalEval:
		more, err = m.stepFinal(ev)
	}
	if err != nil {
		return rejected(ev, err), err
	}
	return append(acts, more...), nil
}

// rejected logs and counts a refused hospital message: the only actions
// that come with a Step error.
func rejected(ev Event, err error) []Action {
	var what, site string
	var metric Metric
	switch e := ev.(type) {
	case UpdateIn:
		what, site, metric = "update", e.From.Site, MetricUpdates
	case ShareIn:
		what, site, metric = "decryption share", e.Site, MetricShares
	case SketchIn:
		what, site, metric = "sketch", e.Sketch.Site, MetricSketches
	case BoundIn:
		what, site, metric = "projection shares", e.From, MetricProjections
	case CountersignIn:
		what, site, metric = "countersignature", e.From.Site, MetricCountersignatures
	default:
		return nil
	}
	return []Action{logf(slog.LevelWarn, what+" rejected", "client", site, "err", err.Error()), Observe{Metric: metric, Label: "rejected", Value: 1}}
}

// refuseOutOfPhase rejects hospital messages that belong to a phase the
// study is not in.
func (m *Machine) refuseOutOfPhase(ev Event) error {
	switch ev.(type) {
	case UpdateIn:
		return fmt.Errorf("%w: no round is taking updates (%s)", ErrRoundClosed, m.phase)
	case ShareIn:
		return fmt.Errorf("%w: no decryption is open (%s)", ErrRoundClosed, m.phase)
	case SketchIn:
		return fmt.Errorf("%w: no sketches are asked for (%s)", ErrRoundClosed, m.phase)
	case BoundIn:
		return fmt.Errorf("%w: no projections are asked for (%s)", ErrRoundClosed, m.phase)
	case CountersignIn:
		return fmt.Errorf("%w: no countersigning is open (%s)", ErrRoundClosed, m.phase)
	case StartRequested:
		return fmt.Errorf("%w: study %q has already started", ErrRoundClosed, m.cfg.Study)
	}
	return nil
}

func (m *Machine) stepCreated(ev Event) ([]Action, error) {
	if s, ok := ev.(StartRequested); ok {
		m.beginWaiting()
		acts := []Action{logf(slog.LevelInfo, "study started", "by", s.By)}
		if len(m.live) == len(m.approved) {
			acts = append(acts, m.begin()...)
		}
		return acts, nil
	}
	return nil, m.refuseOutOfPhase(ev)
}

// needed is how many sites must be connected to begin: K, and in a secure
// study also t (key setup and every decryption need t key holders).
func (m *Machine) needed() int {
	if m.cfg.Secure {
		return max(m.cfg.K, m.cfg.Threshold)
	}
	return m.cfg.K
}

func (m *Machine) stepWaiting(ev Event) ([]Action, error) {
	if err := m.refuseOutOfPhase(ev); err != nil {
		return nil, err
	}
	switch ev.(type) {
	case Joined:
		if len(m.live) == len(m.approved) {
			return m.begin(), nil
		}
	case Tick:
		if m.now.Before(m.deadline) {
			return nil, nil
		}
		if len(m.live) >= m.needed() {
			return m.begin(), nil
		}
		return m.fail(fmt.Errorf("coordinator: start timeout: %d of the %d clients needed connected", len(m.live), m.needed())), nil
	}
	return nil, nil
}

// begin starts the study proper: key setup (or its record, or nothing when
// the log already has it), then the rounds.
func (m *Machine) begin() []Action {
	acts := []Action{logf(slog.LevelInfo, "study ready", "connected", len(m.live), "rounds", m.cfg.Rounds, "min_clients", m.cfg.K,
		"next_round", m.round)}
	if !m.cfg.Secure {
		return append(acts, m.beginRound()...)
	}
	logged, saved := m.start.LoggedKeySetup, m.start.SavedKeySetup
	switch {
	case logged != nil && saved != nil && logged.CollectiveKey != saved.CollectiveKey:
		return append(acts, m.fail(fmt.Errorf("%w: the audit log's key setup (collective key %s) is not the one this coordinator saved (%s)",
			ErrResume, short(logged.CollectiveKey), short(saved.CollectiveKey)))...)
	case logged != nil && saved != nil:
		m.keys = saved
		acts = append(acts, logf(slog.LevelInfo, "key setup already done; reusing its collective key", "collective_key", short(saved.CollectiveKey)))
		return append(acts, m.beginRound()...)
	case logged != nil:
		return append(acts, m.fail(fmt.Errorf("%w: the audit log has the key setup but this coordinator has lost its public key material", ErrResume))...)
	case m.round > 1:
		return append(acts, m.fail(fmt.Errorf("%w: round %d is committed but the audit log has no key setup", ErrResume, m.round-1))...)
	case saved != nil:
		// Saved, not yet committed: a crash between the two.
		m.keys = saved
		acts = append(acts, logf(slog.LevelWarn, "key setup saved but not on the audit log yet; recording it", "collective_key", short(saved.CollectiveKey)))
		return append(acts, m.record(Record{KeySetup: saved}, true)...)
	}
	return append(acts, m.beginKeySetup()...)
}

// fail ends the study.
func (m *Machine) fail(err error) []Action {
	m.done, m.failure = true, err.Error()
	m.setPhase(PhaseFailed)
	acts := []Action{logf(slog.LevelError, "study failed", "err", err.Error())}
	for _, s := range sortedKeys(m.live) {
		acts = append(acts, Send{To: s, Msg: Finished{Rounds: m.completed, Failure: err.Error()}})
	}
	return append(acts, Done{Result: m.Result(), Err: err})
}

// record asks the driver to append a record and waits for its commit.
func (m *Machine) record(r Record, keys bool) []Action {
	m.recording, m.afterKeys, m.backoff, m.retryAt = &r, keys, 0, time.Time{}
	m.setPhase(PhaseRecording)
	return []Action{r}
}

func (m *Machine) stepRecording(ev Event) ([]Action, error) {
	if err := m.refuseOutOfPhase(ev); err != nil {
		return nil, err
	}
	rec, ok := ev.(Recorded)
	if !ok {
		return nil, nil
	}
	r := *m.recording
	if rec.Err != nil && rec.Retry {
		if m.backoff == 0 {
			m.backoff = m.cfg.RetryMin
		} else {
			m.backoff = min(2*m.backoff, m.cfg.RetryMax)
		}
		m.retryAt = m.now.Add(m.backoff)
		m.waitingFor = "the audit log: " + rec.Err.Error()
		return []Action{logf(slog.LevelWarn, "audit log unavailable; waiting to record", "round", m.round, "retry_in", m.backoff, "err", rec.Err.Error())}, nil
	}
	if rec.Err != nil {
		return m.fail(fmt.Errorf("%w: %w", ErrRecord, rec.Err)), nil
	}
	m.recording, m.waitingFor = nil, ""
	acts := []Action{Observe{Metric: MetricPhaseSeconds, Label: "record", Value: m.now.Sub(m.phaseAt).Seconds()}}
	if m.afterKeys {
		acts = append(acts, logf(slog.LevelInfo, "key setup committed to the audit log", "collective_key", short(m.keys.CollectiveKey)))
		return append(acts, m.beginRound()...), nil
	}
	rep := *r.Round
	m.reports = append(m.reports, rep)
	if rep.Failed {
		m.failed++
	} else {
		m.completed++
		m.parent, m.optimizer = m.r.output, m.r.optAfter
		m.lastLoss, m.lastAcc = rep.TrainLoss, meanAccuracy(rep.ParentTest)
	}
	acts = append(acts, logf(slog.LevelInfo, "round committed to the audit log", "round", rep.Round, "failed", rep.Failed))
	m.r = nil
	if m.round >= uint64(m.cfg.Rounds) {
		return append(acts, m.beginFinal()...), nil
	}
	m.round++
	return append(acts, m.beginRound()...), nil
}

// beginFinal asks every connected site to evaluate the final model.
func (m *Machine) beginFinal() []Action {
	if m.completed == 0 && m.startRound == 1 {
		return m.fail(fmt.Errorf("coordinator: all %d rounds failed", m.cfg.Rounds))
	}
	m.setPhase(PhaseFinalEval)
	m.deadline = m.now.Add(m.cfg.FinalEvalTimeout)
	m.asked = sortedKeys(m.live)
	var acts []Action
	for _, s := range m.asked {
		acts = append(acts, Send{To: s, Msg: EvaluateTask{Round: uint64(m.cfg.Rounds), Model: m.parent}})
	}
	return append(acts, m.finishIfEvaluated()...)
}

func (m *Machine) stepFinal(ev Event) ([]Action, error) {
	if err := m.refuseOutOfPhase(ev); err != nil {
		return nil, err
	}
	switch ev.(type) {
	case EvalIn, Left:
		return m.finishIfEvaluated(), nil
	case Tick:
		if !m.now.Before(m.deadline) {
			return m.finish(), nil
		}
	}
	return nil, nil
}

func (m *Machine) finishIfEvaluated() []Action {
	for _, s := range m.asked {
		if _, ok := m.final[s]; !ok && m.live[s] {
			return nil
		}
	}
	return m.finish()
}

func (m *Machine) finish() []Action {
	m.done = true
	m.setPhase(PhaseFinished)
	acts := []Action{logf(slog.LevelInfo, "study finished", "rounds_completed", m.completed, "rounds_failed", m.failed,
		"model", short(m.parent.Hash), "final_reports", len(m.final))}
	for _, s := range sortedKeys(m.final) {
		t := m.final[s]
		acts = append(acts, logf(slog.LevelInfo, "final model on a site's test split", "client", s, "test_acc", t.Accuracy, "test_auc", t.AUC, "n", t.N))
	}
	for _, s := range sortedKeys(m.live) {
		acts = append(acts, Send{To: s, Msg: Finished{Rounds: m.completed, Model: m.parent.Hash}})
	}
	return append(acts, Done{Result: m.Result()})
}

// logf builds a Log action from alternating keys and values.
func logf(level slog.Level, msg string, kv ...any) Log {
	var attrs []slog.Attr
	for i := 0; i+1 < len(kv); i += 2 {
		attrs = append(attrs, slog.Any(kv[i].(string), kv[i+1]))
	}
	return Log{Level: level, Msg: msg, Attrs: attrs}
}

func short(h audit.Hash) string { return fmt.Sprintf("%x", h[:6]) }

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// meanAccuracy is the sample-weighted mean of per-site accuracies.
func meanAccuracy(ms map[string]model.Metrics) float64 {
	var acc, n float64
	for _, v := range ms {
		acc += v.Accuracy * float64(v.N)
		n += float64(v.N)
	}
	if n == 0 {
		return 0
	}
	return acc / n
}
