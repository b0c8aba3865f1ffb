// Package audittest builds valid audit-log records for tests and
// experiments, with real identities and real signatures: a consortium CA
// with its admin, coordinator and three hospitals (site-a, site-b, site-c,
// client certificates), studies in plaintext or secure mode, a key setup
// the key holders signed, and completed rounds the hospitals vouch for
// (signed contributions, decryption shares over the manifest,
// countersignatures over the outcome, certificates in plaintext mode,
// chained optimizer states). It is the one place such records are built;
// a test that needs a forged record starts from one of these and changes
// one thing.
//
// Builders are deterministic: the same call gives the same bytes (Ed25519
// signatures are deterministic), so a retried append is an idempotent one.
package audittest

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Sites are the fixture's hospitals, in order.
var Sites = []string{"site-a", "site-b", "site-c"}

// HEParams is the HE parameter set of secure fixture studies.
const HEParams = "ckks-n14-q2x60-seeded/v2"

// PKI is a consortium CA with the identities that sign records: the admin
// (study records), the coordinator (everything else) and the hospitals
// (what they vouch for inside records).
type PKI struct {
	CA           *tlsutil.CA
	Coord, Admin *tlsutil.Identity
	// Hospitals holds a client identity for each of Sites.
	Hospitals map[string]*tlsutil.Identity
}

// NewPKI makes a fresh CA valid for a day, with "coord" (coordinator),
// "admin" and the Sites (client) identities.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := tlsutil.NewCA("consortium", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return Must(IssuePKI(ca))
}

// IssuePKI issues the PKI's identities from ca (for callers without a
// testing.TB, such as experiments).
func IssuePKI(ca *tlsutil.CA) (*PKI, error) {
	issue := func(id string, role tlsutil.Role) (*tlsutil.Identity, error) {
		return ca.Issue(id, role, []string{"127.0.0.1"}, 24*time.Hour)
	}
	p := &PKI{CA: ca, Hospitals: map[string]*tlsutil.Identity{}}
	var err error
	if p.Coord, err = issue("coord", tlsutil.RoleCoordinator); err != nil {
		return nil, err
	}
	if p.Admin, err = issue("admin", tlsutil.RoleAdmin); err != nil {
		return nil, err
	}
	for _, s := range Sites {
		if p.Hospitals[s], err = issue(s, tlsutil.RoleClient); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Issue issues an identity or fails the test.
func Issue(t testing.TB, ca *tlsutil.CA, id string, role tlsutil.Role) *tlsutil.Identity {
	t.Helper()
	i, err := ca.Issue(id, role, []string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// SignAs signs msg with site's key. A site the PKI has no identity for
// gets an all-zero signature, which no key verifies.
func (p *PKI) SignAs(site string, msg []byte) []byte {
	id, ok := p.Hospitals[site]
	if !ok {
		return make([]byte, ed25519.SignatureSize)
	}
	return ed25519.Sign(id.Key, msg)
}

// Options shape a fixture study. Zero fields take the defaults.
type Options struct {
	ID     string // "heart"
	Rounds uint32 // 64
	K      uint32 // 2
	// Threshold is t; non-zero makes the study secure (under HEParams).
	Threshold uint32
	// KeyHolders are the sites in the key setup of a secure study, by
	// Shamir point 1, 2, ... (default: all Sites).
	KeyHolders []string
	// Hyperparameters go on the study record (a DP study's budget).
	Hyperparameters []audit.Param
}

// Builder builds valid records of one study. Its methods never touch a
// ledger.
type Builder struct {
	*PKI
	T0       int64
	Study    *audit.Record // the study-created record
	KeySetup *audit.Record // nil in a plaintext study
}

// NewBuilder sets up a study per o, created at t0 and expiring an hour
// later, with its initial model Model(0).
func (p *PKI) NewBuilder(o Options, t0 int64) *Builder {
	if o.ID == "" {
		o.ID = "heart"
	}
	if o.Rounds == 0 {
		o.Rounds = 64
	}
	if o.K == 0 {
		o.K = 2
	}
	b := &Builder{PKI: p, T0: t0}
	b.Study = &audit.Record{Kind: audit.KindStudyCreated, StudyID: o.ID, OutputModel: Model(0),
		ApprovedSites: slices.Clone(Sites), MinContributors: o.K, Rounds: o.Rounds, Strategy: "fedavg",
		ExpiresAtUnixNs: t0 + int64(time.Hour), TimestampUnixNs: t0, SubmitterID: p.Admin.ID, Hyperparameters: slices.Clone(o.Hyperparameters)}
	if o.Threshold > 0 {
		b.Study.HEParamsID, b.Study.Threshold = HEParams, o.Threshold
		holders := o.KeyHolders
		if holders == nil {
			holders = Sites
		}
		b.KeySetup = b.KeySetupOf(holders...)
	}
	return b
}

// Secure reports whether the study is secure.
func (b *Builder) Secure() bool { return b.Study.HEParamsID != "" }

// KeySetupOf is a valid key-setup record with holders at points 1, 2, ...
// in the order given, each having signed it.
func (b *Builder) KeySetupOf(holders ...string) *audit.Record {
	rec := &audit.Record{Kind: audit.KindKeySetupDone, StudyID: b.Study.StudyID, HEParamsID: b.Study.HEParamsID,
		Threshold: b.Study.Threshold, CollectiveKeyHash: digest("collective key", b.Study.StudyID),
		TimestampUnixNs: b.T0 + int64(time.Microsecond), SubmitterID: b.Coord.ID}
	for i, s := range holders {
		rec.KeyHolders = append(rec.KeyHolders, audit.KeyHolder{Site: s, Point: uint64(i + 1)})
	}
	b.Vouch(rec)
	return rec
}

// Output is a recognisable model hash for round r (Output(r) ==
// Model(byte(r)) for r < 256).
func Output(r uint64) audit.Hash {
	h := Model(byte(r))
	binary.BigEndian.PutUint64(h[2:], r>>8)
	return h
}

// OptimizerState is the fixture's server-optimizer state hash after the
// round that output model.
func OptimizerState(model audit.Hash) audit.Hash { return digest("optimizer state", string(model[:])) }

// Round is a completed round r from parent to out, fully vouched for by
// the hospitals: contributions from sites (sorted by site; signed), and
// in a secure study decryption shares and countersignatures from t key
// holders (contributors first), in a plaintext one countersignatures from
// every contributor and their certificates. OptimizerBefore chains to the
// round that output parent (zero when parent is the initial model), so
// rounds applied in order are accepted.
func (b *Builder) Round(r uint64, parent, out audit.Hash, sites ...string) *audit.Record {
	rec := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: b.Study.StudyID, Round: r, ParentModel: parent, OutputModel: out,
		AggregateHash:  digest("aggregate", b.Study.StudyID, fmt.Sprint(r), string(parent[:])),
		OptimizerAfter: OptimizerState(out), Strategy: b.Study.Strategy,
		Metrics:         []audit.Metric{{Name: "train_loss", Value: 1 / float64(r+1)}},
		TimestampUnixNs: b.T0 + int64(r)*int64(time.Millisecond), SubmitterID: b.Coord.ID}
	if parent != b.Study.OutputModel {
		rec.OptimizerBefore = OptimizerState(parent)
	}
	sorted := slices.Clone(sites)
	slices.Sort(sorted)
	for _, s := range sorted {
		rec.Contributions = append(rec.Contributions, audit.Contribution{Site: s, UpdateHash: digest("update", s, fmt.Sprint(r)),
			Samples: 100 + 10*uint64(slices.Index(Sites, s)+1), DataManifest: digest("data manifest", s)})
	}
	var signers []string
	if b.KeySetup != nil {
		rec.HEParamsID, rec.CollectiveKeyHash = b.Study.HEParamsID, b.KeySetup.CollectiveKeyHash
		holders := map[string]bool{}
		for _, h := range b.KeySetup.KeyHolders {
			holders[h.Site] = true
		}
		for _, s := range slices.Compact(slices.Clone(sorted)) {
			if holders[s] {
				signers = append(signers, s)
			}
		}
		for _, h := range b.KeySetup.KeyHolders {
			if !slices.Contains(signers, h.Site) {
				signers = append(signers, h.Site)
			}
		}
		signers = signers[:min(len(signers), int(b.Study.Threshold))]
		slices.Sort(signers)
		for _, s := range signers {
			rec.DecryptionShares = append(rec.DecryptionShares, audit.DecryptionShare{Site: s, ShareHash: digest("share", s, fmt.Sprint(r))})
		}
	} else {
		signers = slices.Compact(slices.Clone(sorted))
	}
	for _, s := range signers {
		rec.Countersignatures = append(rec.Countersignatures, audit.Countersignature{Site: s})
	}
	b.account(rec)
	b.Vouch(rec)
	return rec
}

// account states the ε spent after round rec.Round on a DP study's round.
func (b *Builder) account(rec *audit.Record) {
	dp, err := audit.DPBudgetOf(b.Study)
	if err != nil || dp == nil {
		return
	}
	spent, err := dp.Spent(int(rec.Round))
	if err != nil {
		panic(err)
	}
	rec.Metrics = append(rec.Metrics, audit.Metric{Name: audit.MetricDPEpsilon, Value: spent})
}

// Failed is a failed round r of the study, from parent.
func (b *Builder) Failed(r uint64, parent audit.Hash) *audit.Record {
	rec := &audit.Record{Kind: audit.KindRoundFailed, StudyID: b.Study.StudyID, Round: r, ParentModel: parent,
		Hyperparameters: []audit.Param{{Name: "failure", Value: "fewer than K updates by the deadline"}},
		TimestampUnixNs: b.T0 + int64(r)*int64(time.Millisecond), SubmitterID: b.Coord.ID}
	b.account(rec)
	return rec
}

// Chain is n completed rounds from the initial model, round r outputting
// Output(r), each with contributions from sites.
func (b *Builder) Chain(n int, sites ...string) []*audit.Record {
	var out []*audit.Record
	for r := uint64(1); r <= uint64(n); r++ {
		out = append(out, b.Round(r, Output(r-1), Output(r), sites...))
	}
	return out
}

// Vouch (re)makes every hospital signature in rec from its fields as they
// are now, with each site's own key: key holders sign KeySetupMessage;
// contributors their contribution; decryptors their share over the
// aggregate and the contributions' manifest digest; countersigners the
// Outcome. In a key setup, and a round of a plaintext study, it sets
// Certificates to the signers' certificates (sorted by site); a secure
// study's rounds carry none. A site the PKI has no identity for gets an
// all-zero signature and no certificate. Call it after changing a field
// to get a record whose only fault is that change.
func (b *Builder) Vouch(rec *audit.Record) {
	var signers []string
	switch rec.Kind {
	case audit.KindKeySetupDone:
		msg := audit.KeySetupMessage(rec.StudyID, rec.HEParamsID, rec.Threshold, rec.CollectiveKeyHash, rec.KeyHolders)
		for i := range rec.KeyHolders {
			h := &rec.KeyHolders[i]
			h.Signature = b.SignAs(h.Site, msg)
			signers = append(signers, h.Site)
		}
	case audit.KindRoundCompleted, audit.KindRoundFailed:
		for i := range rec.Contributions {
			c := &rec.Contributions[i]
			c.Signature = b.SignAs(c.Site, c.Message(rec.StudyID, rec.Round, rec.ParentModel))
			signers = append(signers, c.Site)
		}
		manifest := audit.ManifestDigest(rec.StudyID, rec.Round, rec.ParentModel, rec.Contributions)
		for i := range rec.DecryptionShares {
			d := &rec.DecryptionShares[i]
			d.Signature = b.SignAs(d.Site, d.Message(rec.StudyID, rec.Round, rec.AggregateHash, manifest))
			signers = append(signers, d.Site)
		}
		for i := range rec.Countersignatures {
			c := &rec.Countersignatures[i]
			c.Signature = b.SignAs(c.Site, audit.CountersignMessage(c.Site, rec.Outcome()))
			signers = append(signers, c.Site)
		}
		for i := range rec.Evaluations {
			e := &rec.Evaluations[i]
			e.Signature = b.SignAs(e.Site, e.Message(rec.StudyID, rec.Round, rec.ParentModel))
			signers = append(signers, e.Site)
		}
		if b.Secure() || rec.Kind == audit.KindRoundFailed {
			return
		}
	default:
		return
	}
	rec.Certificates = b.Certificates(signers...)
}

// Certificates are the DER certificates of sites (each once, sorted by
// site; sites without an identity are skipped).
func (p *PKI) Certificates(sites ...string) [][]byte {
	sites = slices.Clone(sites)
	slices.Sort(sites)
	var out [][]byte
	for _, s := range slices.Compact(sites) {
		if id, ok := p.Hospitals[s]; ok {
			out = append(out, slices.Clone(id.Cert.Raw))
		}
	}
	return out
}

// Fixture is a ledger holding one study created by the admin (and, for a
// secure study, its key setup), with a Builder for its records.
type Fixture struct {
	*Builder
	L *audit.Ledger
}

// NewFixture is a plaintext study "heart" (sites Sites, K = 2, 64
// rounds) on a fresh ledger.
func NewFixture(t testing.TB) *Fixture { return NewFixtureWith(t, Options{}) }

// NewSecureFixture is a secure study "heart" (K = 2, t = 2, 64 rounds)
// whose key setup, with every site a key holder, is on a fresh ledger.
func NewSecureFixture(t testing.TB) *Fixture { return NewFixtureWith(t, Options{Threshold: 2}) }

// NewFixtureWith creates the study o describes on a fresh ledger.
func NewFixtureWith(t testing.TB, o Options) *Fixture {
	t.Helper()
	p := NewPKI(t)
	f := &Fixture{Builder: p.NewBuilder(o, time.Now().UnixNano()), L: audit.NewLedger(p.CA.Pool())}
	f.MustApply(t, p.Admin, f.Study)
	if f.KeySetup != nil {
		f.MustApply(t, p.Coord, f.KeySetup)
	}
	return f
}

// Leaf is rec signed by id, as the log stores it.
func Leaf(id *tlsutil.Identity, rec *audit.Record) []byte { return Must(audit.Sign(id, rec)).Marshal() }

// MustApply signs rec with id and applies it to the fixture's ledger.
func (f *Fixture) MustApply(t testing.TB, id *tlsutil.Identity, rec *audit.Record) int64 {
	t.Helper()
	idx, err := f.L.Apply(Leaf(id, rec))
	if err != nil {
		t.Fatalf("Apply %s round %d: %v", rec.Kind, rec.Round, err)
	}
	return idx
}

// Model is a recognisable model hash.
func Model(b byte) audit.Hash { return audit.Hash{b, 0xaa} }

// Must returns v or panics on err.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// NoteKeys is a fresh note signer and its verifier named name.
func NoteKeys(t testing.TB, name string) (note.Signer, note.Verifier) {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

// digest is a fixture hash: SHA-256 over the parts, each length-prefixed.
func digest(parts ...string) audit.Hash {
	h := sha256.New()
	for _, p := range parts {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(p))))
		h.Write([]byte(p))
	}
	return audit.Hash(h.Sum(nil))
}
