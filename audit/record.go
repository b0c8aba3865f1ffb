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

// Contribution is one site's signed encrypted update within a round.
type Contribution struct {
	SiteID     string
	UpdateHash Hash
	Signature  []byte
}

// Manifest is one site's data manifest hash and sample count.
type Manifest struct {
	SiteID   string
	DataHash Hash
	Samples  uint64
}

// Param is a named string value (strategy hyperparameters).
type Param struct{ Name, Value string }

// Metric is a named float value.
type Metric struct {
	Name  string
	Value float64
}

// Record is the body of one audit-log entry. Slices are encoded in the
// order given; the submitter fixes that order before signing.
type Record struct {
	Kind              Kind
	StudyID           string
	Round             uint64
	ParentModel       Hash
	OutputModel       Hash // for KindStudyCreated: the initial model
	Contributions     []Contribution
	AggregateHash     Hash
	DecryptionSigners []string
	HEParamsID        string
	CollectiveKeyHash Hash
	Strategy          string
	Hyperparameters   []Param
	BinaryVersion     string
	Manifests         []Manifest
	Metrics           []Metric
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
}

// Errors returned by the decoders.
var (
	ErrMalformed    = errors.New("audit: malformed encoding")
	ErrNonCanonical = errors.New("audit: non-canonical encoding")
	ErrVersion      = errors.New("audit: unsupported encoding version")
)

const (
	recordVersion = 1
	maxString     = 1 << 12
	maxBlob       = 1 << 12
	maxItems      = 1 << 14
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
	e.b = append(e.b, recordVersion, byte(r.Kind))
	e.str(r.StudyID)
	e.u64(r.Round)
	e.hash(r.ParentModel)
	e.hash(r.OutputModel)
	e.u64(uint64(len(r.Contributions)))
	for _, c := range r.Contributions {
		e.str(c.SiteID)
		e.hash(c.UpdateHash)
		e.bytes(c.Signature)
	}
	e.hash(r.AggregateHash)
	e.strs(r.DecryptionSigners)
	e.str(r.HEParamsID)
	e.hash(r.CollectiveKeyHash)
	e.str(r.Strategy)
	e.u64(uint64(len(r.Hyperparameters)))
	for _, p := range r.Hyperparameters {
		e.str(p.Name)
		e.str(p.Value)
	}
	e.str(r.BinaryVersion)
	e.u64(uint64(len(r.Manifests)))
	for _, m := range r.Manifests {
		e.str(m.SiteID)
		e.hash(m.DataHash)
		e.u64(m.Samples)
	}
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
	if head[0] != recordVersion {
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
			SiteID: d.str("contribution.site_id"), UpdateHash: d.hash("contribution.update_hash"),
			Signature: d.bytes("contribution.signature")})
	}
	r.AggregateHash = d.hash("aggregate_hash")
	r.DecryptionSigners = d.strs("decryption_signers")
	r.HEParamsID = d.str("he_params_id")
	r.CollectiveKeyHash = d.hash("collective_key_hash")
	r.Strategy = d.str("strategy")
	n = d.count("hyperparameters", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Hyperparameters = append(r.Hyperparameters, Param{Name: d.str("hyperparameter.name"), Value: d.str("hyperparameter.value")})
	}
	r.BinaryVersion = d.str("binary_version")
	n = d.count("manifests", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Manifests = append(r.Manifests, Manifest{SiteID: d.str("manifest.site_id"),
			DataHash: d.hash("manifest.data_hash"), Samples: d.u64("manifest.samples")})
	}
	n = d.count("metrics", maxItems)
	for i := 0; i < n && d.err == nil; i++ {
		r.Metrics = append(r.Metrics, Metric{Name: d.str("metric.name"), Value: math.Float64frombits(uint64(d.i64("metric.value")))})
	}
	r.ApprovedSites = d.strs("approved_sites")
	mc := d.u64("min_contributors")
	if mc > math.MaxUint32 {
		d.fail("min_contributors", ErrMalformed)
	}
	r.MinContributors = uint32(mc)
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
