package audit

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/fedledger/fedledger/internal/tlsutil"
	"golang.org/x/mod/sumdb/tlog"
)

// Rule violations, testable with errors.Is on the returned *RuleError.
var (
	ErrWrongRole          = errors.New("audit: signer has the wrong role for this record kind")
	ErrUnknownStudy       = errors.New("audit: unknown study")
	ErrStudyExists        = errors.New("audit: study already exists")
	ErrStudyRules         = errors.New("audit: invalid study rules")
	ErrStudyExpired       = errors.New("audit: record timestamp is past the study's expiry")
	ErrSequence           = errors.New("audit: round does not follow the previous round")
	ErrParentMismatch     = errors.New("audit: parent model is not the study's latest output")
	ErrTooFewContributors = errors.New("audit: fewer contributors than the study minimum")
	ErrSiteNotApproved    = errors.New("audit: contributor is not an approved site")
	ErrConflict           = errors.New("audit: a different record already exists for this study, round and kind")
)

// RuleError is a rejected record: which study, round and kind, and why.
type RuleError struct {
	Study string
	Round uint64
	Kind  Kind
	Err   error
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("audit: record %s study %q round %d rejected: %v", e.Kind, e.Study, e.Round, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

type recordKey struct {
	study string
	round uint64
	kind  Kind
}

type studyState struct {
	rules      Record // the study-created record
	lastRound  uint64
	lastOutput Hash
	completed  uint32
	failed     uint32
	keySetup   bool
}

// Ledger is the deterministic state machine behind the audit log: the
// Merkle log plus the indexes the rules need. Apply validates a leaf using
// only the leaf and the current state (certificate validity is checked at
// the record's own timestamp, never the wall clock), so every replica that
// applies the same leaves in the same order reaches the same state and
// root. It is safe for concurrent use; Apply calls are serialised.
type Ledger struct {
	mu      sync.Mutex
	roots   *x509.CertPool
	log     *MerkleLog
	studies map[string]*studyState
	byKey   map[recordKey]int64
}

// NewLedger returns an empty ledger trusting signers issued by roots.
func NewLedger(roots *x509.CertPool) *Ledger {
	return &Ledger{roots: roots, log: NewMerkleLog(), studies: map[string]*studyState{}, byKey: map[recordKey]int64{}}
}

// Log is the ledger's Merkle log (read-only use).
func (l *Ledger) Log() *MerkleLog { return l.log }

// Apply validates leaf (an encoded Envelope) and appends it, returning its
// index. An identical record already in the log returns its existing index
// and appends nothing; any rejection leaves the state untouched.
func (l *Ledger) Apply(leaf []byte) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	rec, next, idx, err := l.validate(leaf)
	if err != nil || idx >= 0 {
		return idx, err
	}
	if idx, err = l.log.Append(leaf); err != nil {
		return 0, err
	}
	l.byKey[recordKey{rec.StudyID, rec.Round, rec.Kind}] = idx
	if next != nil {
		l.studies[rec.StudyID] = next
	}
	return idx, nil
}

// Check reports whether Apply would accept leaf now, without changing
// anything: nil for a record Apply would append or has already appended
// (an idempotent retry), else the error Apply would return. A leader calls
// it before proposing, so a rejected record never enters the replicated
// log.
func (l *Ledger) Check(leaf []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _, _, err := l.validate(leaf)
	return err
}

// validate decodes and checks leaf against the current state (the caller
// holds l.mu). It returns the record and the study's new state, and the
// existing index (>= 0) when an identical record is already in the log, or
// -1 when leaf is new.
func (l *Ledger) validate(leaf []byte) (*Record, *studyState, int64, error) {
	env, err := UnmarshalEnvelope(leaf)
	if err != nil {
		return nil, nil, 0, err
	}
	rec, signer, err := env.Verify(l.roots)
	if err != nil {
		return nil, nil, 0, err
	}
	reject := func(err error) (*Record, *studyState, int64, error) {
		return nil, nil, 0, &RuleError{Study: rec.StudyID, Round: rec.Round, Kind: rec.Kind, Err: err}
	}
	if idx, ok := l.byKey[recordKey{rec.StudyID, rec.Round, rec.Kind}]; ok {
		prev, err := l.log.Leaf(idx)
		if err != nil {
			return nil, nil, 0, err
		}
		if pe, err := UnmarshalEnvelope(prev); err == nil && bytes.Equal(pe.Body, env.Body) {
			return rec, nil, idx, nil
		}
		return reject(fmt.Errorf("existing entry %d: %w", idx, ErrConflict))
	}
	next, err := l.check(rec, signer)
	if err != nil {
		return reject(err)
	}
	return rec, next, -1, nil
}

// check validates rec against the state and returns the study's new state
// (nil if unchanged). It does not mutate l.
func (l *Ledger) check(rec *Record, signer tlsutil.Peer) (*studyState, error) {
	need := tlsutil.RoleCoordinator
	if rec.Kind == KindStudyCreated || rec.Kind == KindMembershipChange {
		need = tlsutil.RoleAdmin
	}
	if signer.Role != need {
		return nil, fmt.Errorf("%w: %q is %s, %s needs %s", ErrWrongRole, signer.ID, signer.Role, rec.Kind, need)
	}
	st := l.studies[rec.StudyID]
	if rec.Kind == KindStudyCreated {
		switch {
		case st != nil:
			return nil, ErrStudyExists
		case rec.StudyID == "":
			return nil, fmt.Errorf("%w: empty study id", ErrStudyRules)
		case rec.Round != 0:
			return nil, fmt.Errorf("%w: round is %d, want 0", ErrStudyRules, rec.Round)
		case len(rec.ApprovedSites) == 0:
			return nil, fmt.Errorf("%w: no approved sites", ErrStudyRules)
		case rec.MinContributors == 0 || int(rec.MinContributors) > len(rec.ApprovedSites):
			return nil, fmt.Errorf("%w: minimum contributors %d with %d approved sites", ErrStudyRules, rec.MinContributors, len(rec.ApprovedSites))
		}
		return &studyState{rules: *rec, lastOutput: rec.OutputModel}, nil
	}
	if st == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownStudy, rec.StudyID)
	}
	if exp := st.rules.ExpiresAtUnixNs; exp != 0 && rec.TimestampUnixNs >= exp {
		return nil, ErrStudyExpired
	}
	if rec.Kind == KindKeySetupDone {
		next := *st
		next.keySetup = true
		return &next, nil
	}
	if rec.Kind != KindRoundCompleted && rec.Kind != KindRoundFailed {
		return nil, nil
	}
	if rec.Round != st.lastRound+1 {
		return nil, fmt.Errorf("%w: got round %d, want %d", ErrSequence, rec.Round, st.lastRound+1)
	}
	if rec.ParentModel != st.lastOutput {
		return nil, fmt.Errorf("%w: parent %x, latest %x", ErrParentMismatch, rec.ParentModel[:8], st.lastOutput[:8])
	}
	next := *st
	next.lastRound = rec.Round
	if rec.Kind == KindRoundFailed {
		next.failed++
		return &next, nil
	}
	approved := map[string]bool{}
	for _, s := range st.rules.ApprovedSites {
		approved[s] = true
	}
	seen := map[string]bool{}
	for _, c := range rec.Contributions {
		if !approved[c.Site] {
			return nil, fmt.Errorf("%w: %q", ErrSiteNotApproved, c.Site)
		}
		if seen[c.Site] {
			return nil, fmt.Errorf("%w: %q contributes twice", ErrStudyRules, c.Site)
		}
		seen[c.Site] = true
	}
	if len(seen) < int(st.rules.MinContributors) {
		return nil, fmt.Errorf("%w: %d < %d", ErrTooFewContributors, len(seen), st.rules.MinContributors)
	}
	next.lastOutput = rec.OutputModel
	next.completed++
	return &next, nil
}

// Root returns the current tree size and root hash.
func (l *Ledger) Root() (int64, tlog.Hash, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.log.Size()
	h, err := l.log.Root(n)
	return n, h, err
}

// LatestOutput returns the study's latest committed output model (the
// initial model before any completed round) and its round.
func (l *Ledger) LatestOutput(study string) (Hash, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.studies[study]
	if st == nil {
		return Hash{}, 0, fmt.Errorf("%w: %q", ErrUnknownStudy, study)
	}
	return st.lastOutput, st.lastRound, nil
}

// StudyRecord returns the study's study-created entry and its index.
func (l *Ledger) StudyRecord(study string) ([]byte, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	idx, ok := l.byKey[recordKey{study, 0, KindStudyCreated}]
	if !ok {
		return nil, 0, fmt.Errorf("%w: %q", ErrUnknownStudy, study)
	}
	leaf, err := l.log.Leaf(idx)
	return leaf, idx, err
}

// StudySummary is one study as the log knows it.
type StudySummary struct {
	ID              string
	CreatedBy       string
	ApprovedSites   []string
	MinContributors uint32
	ExpiresAtUnixNs int64
	LastRound       uint64
	LatestModel     Hash
	Completed       uint32
	Failed          uint32
	KeySetupDone    bool
}

// Studies summarises every study, sorted by id.
func (l *Ledger) Studies() []StudySummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]StudySummary, 0, len(l.studies))
	for id, st := range l.studies {
		out = append(out, StudySummary{ID: id, CreatedBy: st.rules.SubmitterID, ApprovedSites: st.rules.ApprovedSites,
			MinContributors: st.rules.MinContributors, ExpiresAtUnixNs: st.rules.ExpiresAtUnixNs, LastRound: st.lastRound,
			LatestModel: st.lastOutput, Completed: st.completed, Failed: st.failed, KeySetupDone: st.keySetup})
	}
	slices.SortFunc(out, func(a, b StudySummary) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Leaves returns the log's leaves in order (shared, immutable slices; the
// list itself is a copy), consistent with the ledger's state at the call.
func (l *Ledger) Leaves() [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.log.leavesCopy()
}
