package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedledger/fedledger/internal/tlsutil"
	"golang.org/x/mod/sumdb/tlog"
)

// Rule violations, testable with errors.Is on the returned *RuleError. The
// error's message names the site or field at fault.
var (
	// ErrWrongRole: the envelope's signer may not submit this kind
	// (study-created and membership-change need an admin, everything else
	// the coordinator).
	ErrWrongRole = errors.New("audit: signer has the wrong role for this record kind")
	// ErrUnknownStudy: no study-created record for the record's study.
	ErrUnknownStudy = errors.New("audit: unknown study")
	// ErrStudyExists: a second study-created record for a study.
	ErrStudyExists = errors.New("audit: study already exists")
	// ErrStudyRules: a study-created record whose rules are unusable
	// (no rounds, no or repeated sites, K or t out of range, a threshold
	// in a plaintext study, no initial model).
	ErrStudyRules = errors.New("audit: invalid study rules")
	// ErrStudyExpired: the record's timestamp is at or past the study's
	// expiry.
	ErrStudyExpired = errors.New("audit: record timestamp is past the study's expiry")
	// ErrSequence: a round that is not the study's last round + 1 (failed
	// rounds count), or a key setup that is not round 0.
	ErrSequence = errors.New("audit: round does not follow the previous round")
	// ErrRoundLimit: a round beyond the number of rounds the study allows.
	ErrRoundLimit = errors.New("audit: round is beyond the study's number of rounds")
	// ErrParentMismatch: a round whose parent is not the study's latest
	// output.
	ErrParentMismatch = errors.New("audit: parent model is not the study's latest output")
	// ErrTooFewContributors: a completed round with fewer than K
	// contributions.
	ErrTooFewContributors = errors.New("audit: fewer contributors than the study minimum")
	// ErrSiteNotApproved: a contributor, key holder, countersigner or
	// certificate holder that is not one of the study's approved sites.
	ErrSiteNotApproved = errors.New("audit: site is not approved for the study")
	// ErrConflict: a different record already holds the study, round and
	// kind (a second key setup included).
	ErrConflict = errors.New("audit: a different record already exists for this study, round and kind")
	// ErrUnexpectedField: the record carries something its kind or the
	// study's mode must not (key holders on a round, certificates on a
	// secure round, decryption shares on a plaintext one, an output on a
	// failed round...).
	ErrUnexpectedField = errors.New("audit: record carries a field its kind or the study's mode must not")
	// ErrMissingField: a field the kind requires is zero (output model,
	// aggregate hash, collective key hash).
	ErrMissingField = errors.New("audit: record lacks a field its kind requires")
	// ErrMalformedEvaluation: a hospital's evaluation has no figures, too
	// many, or one that is unnamed, too long a name, or not finite.
	ErrMalformedEvaluation = errors.New("audit: malformed evaluation")
	// ErrListOrder: contributions, decryption shares or countersignatures
	// not strictly sorted by site, or key holders not strictly sorted by
	// point or repeating a site.
	ErrListOrder = errors.New("audit: list is not in canonical order or repeats an entry")
	// ErrPlaintextStudy: a key setup for a study that has no HE parameters.
	ErrPlaintextStudy = errors.New("audit: the study is plaintext; it has no key setup")
	// ErrNoKeySetup: a completed round of a secure study before its key
	// setup is on the log.
	ErrNoKeySetup = errors.New("audit: the secure study has no key setup on the log")
	// ErrHEParams: HE parameters, threshold or collective key hash that are
	// not the study's (a secure round recorded without them, as a
	// restarted coordinator once did, included), or any of them on a
	// plaintext round.
	ErrHEParams = errors.New("audit: HE parameters or collective key differ from the study's")
	// ErrKeyHolders: a key setup with a zero Shamir point or fewer than
	// max(K, t) key holders.
	ErrKeyHolders = errors.New("audit: key holders do not satisfy the study's rules")
	// ErrNotKeyHolder: a secure round's contributor, decryptor or
	// countersigner that is not a key holder of the study.
	ErrNotKeyHolder = errors.New("audit: hospital signer is not a key holder of the study")
	// ErrHospitalSignature: a hospital's signature (contribution, key
	// setup, decryption share, countersignature) does not verify with the
	// key it is checked against.
	ErrHospitalSignature = errors.New("audit: hospital signature does not verify")
	// ErrHospitalCertificate: a hospital certificate that does not parse,
	// does not chain to the consortium roots at the record's timestamp or
	// is not a client (hospital) certificate.
	ErrHospitalCertificate = errors.New("audit: hospital certificate is not valid")
	// ErrCertificateSet: the record's certificates are not exactly one per
	// distinct hospital signer (one missing, one extra or one repeated).
	ErrCertificateSet = errors.New("audit: certificates are not one per hospital signer")
	// ErrTooFewDecryptors: a secure round with fewer than t decryption
	// shares.
	ErrTooFewDecryptors = errors.New("audit: fewer decryption shares than the study's threshold")
	// ErrTooFewCountersignatures: fewer countersignatures than t (secure
	// study) or K (plaintext study).
	ErrTooFewCountersignatures = errors.New("audit: fewer countersignatures than the study requires")
	// ErrOptimizerChain: a round's optimizer state before is not the state
	// after the study's last completed round (zero before the first).
	ErrOptimizerChain = errors.New("audit: optimizer state does not follow the study's last completed round")
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
	// member: a membership change's site (an admin may exclude several
	// sites from the same round, each once).
	member string
}

func keyOf(rec *Record) recordKey {
	k := recordKey{study: rec.StudyID, round: rec.Round, kind: rec.Kind}
	if rec.Kind == KindMembershipChange {
		k.member = rec.MemberID
	}
	return k
}

// studyState is what the rules know of one study. A state is never
// mutated once stored: check returns a new one and Apply swaps it in.
type studyState struct {
	rules      Record // the study-created record
	lastRound  uint64 // completed or failed
	lastOutput Hash   // the initial model before any completed round
	// lastOptimizer is OptimizerAfter of the last completed round (zero
	// before the first).
	lastOptimizer Hash
	completed     uint32
	failed        uint32
	keys          *keySetup // nil until the key setup (always, in a plaintext study)
	// dp is the study's record-level DP budget (nil: not a DP study).
	dp *DPBudget
	// bound is the study's norm bound on every update (0: none).
	bound float64
	// excluded are the sites an admin excluded from later rounds, by site
	// (cloned on change: states are never mutated once stored).
	excluded map[string]Exclusion
}

// keySetup is a secure study's finished key setup: the collective key and
// the certificate each key holder signed it with. From then on the study's
// hospital signatures are checked against these certificates only, never
// against certificates a later record brings ("identities are bound at key
// setup"). Immutable once stored.
type keySetup struct {
	index         int64
	collectiveKey Hash
	holders       map[string]hospitalCert
	sites         []string // in point order
}

// hospitalCert is a hospital certificate verified against the consortium
// roots, with the window in which its chain is valid (the latest NotBefore
// and the earliest NotAfter along it): signatures do not change with time,
// so the chain verifies at any time in the window and at none outside it,
// and a bound certificate is re-checked at each record's time without
// redoing the chain. (With several roots another chain might be valid
// outside the window; keeping the one found at key setup errs on the side
// of refusing.)
type hospitalCert struct {
	cert      *x509.Certificate
	notBefore time.Time
	notAfter  time.Time
}

func (c hospitalCert) validAt(t time.Time) bool {
	return !t.Before(c.notBefore) && !t.After(c.notAfter)
}

func (s *studyState) secure() bool { return s.rules.HEParamsID != "" }

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
	l.byKey[keyOf(rec)] = idx
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
	if idx, ok := l.byKey[keyOf(rec)]; ok {
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
// (nil if unchanged). It does not mutate l: Apply commits what it returns.
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
		if st != nil {
			return nil, ErrStudyExists
		}
		return checkStudy(rec)
	}
	if st == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownStudy, rec.StudyID)
	}
	if exp := st.rules.ExpiresAtUnixNs; exp != 0 && rec.TimestampUnixNs >= exp {
		return nil, fmt.Errorf("%w: record at %s, study expired at %s", ErrStudyExpired,
			time.Unix(0, rec.TimestampUnixNs).UTC().Format(time.RFC3339), time.Unix(0, exp).UTC().Format(time.RFC3339))
	}
	switch rec.Kind {
	case KindKeySetupDone:
		return l.checkKeySetup(st, rec)
	case KindRoundCompleted, KindRoundFailed:
		return l.checkRound(st, rec)
	}
	return checkMembership(st, rec)
}

// checkStudy validates a study-created record: the rules every later
// record of the study is held to.
func checkStudy(rec *Record) (*studyState, error) {
	n := len(rec.ApprovedSites)
	switch {
	case rec.StudyID == "":
		return nil, fmt.Errorf("%w: empty study id", ErrStudyRules)
	case rec.Round != 0:
		return nil, fmt.Errorf("%w: round is %d, want 0", ErrStudyRules, rec.Round)
	case rec.Rounds < 1:
		return nil, fmt.Errorf("%w: rounds is %d, want at least 1", ErrStudyRules, rec.Rounds)
	case rec.OutputModel == Hash{}:
		return nil, fmt.Errorf("%w: no initial model (output model is zero)", ErrStudyRules)
	case n == 0:
		return nil, fmt.Errorf("%w: no approved sites", ErrStudyRules)
	case rec.MinContributors == 0 || int(rec.MinContributors) > n:
		return nil, fmt.Errorf("%w: minimum contributors K=%d with %d approved sites", ErrStudyRules, rec.MinContributors, n)
	}
	seen := map[string]bool{}
	for _, s := range rec.ApprovedSites {
		if s == "" || seen[s] {
			return nil, fmt.Errorf("%w: approved site %q is empty or listed twice", ErrStudyRules, s)
		}
		seen[s] = true
	}
	if rec.HEParamsID != "" {
		switch {
		case rec.Threshold < 2 || int(rec.Threshold) > n:
			return nil, fmt.Errorf("%w: secure study threshold t=%d, want 2..%d (approved sites)", ErrStudyRules, rec.Threshold, n)
		case rec.MinContributors < 2:
			return nil, fmt.Errorf("%w: secure study with K=%d, want at least 2", ErrStudyRules, rec.MinContributors)
		}
	} else if rec.Threshold != 0 {
		return nil, fmt.Errorf("%w: plaintext study (no HE parameters) with threshold t=%d, want 0", ErrStudyRules, rec.Threshold)
	}
	if err := absent(rec, "study-created", fContributions|fDecryptionShares|fCountersignatures|fKeyHolders|fCertificates|fCollectiveKey|fEvaluations); err != nil {
		return nil, err
	}
	dp, err := DPBudgetOf(rec)
	if err != nil {
		return nil, err
	}
	bound, err := normBound(rec)
	if err != nil {
		return nil, err
	}
	if bound > 0 && rec.HEParamsID == "" {
		return nil, fmt.Errorf("%w: %s in a plaintext study: the bound is checked under encryption", ErrStudyRules, ParamNormBound)
	}
	return &studyState{rules: *rec, lastOutput: rec.OutputModel, dp: dp, bound: bound}, nil
}

// checkKeySetup validates a key-setup-done record: the coordinator
// submits it, and every key holder vouches for the parameters, the
// threshold, the collective key and the list of holders by signing
// KeySetupMessage with the key of the certificate the record carries for
// it. Certificates are matched to key holders by CommonName, in any order.
func (l *Ledger) checkKeySetup(st *studyState, rec *Record) (*studyState, error) {
	rules := &st.rules
	switch {
	case rec.Round != 0:
		return nil, fmt.Errorf("%w: key setup is round 0, got %d", ErrSequence, rec.Round)
	case !st.secure():
		return nil, fmt.Errorf("%w: study %q", ErrPlaintextStudy, rec.StudyID)
	case st.keys != nil:
		return nil, fmt.Errorf("%w: study %q already has a key setup (entry %d)", ErrConflict, rec.StudyID, st.keys.index)
	case rec.HEParamsID != rules.HEParamsID:
		return nil, fmt.Errorf("%w: key setup under %q, study uses %q", ErrHEParams, rec.HEParamsID, rules.HEParamsID)
	case rec.Threshold != rules.Threshold:
		return nil, fmt.Errorf("%w: key setup threshold t=%d, study's t=%d", ErrHEParams, rec.Threshold, rules.Threshold)
	case rec.CollectiveKeyHash == Hash{}:
		return nil, fmt.Errorf("%w: collective key hash is zero", ErrMissingField)
	}
	if err := absent(rec, "key setup", fContributions|fDecryptionShares|fCountersignatures|fEvaluations); err != nil {
		return nil, err
	}
	approved := approvedSet(rules)
	seen := map[string]bool{}
	for i, h := range rec.KeyHolders {
		switch {
		case h.Point == 0:
			return nil, fmt.Errorf("%w: key holder %q has Shamir point 0", ErrKeyHolders, h.Site)
		case i > 0 && h.Point <= rec.KeyHolders[i-1].Point:
			return nil, fmt.Errorf("%w: key holder %q has point %d after point %d (want strictly increasing)", ErrListOrder, h.Site, h.Point, rec.KeyHolders[i-1].Point)
		case !approved[h.Site]:
			return nil, fmt.Errorf("%w: key holder %q", ErrSiteNotApproved, h.Site)
		case seen[h.Site]:
			return nil, fmt.Errorf("%w: key holder %q listed twice", ErrListOrder, h.Site)
		}
		seen[h.Site] = true
	}
	if need := max(rules.MinContributors, rules.Threshold); len(rec.KeyHolders) < int(need) {
		return nil, fmt.Errorf("%w: %d key holders, the study needs max(K=%d, t=%d) = %d", ErrKeyHolders, len(rec.KeyHolders), rules.MinContributors, rules.Threshold, need)
	}
	msg := KeySetupMessage(rec.StudyID, rec.HEParamsID, rec.Threshold, rec.CollectiveKeyHash, rec.KeyHolders)
	var sigs []hospitalSig
	for _, h := range rec.KeyHolders {
		sigs = append(sigs, hospitalSig{site: h.Site, what: "key setup", msg: msg, sig: h.Signature})
	}
	certs, err := l.verifyHospitals(st, rec, sigs)
	if err != nil {
		return nil, err
	}
	next := *st
	// The entry's index if Apply appends it: the log's next one.
	next.keys = &keySetup{index: l.log.Size(), collectiveKey: rec.CollectiveKeyHash, holders: certs}
	for _, h := range rec.KeyHolders {
		next.keys.sites = append(next.keys.sites, h.Site)
	}
	return &next, nil
}

// checkRound validates a round-completed or round-failed record.
func (l *Ledger) checkRound(st *studyState, rec *Record) (*studyState, error) {
	rules := &st.rules
	switch {
	case rec.Round != st.lastRound+1:
		return nil, fmt.Errorf("%w: got round %d, want %d", ErrSequence, rec.Round, st.lastRound+1)
	case rec.Round > uint64(rules.Rounds):
		return nil, fmt.Errorf("%w: round %d of a study of %d rounds", ErrRoundLimit, rec.Round, rules.Rounds)
	case rec.ParentModel != st.lastOutput:
		return nil, fmt.Errorf("%w: parent %x, latest %x", ErrParentMismatch, rec.ParentModel[:8], st.lastOutput[:8])
	}
	if st.dp != nil {
		if err := checkPrivacy(st.dp, rec); err != nil {
			return nil, err
		}
	}
	if rec.Kind == KindRoundCompleted {
		if err := checkExcluded(st, rec); err != nil {
			return nil, err
		}
	}
	next := *st
	next.lastRound = rec.Round
	if rec.Kind == KindRoundFailed {
		// The coordinator's word alone: it moves no model and no optimizer
		// state, so nothing in it needs a hospital's signature. What
		// arrived before the round failed (contributions, decryption
		// shares) may be listed as a record; it is not checked.
		switch {
		case rec.OutputModel != Hash{}:
			return nil, fmt.Errorf("%w: failed round with output model %x", ErrUnexpectedField, rec.OutputModel[:8])
		case rec.OptimizerAfter != Hash{}:
			return nil, fmt.Errorf("%w: failed round with an optimizer state after", ErrUnexpectedField)
		}
		if err := absent(rec, "failed round", fCountersignatures|fKeyHolders|fCertificates|fEvaluations); err != nil {
			return nil, err
		}
		next.failed++
		return &next, nil
	}

	switch {
	case rec.OutputModel == Hash{}:
		return nil, fmt.Errorf("%w: completed round with a zero output model", ErrMissingField)
	case rec.AggregateHash == Hash{}:
		return nil, fmt.Errorf("%w: completed round with a zero aggregate hash", ErrMissingField)
	case rec.OptimizerBefore != st.lastOptimizer:
		return nil, fmt.Errorf("%w: optimizer before %x, state after the last completed round %x", ErrOptimizerChain, rec.OptimizerBefore[:8], st.lastOptimizer[:8])
	}
	if err := absent(rec, "round", fKeyHolders); err != nil {
		return nil, err
	}
	approved := approvedSet(rules)
	if err := sortedBySite("contributions", rec.Contributions, func(c Contribution) string { return c.Site }); err != nil {
		return nil, err
	}
	for _, c := range rec.Contributions {
		if !approved[c.Site] {
			return nil, fmt.Errorf("%w: contributor %q", ErrSiteNotApproved, c.Site)
		}
	}
	if len(rec.Contributions) < int(rules.MinContributors) {
		return nil, fmt.Errorf("%w: %d < K=%d", ErrTooFewContributors, len(rec.Contributions), rules.MinContributors)
	}
	if err := checkEvaluations(rec); err != nil {
		return nil, err
	}
	if st.bound > 0 {
		if err := checkBound(st.bound, rec); err != nil {
			return nil, err
		}
	}
	if err := sortedBySite("countersignatures", rec.Countersignatures, func(c Countersignature) string { return c.Site }); err != nil {
		return nil, err
	}
	if st.secure() {
		if err := checkSecureRound(st, rec); err != nil {
			return nil, err
		}
	} else if err := checkPlaintextRound(st, rec, approved); err != nil {
		return nil, err
	}

	var sigs []hospitalSig
	for _, c := range rec.Contributions {
		sigs = append(sigs, hospitalSig{site: c.Site, what: "contribution", msg: c.Message(rec.StudyID, rec.Round, rec.ParentModel), sig: c.Signature})
	}
	if len(rec.DecryptionShares) > 0 {
		manifest := ManifestDigest(rec.StudyID, rec.Round, rec.ParentModel, rec.Contributions)
		for _, d := range rec.DecryptionShares {
			sigs = append(sigs, hospitalSig{site: d.Site, what: "decryption share", msg: d.Message(rec.StudyID, rec.Round, rec.AggregateHash, manifest), sig: d.Signature})
		}
	}
	for _, e := range rec.Evaluations {
		sigs = append(sigs, hospitalSig{site: e.Site, what: "evaluation", msg: e.Message(rec.StudyID, rec.Round, rec.ParentModel), sig: e.Signature})
	}
	out := rec.Outcome()
	for _, c := range rec.Countersignatures {
		sigs = append(sigs, hospitalSig{site: c.Site, what: "countersignature", msg: CountersignMessage(c.Site, out), sig: c.Signature})
	}
	if _, err := l.verifyHospitals(st, rec, sigs); err != nil {
		return nil, err
	}
	next.lastOutput = rec.OutputModel
	next.lastOptimizer = rec.OptimizerAfter
	next.completed++
	return &next, nil
}

// Bounds of a hospital's evaluation.
const (
	maxEvaluationMetrics = 32
	maxMetricName        = 64
)

// checkEvaluations holds a round's evaluations to their shape: in site
// order, one per contributor at most (a site that did not contribute did
// not train from the parent), a few named, finite figures each. Their
// signatures are checked with the others (verifyHospitals).
func checkEvaluations(rec *Record) error {
	if err := sortedBySite("evaluations", rec.Evaluations, func(e Evaluation) string { return e.Site }); err != nil {
		return err
	}
	contributed := map[string]bool{}
	for _, c := range rec.Contributions {
		contributed[c.Site] = true
	}
	for _, e := range rec.Evaluations {
		if !contributed[e.Site] {
			return fmt.Errorf("%w: an evaluation from %q, who did not contribute to round %d", ErrUnexpectedField, e.Site, rec.Round)
		}
		if err := e.Check(); err != nil {
			return err
		}
	}
	return nil
}

// Check holds one evaluation to its shape: 1 to maxEvaluationMetrics
// figures, each named (at most maxMetricName bytes) and finite. The
// coordinator applies it when it accepts an update, the rules when they
// check a round record.
func (e Evaluation) Check() error {
	if len(e.Metrics) == 0 || len(e.Metrics) > maxEvaluationMetrics {
		return fmt.Errorf("%w: %q's evaluation has %d figures (1 to %d)", ErrMalformedEvaluation, e.Site, len(e.Metrics), maxEvaluationMetrics)
	}
	for _, m := range e.Metrics {
		if m.Name == "" || len(m.Name) > maxMetricName || math.IsNaN(m.Value) || math.IsInf(m.Value, 0) {
			return fmt.Errorf("%w: %q's figure %q = %v", ErrMalformedEvaluation, e.Site, m.Name, m.Value)
		}
	}
	return nil
}

// checkSecureRound holds the structure of a secure study's completed round
// to the key setup: its HE parameters and collective key, t decryption
// shares and t countersignatures. Hospital identities come from the key
// setup (verifyHospitals), so the round carries no certificates.
func checkSecureRound(st *studyState, rec *Record) error {
	rules := &st.rules
	if st.keys == nil {
		return fmt.Errorf("%w: study %q", ErrNoKeySetup, rec.StudyID)
	}
	if rec.HEParamsID != rules.HEParamsID || rec.CollectiveKeyHash != st.keys.collectiveKey {
		return fmt.Errorf("%w: round under %q with collective key %x, study uses %q with key %x",
			ErrHEParams, rec.HEParamsID, rec.CollectiveKeyHash[:8], rules.HEParamsID, st.keys.collectiveKey[:8])
	}
	if err := sortedBySite("decryption shares", rec.DecryptionShares, func(d DecryptionShare) string { return d.Site }); err != nil {
		return err
	}
	if len(rec.DecryptionShares) < int(rules.Threshold) {
		return fmt.Errorf("%w: %d < t=%d", ErrTooFewDecryptors, len(rec.DecryptionShares), rules.Threshold)
	}
	if len(rec.Countersignatures) < int(rules.Threshold) {
		return fmt.Errorf("%w: %d < t=%d", ErrTooFewCountersignatures, len(rec.Countersignatures), rules.Threshold)
	}
	return nil
}

// checkPlaintextRound holds a plaintext study's completed round to its
// mode: no HE parameters, no decryption, K countersignatures from approved
// sites (their certificates are checked with the signatures).
func checkPlaintextRound(st *studyState, rec *Record, approved map[string]bool) error {
	if rec.HEParamsID != "" || rec.CollectiveKeyHash != (Hash{}) {
		return fmt.Errorf("%w: plaintext study's round claims HE parameters %q, collective key %x", ErrHEParams, rec.HEParamsID, rec.CollectiveKeyHash[:8])
	}
	if len(rec.DecryptionShares) > 0 {
		return fmt.Errorf("%w: plaintext study's round carries %d decryption shares", ErrUnexpectedField, len(rec.DecryptionShares))
	}
	for _, c := range rec.Countersignatures {
		if !approved[c.Site] {
			return fmt.Errorf("%w: countersigner %q", ErrSiteNotApproved, c.Site)
		}
	}
	if k := st.rules.MinContributors; len(rec.Countersignatures) < int(k) {
		return fmt.Errorf("%w: %d < K=%d", ErrTooFewCountersignatures, len(rec.Countersignatures), k)
	}
	return nil
}

// hospitalSig is one hospital signature a record carries: whose, over
// which message, and what it is (for the error).
type hospitalSig struct {
	site, what string
	msg, sig   []byte
}

// verifyHospitals checks every hospital signature in rec; it is the one
// path every record kind's hospital signatures go through. Each site's key
// is:
//
//   - in a secure study after its key setup, that of the certificate the
//     site was bound with at key setup (a signer that is not a key holder
//     is refused), which must still be valid at the record's timestamp;
//     the record itself then carries no certificates;
//   - otherwise (the key setup itself, plaintext rounds), that of the
//     record's Certificates: exactly one per distinct signer, matched by
//     CommonName, each chaining to the consortium roots at the record's
//     timestamp, for role client, of an approved site.
//
// Identities are all resolved before any signature is checked. It returns
// the signers' certificates by site.
func (l *Ledger) verifyHospitals(st *studyState, rec *Record, sigs []hospitalSig) (map[string]hospitalCert, error) {
	at := time.Unix(0, rec.TimestampUnixNs)
	certs := map[string]hospitalCert{}
	source := "the record's certificate"
	if st.keys != nil {
		source = "the certificate bound at key setup"
		if len(rec.Certificates) > 0 {
			return nil, fmt.Errorf("%w: %d certificates; the study's signers were bound at key setup", ErrUnexpectedField, len(rec.Certificates))
		}
		for _, s := range sigs {
			if _, done := certs[s.site]; done {
				continue
			}
			c, ok := st.keys.holders[s.site]
			if !ok {
				return nil, fmt.Errorf("%w: %q signs a %s but holds no share of the study's key", ErrNotKeyHolder, s.site, s.what)
			}
			if !c.validAt(at) {
				return nil, fmt.Errorf("%w: %q's certificate bound at key setup is valid from %s to %s, not at the record's time %s", ErrHospitalCertificate,
					s.site, c.notBefore.UTC().Format(time.RFC3339), c.notAfter.UTC().Format(time.RFC3339), at.UTC().Format(time.RFC3339Nano))
			}
			certs[s.site] = c
		}
	} else {
		approved := approvedSet(&st.rules)
		for i, der := range rec.Certificates {
			id, c, err := l.hospitalCert(der, at, fmt.Sprintf("certificate %d", i))
			if err != nil {
				return nil, err
			}
			if !approved[id] {
				return nil, fmt.Errorf("%w: certificate %d is for %q", ErrSiteNotApproved, i, id)
			}
			if _, dup := certs[id]; dup {
				return nil, fmt.Errorf("%w: two certificates for %q", ErrCertificateSet, id)
			}
			certs[id] = c
		}
		signers := map[string]bool{}
		for _, s := range sigs {
			if _, ok := certs[s.site]; !ok {
				return nil, fmt.Errorf("%w: no certificate for %q, who signs a %s", ErrCertificateSet, s.site, s.what)
			}
			signers[s.site] = true
		}
		for site := range certs {
			if !signers[site] {
				return nil, fmt.Errorf("%w: certificate for %q, who signs nothing in the record", ErrCertificateSet, site)
			}
		}
	}
	for _, s := range sigs {
		key, _ := certs[s.site].cert.PublicKey.(ed25519.PublicKey)
		if !ed25519.Verify(key, s.msg, s.sig) {
			return nil, fmt.Errorf("%w: %s of %q, checked with %s", ErrHospitalSignature, s.what, s.site, source)
		}
	}
	return certs, nil
}

// hospitalCert checks a hospital certificate (named what, for the error)
// at time at: it chains to the consortium roots for client
// authentication, carries a fedledger identity, and that identity is a
// client (a hospital). It returns the hospital's id and the certificate.
func (l *Ledger) hospitalCert(der []byte, at time.Time, what string) (string, hospitalCert, error) {
	fail := func(format string, args ...any) (string, hospitalCert, error) {
		return "", hospitalCert{}, fmt.Errorf("%w: %s %s", ErrHospitalCertificate, what, fmt.Sprintf(format, args...))
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return fail("does not parse: %v", err)
	}
	chains, err := c.Verify(x509.VerifyOptions{Roots: l.roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return fail("for %q does not chain to the consortium roots at the record's time %s: %v", c.Subject.CommonName, at.UTC().Format(time.RFC3339Nano), err)
	}
	p, err := tlsutil.PeerFromTLS(tls.ConnectionState{VerifiedChains: chains})
	if err != nil {
		return fail("carries no valid identity: %v", err)
	}
	if p.Role != tlsutil.RoleClient {
		return fail("is for %q with role %s, want %s", p.ID, p.Role, tlsutil.RoleClient)
	}
	h := hospitalCert{cert: c, notBefore: c.NotBefore, notAfter: c.NotAfter}
	for _, ca := range chains[0][1:] {
		if ca.NotBefore.After(h.notBefore) {
			h.notBefore = ca.NotBefore
		}
		if ca.NotAfter.Before(h.notAfter) {
			h.notAfter = ca.NotAfter
		}
	}
	return p.ID, h, nil
}

func approvedSet(rules *Record) map[string]bool {
	m := make(map[string]bool, len(rules.ApprovedSites))
	for _, s := range rules.ApprovedSites {
		m[s] = true
	}
	return m
}

// sortedBySite checks that items are strictly increasing by site: sorted
// and no site twice.
func sortedBySite[T any](list string, items []T, site func(T) string) error {
	for i := 1; i < len(items); i++ {
		if a, b := site(items[i-1]), site(items[i]); a >= b {
			if a == b {
				return fmt.Errorf("%w: %s list %q twice", ErrListOrder, list, a)
			}
			return fmt.Errorf("%w: %s list %q before %q (want sorted by site)", ErrListOrder, list, a, b)
		}
	}
	return nil
}

// Fields a record kind may have to leave empty (absent).
const (
	fContributions = 1 << iota
	fDecryptionShares
	fCountersignatures
	fKeyHolders
	fCertificates
	fCollectiveKey
	fEvaluations
)

// absent checks that none of the fields in mask are set on rec.
func absent(rec *Record, what string, mask int) error {
	for _, f := range []struct {
		bit  int
		name string
		set  bool
	}{
		{fContributions, "contributions", len(rec.Contributions) > 0},
		{fDecryptionShares, "decryption shares", len(rec.DecryptionShares) > 0},
		{fCountersignatures, "countersignatures", len(rec.Countersignatures) > 0},
		{fKeyHolders, "key holders", len(rec.KeyHolders) > 0},
		{fCertificates, "certificates", len(rec.Certificates) > 0},
		{fCollectiveKey, "a collective key hash", rec.CollectiveKeyHash != Hash{}},
		{fEvaluations, "evaluations", len(rec.Evaluations) > 0},
	} {
		if mask&f.bit != 0 && f.set {
			return fmt.Errorf("%w: %s with %s", ErrUnexpectedField, what, f.name)
		}
	}
	return nil
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
	idx, ok := l.byKey[recordKey{study: study, kind: KindStudyCreated}]
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
	MinContributors uint32 // K
	// Rounds is how many rounds the study may run (failed ones count).
	Rounds          uint32
	ExpiresAtUnixNs int64
	// Secure is true for a study under HEParams with threshold t; false
	// for a plaintext study.
	Secure    bool
	HEParams  string
	Threshold uint32
	LastRound uint64
	// LatestModel is the latest completed round's output (the initial
	// model before the first), OptimizerState the server optimizer's
	// state hash after it.
	LatestModel    Hash
	OptimizerState Hash
	Completed      uint32
	Failed         uint32
	KeySetupDone   bool
	// KeyHolders (by Shamir point) and CollectiveKeyHash are the key
	// setup's, once it is done.
	KeyHolders        []string
	CollectiveKeyHash Hash
}

// Studies summarises every study, sorted by id.
func (l *Ledger) Studies() []StudySummary {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]StudySummary, 0, len(l.studies))
	for id, st := range l.studies {
		s := StudySummary{ID: id, CreatedBy: st.rules.SubmitterID, ApprovedSites: slices.Clone(st.rules.ApprovedSites),
			MinContributors: st.rules.MinContributors, Rounds: st.rules.Rounds, ExpiresAtUnixNs: st.rules.ExpiresAtUnixNs,
			Secure: st.secure(), HEParams: st.rules.HEParamsID, Threshold: st.rules.Threshold,
			LastRound: st.lastRound, LatestModel: st.lastOutput, OptimizerState: st.lastOptimizer,
			Completed: st.completed, Failed: st.failed, KeySetupDone: st.keys != nil}
		if st.keys != nil {
			s.KeyHolders, s.CollectiveKeyHash = slices.Clone(st.keys.sites), st.keys.collectiveKey
		}
		out = append(out, s)
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
