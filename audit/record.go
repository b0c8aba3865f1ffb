package audit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Kind is what a record attests.
type Kind uint8

// Record kinds.
const (
	KindStudyCreated Kind = iota + 1
	KindKeySetupDone
	KindRoundCompleted
	KindRoundFailed
	KindMembershipChange
)

func (k Kind) String() string {
	switch k {
	case KindStudyCreated:
		return "study-created"
	case KindKeySetupDone:
		return "key-setup-done"
	case KindRoundCompleted:
		return "round-completed"
	case KindRoundFailed:
		return "round-failed"
	case KindMembershipChange:
		return "membership-change"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Valid reports whether k is a known kind.
func (k Kind) Valid() bool { return k >= KindStudyCreated && k <= KindMembershipChange }

// Hash is a SHA-256 digest.
type Hash [32]byte

// Param is a named string value (strategy hyperparameters).
type Param struct{ Name, Value string }

// Metric is a named float value.
type Metric struct {
	Name  string
	Value float64
}

// Record is the body of one audit-log entry. Slices are encoded in the
// order given; the submitter fixes that order before signing (contributions
// and decryption shares by site, key holders by point).
//
// What each kind carries and who vouches for it (the rules are in rules.go):
//
//   - study-created, signed by an admin: the study's rules (ApprovedSites,
//     MinContributors K, Rounds, Threshold t and HEParamsID for a secure
//     study, ExpiresAtUnixNs), the initial model (OutputModel), strategy
//     and hyperparameters.
//   - key-setup-done, submitted by the coordinator, vouched for by every key
//     holder: KeyHolders with their signatures over KeySetupMessage,
//     Certificates (one per holder), HEParamsID, Threshold and
//     CollectiveKeyHash.
//   - round-completed, submitted by the coordinator, vouched for by the
//     hospitals: Contributions (each signed), DecryptionShares over
//     AggregateHash (secure mode), Countersignatures over the round's
//     Outcome (ParentModel, AggregateHash, OutputModel, OptimizerBefore,
//     OptimizerAfter), and in plaintext studies the signers' Certificates.
//   - round-failed, submitted by the coordinator: the round number and its
//     unchanged parent; it moves no model forward.
type Record struct {
	Kind              Kind
	StudyID           string
	Round             uint64
	ParentModel       Hash
	OutputModel       Hash // for KindStudyCreated: the initial model
	Contributions     []Contribution
	AggregateHash     Hash
	DecryptionShares  []DecryptionShare
	Countersignatures []Countersignature
	KeyHolders        []KeyHolder
	// Certificates are the DER certificates of hospitals whose signatures
	// the record carries and the log does not already hold (key setup
	// binds a secure study's key holders' certificates).
	Certificates      [][]byte
	HEParamsID        string
	CollectiveKeyHash Hash
	// Threshold is t, the key holders needed to decrypt (secure studies).
	Threshold uint32
	// Rounds is the number of rounds the study may run (study-created).
	Rounds uint32
	// OptimizerBefore and OptimizerAfter are the SHA-256 of the server
	// optimiser's state before and after the round (zero: initial state).
	OptimizerBefore Hash
	OptimizerAfter  Hash
	Strategy        string
	Hyperparameters []Param
	BinaryVersion   string
	Metrics         []Metric
	// Study rules, meaningful for KindStudyCreated.
	ApprovedSites   []string
	MinContributors uint32
	ExpiresAtUnixNs int64
	// Membership change, meaningful for KindMembershipChange.
	MemberID, MemberRole string
	MemberRemoved        bool
	// Set by the submitter; never compared with a wall clock in the log.
	TimestampUnixNs int64
	SubmitterID     string
	// Evaluations (round-completed): the contributors' signed evaluations
	// of the round's parent model and of their personal models.
	Evaluations []Evaluation
}

// Errors returned by the decoders.
var (
	ErrMalformed    = errors.New("audit: malformed encoding")
	ErrNonCanonical = errors.New("audit: non-canonical encoding")
	ErrVersion      = errors.New("audit: unsupported encoding version")
)

const (
	// recordVersion is the encoding's version; a record with hospitals'
	// evaluations is encoded as version 3 (recordVersionEvaluations), one
	// without exactly as before.
	recordVersion            = 2
	recordVersionEvaluations = 3
	maxString                = 1 << 12
	maxBlob                  = 1 << 12
	maxItems                 = 1 << 14
)

type encoder struct{ b []byte }

func (e *encoder) u64(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) i64(v int64)    { e.b = binary.BigEndian.AppendUint64(e.b, uint64(v)) }
func (e *encoder) bytes(v []byte) { e.u64(uint64(len(v))); e.b = append(e.b, v...) }
func (e *encoder) str(v string)   { e.bytes([]byte(v)) }
func (e *encoder) hash(h Hash)    { e.b = append(e.b, h[:]...) }
func (e *encoder) boolean(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *encoder) strs(v []string) {
	e.u64(uint64(len(v)))
	for _, s := range v {
		e.str(s)
	}
}

// Marshal returns the canonical encoding of r: a version byte then every
// field in declaration order, lengths as minimal uvarints, integers and
// float bits as big-endian 8-byte words. Equal records encode equally.
func (r *Record) Marshal() []byte {
	e := &encoder{b: make([]byte, 0, 256)}
	version := byte(recordVersion)
	if len(r.Evaluations) > 0 {
		version = recordVersionEvaluations
	}
	e.b = append(e.b, version, byte(r.Kind))
	e.str(r.StudyID)
	e.u64(r.Round)
	e.hash(r.ParentModel)
	e.hash(r.OutputModel)
	e.u64(uint64(len(r.Contributions)))
	for _, c := range r.Contributions {
		e.str(c.Site)
		e.hash(c.UpdateHash)
		e.u64(c.Samples)
		e.hash(c.DataManifest)
		e.bytes(c.Signature)
	}
	e.hash(r.AggregateHash)
	e.u64(uint64(len(r.DecryptionShares)))
	for _, d := range r.DecryptionShares {
		e.str(d.Site)
		e.hash(d.ShareHash)
		e.bytes(d.Signature)
	}
	e.u64(uint64(len(r.Countersignatures)))
	for _, c := range r.Countersignatures {
		e.str(c.Site)
		e.bytes(c.Signature)
	}
	e.u64(uint64(len(r.KeyHolders)))
	for _, k := range r.KeyHolders {
		e.str(k.Site)
		e.u64(k.Point)
		e.bytes(k.Signature)
	}
	e.u64(uint64(len(r.Certificates)))
	for _, c := range r.Certificates {
		e.bytes(c)
	}
	e.str(r.HEParamsID)
	e.hash(r.CollectiveKeyHash)
	e.u64(uint64(r.Threshold))
	e.u64(uint64(r.Rounds))
	e.hash(r.OptimizerBefore)
	e.hash(r.OptimizerAfter)
	e.str(r.Strategy)
	e.u64(uint64(len(r.Hyperparameters)))
	for _, p := range r.Hyperparameters {
		e.str(p.Name)
		e.str(p.Value)
	}
	e.str(r.BinaryVersion)
	e.u64(uint64(len(r.Metrics)))
	for _, m := range r.Metrics {
		e.str(m.Name)
		e.i64(int64(math.Float64bits(m.Value)))
	}
	e.strs(r.ApprovedSites)
	e.u64(uint64(r.MinContributors))
	e.i64(r.ExpiresAtUnixNs)
	e.str(r.MemberID)
	e.str(r.MemberRole)
	e.boolean(r.MemberRemoved)
	e.i64(r.TimestampUnixNs)
	e.str(r.SubmitterID)
	if version == recordVersionEvaluations {
		e.u64(uint64(len(r.Evaluations)))
		for _, v := range r.Evaluations {
			e.str(v.Site)
			e.u64(uint64(len(v.Metrics)))
			for _, m := range v.Metrics {
				e.str(m.Name)
				e.i64(int64(math.Float64bits(m.Value)))
			}
			e.bytes(v.Signature)
		}
	}
	return e.b
}

// DecodeError says which field of an encoding could not be decoded.
type DecodeError struct {
	Field  string
	Offset int
	Err    error
}

func (e *DecodeError) Error() string {
	return fmt.Sprintf("audit: decoding %s at offset %d: %v", e.Field, e.Offset, e.Err)
}

func (e *DecodeError) Unwrap() error { return e.Err }

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) fail(field string, err error) {
	if d.err == nil {
		d.err = &DecodeError{Field: field, Offset: d.off, Err: err}
	}
}

func (d *decoder) u64(field string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		d.fail(field, ErrMalformed)
		return 0
	}
	d.off += n
	return v
}

func (d *decoder) u32(field string) uint32 {
	v := d.u64(field)
	if v > math.MaxUint32 {
		d.fail(field, fmt.Errorf("%d exceeds 32 bits: %w", v, ErrMalformed))
		return 0
	}
	return uint32(v)
}

func (d *decoder) take(field string, n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b)-d.off < n {
		d.fail(field, fmt.Errorf("truncated: %w", ErrMalformed))
		return nil
	}
	v := d.b[d.off : d.off+n]
	d.off += n
	return v
}

func (d *decoder) count(field string, max int) int {
	v := d.u64(field)
	if v > uint64(max) {
		d.fail(field, fmt.Errorf("length %d exceeds %d: %w", v, max, ErrMalformed))
		return 0
	}
	return int(v)
}

func (d *decoder) bytes(field string) []byte {
	n := d.count(field, maxBlob)
	return bytes.Clone(d.take(field, n))
}

func (d *decoder) str(field string) string { return string(d.take(field, d.count(field, maxString))) }

func (d *decoder) hash(field string) (h Hash) {
	copy(h[:], d.take(field, 32))
	return h
}

func (d *decoder) i64(field string) int64 {
	b := d.take(field, 8)
	if b == nil {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

func (d *decoder) strs(field string) []string {
	n := d.count(field, maxItems)
	if n == 0 {
		return nil
	}
	out := make([]string, 0, min(n, 64))
	for i := 0; i < n && d.err == nil; i++ {
		out = append(out, d.str(field))
	}
	return out
}

// UnmarshalRecord strictly decodes a canonical record encoding. It rejects
// unknown versions and kinds, truncation, oversize lengths, trailing bytes
// and any encoding that Marshal would not have produced.
func UnmarshalRecord(b []byte) (*Record, error) {
	d := &decoder{b: b}
	head := d.take("version", 2)
	if d.err != nil {
		return nil, d.err
	}
	if head[0] != recordVersion && head[0] != recordVersionEvaluations {
		return nil, &DecodeError{Field: "version", Err: fmt.Errorf("version %d: %w", head[0], ErrVersion)}
	}
	r := &Record{Kind: Kind(head[1])}
	if !r.Kind.Valid() {
		return nil, &DecodeError{Field: "kind", Offset: 1, Err: fmt.Errorf("unknown kind %d: %w", head[1], ErrMalformed)}
	}
	r.StudyID = d.str("study_id")
	r.Round = d.u64("round")
	r.ParentModel = d.hash("parent_model")
	r.OutputModel = d.hash("output_model")
	n := d.count("contributions", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Contributions = append(r.Contributions, Contribution{
			Site: d.str("contribution.site"), UpdateHash: d.hash("contribution.update_hash"), Samples: d.u64("contribution.samples"),
			DataManifest: d.hash("contribution.data_manifest"), Signature: d.bytes("contribution.signature")})
	}
	r.AggregateHash = d.hash("aggregate_hash")
	n = d.count("decryption_shares", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.DecryptionShares = append(r.DecryptionShares, DecryptionShare{
			Site: d.str("decryption_share.site"), ShareHash: d.hash("decryption_share.share_hash"), Signature: d.bytes("decryption_share.signature")})
	}
	n = d.count("countersignatures", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Countersignatures = append(r.Countersignatures, Countersignature{Site: d.str("countersignature.site"), Signature: d.bytes("countersignature.signature")})
	}
	n = d.count("key_holders", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.KeyHolders = append(r.KeyHolders, KeyHolder{Site: d.str("key_holder.site"), Point: d.u64("key_holder.point"), Signature: d.bytes("key_holder.signature")})
	}
	n = d.count("certificates", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Certificates = append(r.Certificates, d.bytes("certificate"))
	}
	r.HEParamsID = d.str("he_params_id")
	r.CollectiveKeyHash = d.hash("collective_key_hash")
	r.Threshold = d.u32("threshold")
	r.Rounds = d.u32("rounds")
	r.OptimizerBefore = d.hash("optimizer_before")
	r.OptimizerAfter = d.hash("optimizer_after")
	r.Strategy = d.str("strategy")
	n = d.count("hyperparameters", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Hyperparameters = append(r.Hyperparameters, Param{Name: d.str("hyperparameter.name"), Value: d.str("hyperparameter.value")})
	}
	r.BinaryVersion = d.str("binary_version")
	n = d.count("metrics", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Metrics = append(r.Metrics, Metric{Name: d.str("metric.name"), Value: math.Float64frombits(uint64(d.i64("metric.value")))})
	}
	r.ApprovedSites = d.strs("approved_sites")
	r.MinContributors = d.u32("min_contributors")
	r.ExpiresAtUnixNs = d.i64("expires_at")
	r.MemberID = d.str("member_id")
	r.MemberRole = d.str("member_role")
	if b := d.take("member_removed", 1); b != nil {
		if b[0] > 1 {
			d.fail("member_removed", ErrMalformed)
		}
		r.MemberRemoved = b[0] == 1
	}
	r.TimestampUnixNs = d.i64("timestamp")
	r.SubmitterID = d.str("submitter_id")
	if head[0] == recordVersionEvaluations {
		n = d.count("evaluations", maxItems)
		for i := 0; i < n && d.err == nil; i++ {
			v := Evaluation{Site: d.str("evaluation.site")}
			k := d.count("evaluation.metrics", maxItems)
			for j := 0; j < k && d.err == nil; j++ {
				v.Metrics = append(v.Metrics, Metric{Name: d.str("evaluation.metric.name"), Value: math.Float64frombits(uint64(d.i64("evaluation.metric.value")))})
			}
			v.Signature = d.bytes("evaluation.signature")
			r.Evaluations = append(r.Evaluations, v)
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(b) {
		return nil, &DecodeError{Field: "trailer", Offset: d.off, Err: fmt.Errorf("%d trailing bytes: %w", len(b)-d.off, ErrMalformed)}
	}
	if !bytes.Equal(r.Marshal(), b) {
		return nil, &DecodeError{Field: "record", Err: ErrNonCanonical}
	}
	return r, nil
}
