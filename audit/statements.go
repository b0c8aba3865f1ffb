package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"math"
	"slices"
	"strings"
)

// Signed statements.
//
// Every Ed25519 signature in fedledger is over one of the messages built
// in this file, or over a C2SP note (checkpoints, checkpoint.go; the note
// format has its own framing). One key per participant, the key of its
// certificate, signs all of them and also its TLS 1.3 handshakes; what
// makes that safe is that each message starts with its own domain string,
// so no signature is valid as another kind of message, and binds the study
// and, where there is one, the round, the parent model and the signer's
// site, so no signature can be replayed into another study, round or
// position. Variable-length fields are length-prefixed. A reviewer checks
// the domain separation claim here and only here.
//
// Who signs what:
//
//	record envelope      the submitter of an audit record (admin, coordinator)
//	contribution         a hospital, for each update it sends
//	key share            a hospital at key setup: its CKG share and X25519 key
//	key setup            a hospital, once the collective key is computed
//	aggregate sketch     a hospital, for its contribution's sketch against
//	                     a committed aggregate
//	decryption share     a hospital, for the decryption share it gives
//	countersignature     a hospital that recomputed a round's new model
//	evaluation           a hospital, for its evaluation of a round's start
//	                     model (and of its personal model) on its test split
//
// Not signatures, but domain-separated the same way: the CRS seed
// ("fedledger crs v1", coordinator.StudyConfig.CRS) and the HKDF info of
// Shamir share boxes ("fedledger shamir share v1", aggregation/secure).
const (
	domainRecord       = "fedledger audit record v2\x00"
	domainContribution = "fedledger contribution v3\x00"
	domainKeyShare     = "fedledger key share v2\x00"
	domainKeySetup     = "fedledger key setup v1\x00"
	domainDecryption   = "fedledger decryption share v2\x00"
	domainCountersign  = "fedledger countersignature v1\x00"
	domainManifest     = "fedledger decryption manifest v1\x00"
	domainSketch       = "fedledger aggregate sketch v1\x00"
	domainEvaluation   = "fedledger evaluation v1\x00"
)

// statement builds a message: a domain string, then fields, variable-length
// ones prefixed by their length.
type statement struct{ b []byte }

func newStatement(domain string) *statement { return &statement{b: []byte(domain)} }
func (s *statement) str(v string) *statement {
	s.b = binary.BigEndian.AppendUint32(s.b, uint32(len(v)))
	s.b = append(s.b, v...)
	return s
}
func (s *statement) bytes(v []byte) *statement { return s.str(string(v)) }
func (s *statement) u64(v uint64) *statement {
	s.b = binary.BigEndian.AppendUint64(s.b, v)
	return s
}
func (s *statement) hash(h Hash) *statement {
	s.b = append(s.b, h[:]...)
	return s
}

// RecordMessage is what the submitter of an audit record signs: the
// record's canonical encoding.
func RecordMessage(body []byte) []byte { return newStatement(domainRecord).bytes(body).b }

// Contribution is one hospital's update as everyone refers to it: the
// update header on the wire, the decryption manifest a decryptor checks,
// the round record on the audit log and the verify report. The hospital
// signs Message with its certificate key when it sends the update.
type Contribution struct {
	// Site is the contributing hospital (its certificate's CommonName).
	Site string
	// UpdateHash is the SHA-256 of the update payload exactly as sent
	// (ciphertexts in secure mode).
	UpdateHash Hash
	// Samples is the number of training samples behind the update, its
	// weight in the average (encrypted too, in secure mode, so a lie is
	// caught when the sum is decrypted).
	Samples uint64
	// DataManifest is the SHA-256 of the hospital's data manifest: the
	// digest of its data file and of how it was preprocessed.
	DataManifest Hash
	Signature    []byte
}

// Message is what the hospital signs: the update trained from parent in
// this study and round, by this site.
func (c Contribution) Message(study string, round uint64, parent Hash) []byte {
	return newStatement(domainContribution).str(study).u64(round).hash(parent).str(c.Site).
		hash(c.UpdateHash).u64(c.Samples).hash(c.DataManifest).b
}

// SortContributions orders contributions by site, the order in which they
// are summed, listed and digested.
func SortContributions(cs []Contribution) {
	slices.SortFunc(cs, func(a, b Contribution) int { return strings.Compare(a.Site, b.Site) })
}

// ManifestDigest is the digest of the contributions an aggregate is the sum
// of (in the order given, which is by site): what a decryptor signs, so
// its share vouches for exactly that list. Signatures are not part of it;
// each contribution's own signature covers its fields.
func ManifestDigest(study string, round uint64, parent Hash, cs []Contribution) Hash {
	s := newStatement(domainManifest).str(study).u64(round).hash(parent).u64(uint64(len(cs)))
	for _, c := range cs {
		s.str(c.Site).hash(c.UpdateHash).u64(c.Samples).hash(c.DataManifest)
	}
	return sha256.Sum256(s.b)
}

// KeyShareMessage is what a hospital signs at key setup: its Shamir point,
// its X25519 key (to which the others seal its Shamir shares) and the
// SHA-256 of its public-key share envelope, binding both keys to its
// certificate.
func KeyShareMessage(study, site string, point uint64, x25519Public []byte, pkShare Hash) []byte {
	return newStatement(domainKeyShare).str(study).str(site).u64(point).bytes(x25519Public).hash(pkShare).b
}

// KeyHolder is one participant of a finished key setup: its Shamir point
// and its signature over KeySetupMessage.
type KeyHolder struct {
	Site      string
	Point     uint64
	Signature []byte
}

// KeySetupMessage is what every key holder signs once it has computed the
// collective public key itself: the parameter set, the threshold, the
// key's hash and every holder with its point (in the order given, which is
// by point). With every holder's signature on the log, the key setup
// record is the hospitals' word, not the coordinator's.
func KeySetupMessage(study, heParams string, threshold uint32, collectiveKey Hash, holders []KeyHolder) []byte {
	s := newStatement(domainKeySetup).str(study).str(heParams).u64(uint64(threshold)).hash(collectiveKey).u64(uint64(len(holders)))
	for _, h := range holders {
		s.str(h.Site).u64(h.Point)
	}
	return s.b
}

// DecryptionShare is one hospital's decryption share of a round's
// aggregate, as the round record lists it.
type DecryptionShare struct {
	Site string
	// ShareHash is the SHA-256 of the decryption-share payload.
	ShareHash Hash
	Signature []byte
}

// Message is what the decryptor signs: its share of aggregate, which it
// checked is the sum of exactly the contributions whose ManifestDigest is
// manifest.
func (d DecryptionShare) Message(study string, round uint64, aggregate, manifest Hash) []byte {
	return newStatement(domainDecryption).str(study).u64(round).str(d.Site).hash(aggregate).hash(manifest).hash(d.ShareHash).b
}

// Sketch is a contributor's sketch of its own contribution against a
// committed aggregate (aggregation/secure: a few random linear
// combinations of the contribution's coefficients, the coefficients drawn
// from the aggregate's hash and the manifest), which lets a decryptor
// check the aggregate without downloading the contribution.
type Sketch struct {
	Site      string
	Values    []byte
	Signature []byte
}

// Message is what the contributor signs: Values is the sketch of the
// contribution it listed in the manifest whose ManifestDigest is manifest,
// against the aggregate whose hash is aggregate.
func (s Sketch) Message(study string, round uint64, aggregate, manifest Hash) []byte {
	return newStatement(domainSketch).str(study).u64(round).str(s.Site).hash(aggregate).hash(manifest).bytes(s.Values).b
}

// Evaluation is a hospital's signed evaluation, on its own test split, of
// a round's start model (the round's parent) and of its personal model:
// named figures such as "global_test_accuracy" or "personal_test_auc".
type Evaluation struct {
	Site      string
	Metrics   []Metric
	Signature []byte
}

// Message is what the hospital signs: these figures, in this order, for
// the parent model of this round.
func (e Evaluation) Message(study string, round uint64, parent Hash) []byte {
	s := newStatement(domainEvaluation).str(study).u64(round).hash(parent).str(e.Site).u64(uint64(len(e.Metrics)))
	for _, m := range e.Metrics {
		s.str(m.Name).u64(math.Float64bits(m.Value))
	}
	return s.b
}

// Outcome is what a round produced, as a countersigner vouches for it:
// from Parent and the server optimiser's state OptimizerBefore, the
// decrypted Aggregate gives the model Output and the state OptimizerAfter.
// A zero OptimizerBefore is the optimiser's initial state.
type Outcome struct {
	Study           string
	Round           uint64
	Parent          Hash
	Aggregate       Hash
	Output          Hash
	OptimizerBefore Hash
	OptimizerAfter  Hash
}

// Outcome is the Outcome a round record states: what its countersigners
// signed, if the record is genuine.
func (r *Record) Outcome() Outcome {
	return Outcome{Study: r.StudyID, Round: r.Round, Parent: r.ParentModel, Aggregate: r.AggregateHash,
		Output: r.OutputModel, OptimizerBefore: r.OptimizerBefore, OptimizerAfter: r.OptimizerAfter}
}

// Countersignature is a hospital's signature over a round's Outcome.
type Countersignature struct {
	Site      string
	Signature []byte
}

// CountersignMessage is what a countersigning site signs.
func CountersignMessage(site string, o Outcome) []byte {
	return newStatement(domainCountersign).str(o.Study).u64(o.Round).str(site).hash(o.Parent).hash(o.Aggregate).
		hash(o.Output).hash(o.OptimizerBefore).hash(o.OptimizerAfter).b
}
