package audit_test

import (
	"crypto/rand"
	"errors"
	"maps"
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

var model = audittest.Model

// clone deep-copies a record (through its canonical encoding).
func clone(r *audit.Record) *audit.Record { return audittest.Must(audit.UnmarshalRecord(r.Marshal())) }

// with is a copy of r changed by mod, hospital signatures left as they
// were.
func with(r *audit.Record, mod func(*audit.Record)) *audit.Record {
	c := clone(r)
	mod(c)
	return c
}

// vouched is a copy of r changed by mod, then every hospital signature and
// certificate remade, so the change is the record's only fault.
func vouched(b *audittest.Builder, r *audit.Record, mod func(*audit.Record)) *audit.Record {
	c := with(r, mod)
	b.Vouch(c)
	return c
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func randomHash() (h audit.Hash) {
	rand.Read(h[:])
	return h
}

// ruleCase is a leaf that must be refused with want.
type ruleCase struct {
	name string
	leaf []byte
	want error
}

// signed is rec signed by id.
func signed(name string, id *tlsutil.Identity, rec *audit.Record, want error) ruleCase {
	return ruleCase{name, audittest.Leaf(id, rec), want}
}

// ledgerState is everything a rejected record must leave as it was.
type ledgerState struct {
	size    int64
	root    [32]byte
	studies []audit.StudySummary
}

func stateOf(l *audit.Ledger) ledgerState {
	n, root, _ := l.Root()
	return ledgerState{n, root, l.Studies()}
}

// expectRejected applies every case to l: Check and Apply must both refuse
// it with the case's error, wrapped in a *RuleError for a rule, and the
// ledger (size, root, every study's state) must not change.
func expectRejected(t *testing.T, l *audit.Ledger, cases []ruleCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := stateOf(l)
			checkErr := l.Check(c.leaf)
			_, err := l.Apply(c.leaf)
			if !errors.Is(err, c.want) {
				t.Fatalf("Apply: err = %v, want %v", err, c.want)
			}
			if !errors.Is(checkErr, c.want) || checkErr.Error() != err.Error() {
				t.Fatalf("Check: err = %v, Apply said %v", checkErr, err)
			}
			var re *audit.RuleError
			if isRule(c.want) && !errors.As(err, &re) {
				t.Fatalf("err = %v is not a *RuleError", err)
			}
			if after := stateOf(l); !reflect.DeepEqual(before, after) {
				t.Fatalf("rejected record changed the ledger:\nbefore %+v\nafter  %+v", before, after)
			}
			t.Logf("%v", err)
		})
	}
}

func isRule(err error) bool {
	switch err {
	case audit.ErrBadSignature, audit.ErrUntrustedCert, audit.ErrSignerMismatch, audit.ErrMalformed:
		return false
	}
	return true
}

func TestLedgerAcceptsSequenceAndIsIdempotent(t *testing.T) {
	for _, mode := range []string{"plaintext", "secure"} {
		t.Run(mode, func(t *testing.T) {
			f := audittest.NewFixture(t)
			if mode == "secure" {
				f = audittest.NewSecureFixture(t)
			}
			base := f.L.Log().Size()
			r1 := f.Round(1, model(0), model(1), "site-a", "site-b")
			if err := f.L.Check(audittest.Leaf(f.Coord, r1)); err != nil {
				t.Fatalf("Check of a valid round: %v", err)
			}
			i1 := f.MustApply(t, f.Coord, r1)
			if again := f.MustApply(t, f.Coord, r1); again != i1 {
				t.Fatalf("re-append returned %d, want %d", again, i1)
			}
			if err := f.L.Check(audittest.Leaf(f.Coord, r1)); err != nil {
				t.Fatalf("Check of an already appended round: %v", err)
			}
			if n := f.L.Log().Size(); n != base+1 {
				t.Fatalf("log size %d after idempotent retry, want %d", n, base+1)
			}
			// A failed round may list what arrived; it moves nothing.
			fail := f.Failed(2, model(1))
			fail.Contributions = slices.Clone(r1.Contributions)
			f.MustApply(t, f.Coord, fail)
			f.MustApply(t, f.Coord, f.Round(3, model(1), model(3), "site-a", "site-b", "site-c"))
			out, round, err := f.L.LatestOutput("heart")
			if err != nil || out != model(3) || round != 3 {
				t.Fatalf("LatestOutput = %x, %d, %v", out[:2], round, err)
			}
			s := f.L.Studies()[0]
			if s.Completed != 2 || s.Failed != 1 || s.LastRound != 3 || s.OptimizerState != audittest.OptimizerState(model(3)) ||
				s.Rounds != 64 || s.Secure != (mode == "secure") {
				t.Fatalf("summary %+v", s)
			}

			// A second ledger fed the same leaves reaches the same root.
			replica := audit.NewLedger(f.CA.Pool())
			for i := int64(0); i < f.L.Log().Size(); i++ {
				if _, err := replica.Apply(audittest.Must(f.L.Log().Leaf(i))); err != nil {
					t.Fatalf("replica apply %d: %v", i, err)
				}
			}
			if a, b := stateOf(f.L), stateOf(replica); !reflect.DeepEqual(a, b) {
				t.Fatalf("replica state %+v != %+v", b, a)
			}
		})
	}
}

func TestStudySummary(t *testing.T) {
	f := audittest.NewSecureFixture(t)
	s := f.L.Studies()
	want := audit.StudySummary{ID: "heart", CreatedBy: "admin", ApprovedSites: audittest.Sites, MinContributors: 2, Rounds: 64,
		ExpiresAtUnixNs: f.Study.ExpiresAtUnixNs, Secure: true, HEParams: audittest.HEParams, Threshold: 2, LatestModel: model(0),
		KeySetupDone: true, KeyHolders: audittest.Sites, CollectiveKeyHash: f.KeySetup.CollectiveKeyHash}
	if len(s) != 1 || !reflect.DeepEqual(s[0], want) {
		t.Fatalf("Studies() = %+v\nwant %+v", s, want)
	}
}

func TestStudyCreatedRules(t *testing.T) {
	p := audittest.NewPKI(t)
	t0 := time.Now().UnixNano()
	plain := p.NewBuilder(audittest.Options{ID: "plain"}, t0).Study
	secure := p.NewBuilder(audittest.Options{ID: "secure", Threshold: 2}, t0).Study
	l := audit.NewLedger(p.CA.Pool())
	if _, err := l.Apply(audittest.Leaf(p.Admin, plain)); err != nil {
		t.Fatal(err)
	}
	n := 0
	study := func(base *audit.Record, mod func(*audit.Record)) *audit.Record {
		n++
		return with(base, func(r *audit.Record) { r.StudyID = "s" + string(rune('a'+n)); mod(r) })
	}
	cases := []ruleCase{
		signed("coordinator creates a study", p.Coord, study(plain, func(r *audit.Record) { r.SubmitterID = "coord" }), audit.ErrWrongRole),
		signed("same id, other rules", p.Admin, with(plain, func(r *audit.Record) { r.MinContributors = 3 }), audit.ErrConflict),
		signed("empty id", p.Admin, with(plain, func(r *audit.Record) { r.StudyID = "" }), audit.ErrStudyRules),
		signed("no rounds", p.Admin, study(plain, func(r *audit.Record) { r.Rounds = 0 }), audit.ErrStudyRules),
		signed("round 1", p.Admin, study(plain, func(r *audit.Record) { r.Round = 1 }), audit.ErrStudyRules),
		signed("no initial model", p.Admin, study(plain, func(r *audit.Record) { r.OutputModel = audit.Hash{} }), audit.ErrStudyRules),
		signed("no sites", p.Admin, study(plain, func(r *audit.Record) { r.ApprovedSites = nil; r.MinContributors = 0 }), audit.ErrStudyRules),
		signed("site twice", p.Admin, study(plain, func(r *audit.Record) { r.ApprovedSites = []string{"site-a", "site-b", "site-a"} }), audit.ErrStudyRules),
		signed("K zero", p.Admin, study(plain, func(r *audit.Record) { r.MinContributors = 0 }), audit.ErrStudyRules),
		signed("K above sites", p.Admin, study(plain, func(r *audit.Record) { r.MinContributors = 4 }), audit.ErrStudyRules),
		signed("plaintext with a threshold", p.Admin, study(plain, func(r *audit.Record) { r.Threshold = 2 }), audit.ErrStudyRules),
		signed("secure t=1", p.Admin, study(secure, func(r *audit.Record) { r.Threshold = 1 }), audit.ErrStudyRules),
		signed("secure t=0", p.Admin, study(secure, func(r *audit.Record) { r.Threshold = 0 }), audit.ErrStudyRules),
		signed("secure t above sites", p.Admin, study(secure, func(r *audit.Record) { r.Threshold = 4 }), audit.ErrStudyRules),
		signed("secure K=1", p.Admin, study(secure, func(r *audit.Record) { r.MinContributors = 1 }), audit.ErrStudyRules),
		signed("with key holders", p.Admin, study(secure, func(r *audit.Record) { r.KeyHolders = []audit.KeyHolder{{Site: "site-a", Point: 1}} }), audit.ErrUnexpectedField),
		signed("with contributions", p.Admin, study(plain, func(r *audit.Record) { r.Contributions = []audit.Contribution{{Site: "site-a"}} }), audit.ErrUnexpectedField),
		signed("with decryption shares", p.Admin, study(secure, func(r *audit.Record) { r.DecryptionShares = []audit.DecryptionShare{{Site: "site-a"}} }), audit.ErrUnexpectedField),
		signed("with countersignatures", p.Admin, study(plain, func(r *audit.Record) { r.Countersignatures = []audit.Countersignature{{Site: "site-a"}} }), audit.ErrUnexpectedField),
		signed("with certificates", p.Admin, study(plain, func(r *audit.Record) { r.Certificates = p.Certificates("site-a") }), audit.ErrUnexpectedField),
		signed("with a collective key", p.Admin, study(secure, func(r *audit.Record) { r.CollectiveKeyHash = randomHash() }), audit.ErrUnexpectedField),
	}
	expectRejected(t, l, cases)
	if _, err := l.Apply(audittest.Leaf(p.Admin, secure)); err != nil {
		t.Fatalf("valid secure study: %v", err)
	}
	if idx, err := l.Apply(audittest.Leaf(p.Admin, plain)); err != nil || idx != 0 {
		t.Fatalf("identical study record again: %d, %v, want index 0", idx, err)
	}
}

func TestKeySetupRules(t *testing.T) {
	p := audittest.NewPKI(t)
	t0 := time.Now().UnixNano()
	b := p.NewBuilder(audittest.Options{Threshold: 2, KeyHolders: []string{"site-a", "site-b"}}, t0)
	plain := p.NewBuilder(audittest.Options{ID: "plain"}, t0)
	l := audit.NewLedger(p.CA.Pool())
	for _, r := range []*audit.Record{b.Study, plain.Study} {
		if _, err := l.Apply(audittest.Leaf(p.Admin, r)); err != nil {
			t.Fatal(err)
		}
	}
	good := b.KeySetup
	other := audittest.NewPKI(t) // another consortium's site-a
	expired := audittest.Must(p.CA.Issue("site-a", tlsutil.RoleClient, nil, -time.Minute))
	wrongRole := audittest.Must(p.CA.Issue("site-a", tlsutil.RoleCoordinator, nil, time.Hour))
	withIdentity := func(id *tlsutil.Identity) *audit.Record { return vouchedAs(b, good, "site-a", id) }
	cases := []ruleCase{
		signed("admin submits", p.Admin, with(good, func(r *audit.Record) { r.SubmitterID = "admin" }), audit.ErrWrongRole),
		signed("unknown study", p.Coord, vouched(b, good, func(r *audit.Record) { r.StudyID = "nope" }), audit.ErrUnknownStudy),
		signed("expired", p.Coord, vouched(b, good, func(r *audit.Record) { r.TimestampUnixNs = t0 + int64(2*time.Hour) }), audit.ErrStudyExpired),
		signed("round 1", p.Coord, vouched(b, good, func(r *audit.Record) { r.Round = 1 }), audit.ErrSequence),
		signed("plaintext study", p.Coord, vouched(b, good, func(r *audit.Record) { r.StudyID = "plain" }), audit.ErrPlaintextStudy),
		signed("other HE parameters", p.Coord, vouched(b, good, func(r *audit.Record) { r.HEParamsID = "ckks-toy" }), audit.ErrHEParams),
		signed("no HE parameters", p.Coord, vouched(b, good, func(r *audit.Record) { r.HEParamsID = "" }), audit.ErrHEParams),
		signed("other threshold", p.Coord, vouched(b, good, func(r *audit.Record) { r.Threshold = 3 }), audit.ErrHEParams),
		signed("no collective key", p.Coord, vouched(b, good, func(r *audit.Record) { r.CollectiveKeyHash = audit.Hash{} }), audit.ErrMissingField),
		signed("with contributions", p.Coord, vouched(b, good, func(r *audit.Record) { r.Contributions = []audit.Contribution{{Site: "site-a"}} }), audit.ErrUnexpectedField),
		signed("with countersignatures", p.Coord, vouched(b, good, func(r *audit.Record) { r.Countersignatures = []audit.Countersignature{{Site: "site-a"}} }), audit.ErrUnexpectedField),
		signed("holders not by point", p.Coord, vouched(b, good, func(r *audit.Record) { r.KeyHolders[0].Point = 3 }), audit.ErrListOrder),
		signed("point zero", p.Coord, vouched(b, good, func(r *audit.Record) { r.KeyHolders[0].Point = 0 }), audit.ErrKeyHolders),
		signed("site twice", p.Coord, vouched(b, good, func(r *audit.Record) { r.KeyHolders[1].Site = "site-a" }), audit.ErrListOrder),
		signed("unapproved holder", p.Coord, vouched(b, good, func(r *audit.Record) { r.KeyHolders[1].Site = "site-x" }), audit.ErrSiteNotApproved),
		signed("fewer holders than max(K, t)", p.Coord, vouched(b, good, func(r *audit.Record) { r.KeyHolders = r.KeyHolders[:1] }), audit.ErrKeyHolders),
		signed("certificate missing", p.Coord, with(good, func(r *audit.Record) { r.Certificates = r.Certificates[:1] }), audit.ErrCertificateSet),
		signed("certificate of a non-holder", p.Coord, with(good, func(r *audit.Record) { r.Certificates = p.Certificates("site-a", "site-b", "site-c") }), audit.ErrCertificateSet),
		signed("certificate twice", p.Coord, with(good, func(r *audit.Record) { r.Certificates = append(r.Certificates, r.Certificates[0]) }), audit.ErrCertificateSet),
		signed("certificate from another CA", p.Coord, withIdentity(other.Hospitals["site-a"]), audit.ErrHospitalCertificate),
		signed("certificate expired at the record's time", p.Coord, withIdentity(expired), audit.ErrHospitalCertificate),
		signed("certificate not a hospital's", p.Coord, withIdentity(wrongRole), audit.ErrHospitalCertificate),
		signed("holder signature by another site", p.Coord, with(good, func(r *audit.Record) { r.KeyHolders[0].Signature = r.KeyHolders[1].Signature }), audit.ErrHospitalSignature),
		signed("holder signed another threshold", p.Coord, with(good, func(r *audit.Record) {
			r.KeyHolders[0].Signature = p.SignAs("site-a", audit.KeySetupMessage(r.StudyID, r.HEParamsID, 3, r.CollectiveKeyHash, r.KeyHolders))
		}), audit.ErrHospitalSignature),
		signed("collective key changed after signing", p.Coord, with(good, func(r *audit.Record) { r.CollectiveKeyHash = randomHash() }), audit.ErrHospitalSignature),
		signed("random-byte holder signature", p.Coord, with(good, func(r *audit.Record) { r.KeyHolders[1].Signature = randomBytes(64) }), audit.ErrHospitalSignature),
	}
	expectRejected(t, l, cases)
	if _, err := l.Apply(audittest.Leaf(p.Coord, good)); err != nil {
		t.Fatalf("valid key setup: %v", err)
	}
	expectRejected(t, l, []ruleCase{
		signed("second key setup", p.Coord, vouched(b, good, func(r *audit.Record) { r.CollectiveKeyHash = randomHash() }), audit.ErrConflict),
	})
	s := l.Studies()[0]
	if !s.KeySetupDone || !slices.Equal(s.KeyHolders, []string{"site-a", "site-b"}) || s.CollectiveKeyHash != good.CollectiveKeyHash {
		t.Fatalf("summary after key setup %+v", s)
	}
}

// vouchedAs is rec vouched for again with id standing in for site: its
// certificate (where the record carries certificates) and its key.
func vouchedAs(b *audittest.Builder, rec *audit.Record, site string, id *tlsutil.Identity) *audit.Record {
	p := *b.PKI
	p.Hospitals = maps.Clone(p.Hospitals)
	p.Hospitals[site] = id
	as := *b
	as.PKI = &p
	r := clone(rec)
	as.Vouch(r)
	return r
}

// roundFixture is a study in mode (plaintext or secure) whose rounds the
// tests build; in the secure one sites a and b hold key shares with t = 2,
// and site-c is approved but holds none.
func roundFixture(t *testing.T, mode string) *audittest.Fixture {
	o := audittest.Options{}
	if mode == "secure" {
		o = audittest.Options{Threshold: 2, KeyHolders: []string{"site-a", "site-b"}}
	}
	return audittest.NewFixtureWith(t, o)
}

// TestRoundRules: one row per rule of a completed round, in both modes,
// each a valid round 2 with one thing changed.
func TestRoundRules(t *testing.T) {
	for _, mode := range []string{"plaintext", "secure"} {
		t.Run(mode, func(t *testing.T) {
			f := roundFixture(t, mode)
			f.MustApply(t, f.Coord, f.Round(1, model(0), model(1), "site-a", "site-b"))
			good := f.Round(2, model(1), model(2), "site-a", "site-b")
			v := func(mod func(*audit.Record)) *audit.Record { return vouched(f.Builder, good, mod) }
			w := func(mod func(*audit.Record)) *audit.Record { return with(good, mod) }
			stranger := audittest.NewPKI(t)
			tampered := audittest.Must(audit.Sign(f.Coord, good))
			tampered.Signature[0] ^= 1
			cases := []ruleCase{
				{"bad envelope signature", tampered.Marshal(), audit.ErrBadSignature},
				signed("unknown submitter", stranger.Coord, good, audit.ErrUntrustedCert),
				signed("admin submits", f.Admin, w(func(r *audit.Record) { r.SubmitterID = "admin" }), audit.ErrWrongRole),
				signed("unknown study", f.Coord, v(func(r *audit.Record) { r.StudyID = "nope" }), audit.ErrUnknownStudy),
				signed("expired", f.Coord, v(func(r *audit.Record) { r.TimestampUnixNs = f.T0 + int64(2*time.Hour) }), audit.ErrStudyExpired),
				signed("conflicting round 1", f.Coord, f.Round(1, model(0), model(5), "site-a", "site-b"), audit.ErrConflict),
				signed("skipped round", f.Coord, v(func(r *audit.Record) { r.Round = 3 }), audit.ErrSequence),
				signed("wrong parent", f.Coord, f.Round(2, model(7), model(2), "site-a", "site-b"), audit.ErrParentMismatch),
				signed("no output model", f.Coord, v(func(r *audit.Record) { r.OutputModel = audit.Hash{} }), audit.ErrMissingField),
				signed("no aggregate hash", f.Coord, v(func(r *audit.Record) { r.AggregateHash = audit.Hash{} }), audit.ErrMissingField),
				signed("optimizer state does not chain", f.Coord, v(func(r *audit.Record) { r.OptimizerBefore = randomHash() }), audit.ErrOptimizerChain),
				signed("optimizer state reset", f.Coord, v(func(r *audit.Record) { r.OptimizerBefore = audit.Hash{} }), audit.ErrOptimizerChain),
				signed("with key holders", f.Coord, v(func(r *audit.Record) { r.KeyHolders = []audit.KeyHolder{{Site: "site-a", Point: 1}} }), audit.ErrUnexpectedField),
				signed("too few contributors", f.Coord, f.Round(2, model(1), model(2), "site-a"), audit.ErrTooFewContributors),
				signed("contributor twice", f.Coord, f.Round(2, model(1), model(2), "site-a", "site-a"), audit.ErrListOrder),
				signed("contributions not by site", f.Coord, v(func(r *audit.Record) { slices.Reverse(r.Contributions) }), audit.ErrListOrder),
				signed("unapproved contributor", f.Coord, f.Round(2, model(1), model(2), "site-a", "site-x"), audit.ErrSiteNotApproved),
				signed("countersignatures not by site", f.Coord, v(func(r *audit.Record) { slices.Reverse(r.Countersignatures) }), audit.ErrListOrder),
				signed("no countersignatures", f.Coord, v(func(r *audit.Record) { r.Countersignatures = nil }), audit.ErrTooFewCountersignatures),
				signed("fewer countersignatures than required", f.Coord, v(func(r *audit.Record) { r.Countersignatures = r.Countersignatures[:1] }), audit.ErrTooFewCountersignatures),
				signed("random-byte contribution signature", f.Coord, w(func(r *audit.Record) { r.Contributions[0].Signature = randomBytes(64) }), audit.ErrHospitalSignature),
				signed("contribution signed over another parent", f.Coord, w(func(r *audit.Record) {
					c := &r.Contributions[1]
					c.Signature = f.SignAs(c.Site, c.Message(r.StudyID, r.Round, model(0)))
				}), audit.ErrHospitalSignature),
				signed("contribution signed for another round", f.Coord, w(func(r *audit.Record) {
					c := &r.Contributions[0]
					c.Signature = f.SignAs(c.Site, c.Message(r.StudyID, 1, r.ParentModel))
				}), audit.ErrHospitalSignature),
				signed("invented sample count", f.Coord, w(func(r *audit.Record) { r.Contributions[0].Samples = 5000 }), audit.ErrHospitalSignature),
				signed("contribution signed by another site", f.Coord, w(func(r *audit.Record) {
					c := &r.Contributions[0]
					c.Signature = f.SignAs("site-b", c.Message(r.StudyID, r.Round, r.ParentModel))
				}), audit.ErrHospitalSignature),
				signed("output changed after countersigning", f.Coord, w(func(r *audit.Record) { r.OutputModel = model(9) }), audit.ErrHospitalSignature),
				signed("optimizer state after changed after countersigning", f.Coord, w(func(r *audit.Record) { r.OptimizerAfter = randomHash() }), audit.ErrHospitalSignature),
				signed("countersignature of another site reused", f.Coord, w(func(r *audit.Record) { r.Countersignatures[1].Signature = r.Countersignatures[0].Signature }), audit.ErrHospitalSignature),
			}
			if mode == "secure" {
				rekeyed := audittest.NewPKI(t) // site-a's certificate replaced mid-study: a new key
				cases = append(cases,
					signed("no HE parameters or collective key (restarted coordinator)", f.Coord, v(func(r *audit.Record) { r.HEParamsID, r.CollectiveKeyHash = "", audit.Hash{} }), audit.ErrHEParams),
					signed("no collective key", f.Coord, v(func(r *audit.Record) { r.CollectiveKeyHash = audit.Hash{} }), audit.ErrHEParams),
					signed("other HE parameters", f.Coord, v(func(r *audit.Record) { r.HEParamsID = "ckks-toy" }), audit.ErrHEParams),
					signed("other collective key", f.Coord, v(func(r *audit.Record) { r.CollectiveKeyHash = randomHash() }), audit.ErrHEParams),
					signed("with certificates", f.Coord, v(func(r *audit.Record) { r.Certificates = f.Certificates("site-a", "site-b") }), audit.ErrUnexpectedField),
					signed("no decryption shares", f.Coord, v(func(r *audit.Record) { r.DecryptionShares = nil }), audit.ErrTooFewDecryptors),
					signed("fewer decryption shares than t", f.Coord, v(func(r *audit.Record) { r.DecryptionShares = r.DecryptionShares[:1] }), audit.ErrTooFewDecryptors),
					signed("decryption shares not by site", f.Coord, v(func(r *audit.Record) { slices.Reverse(r.DecryptionShares) }), audit.ErrListOrder),
					signed("contributor not a key holder", f.Coord, f.Round(2, model(1), model(2), "site-a", "site-c"), audit.ErrNotKeyHolder),
					signed("decryptor not a key holder", f.Coord, v(func(r *audit.Record) { r.DecryptionShares[1].Site = "site-c" }), audit.ErrNotKeyHolder),
					signed("countersigner not a key holder", f.Coord, v(func(r *audit.Record) { r.Countersignatures[1].Site = "site-c" }), audit.ErrNotKeyHolder),
					signed("decryption share signed over another manifest", f.Coord, w(func(r *audit.Record) {
						d := &r.DecryptionShares[0]
						other := audit.ManifestDigest(r.StudyID, r.Round, r.ParentModel, r.Contributions[:1])
						d.Signature = f.SignAs(d.Site, d.Message(r.StudyID, r.Round, r.AggregateHash, other))
					}), audit.ErrHospitalSignature),
					signed("aggregate changed after decryption", f.Coord, w(func(r *audit.Record) { r.AggregateHash = randomHash() }), audit.ErrHospitalSignature),
					signed("contribution changed after decryption", f.Coord, w(func(r *audit.Record) {
						c := &r.Contributions[0]
						c.UpdateHash = randomHash()
						c.Signature = f.SignAs(c.Site, c.Message(r.StudyID, r.Round, r.ParentModel))
					}), audit.ErrHospitalSignature),
					signed("signed with a key not bound at key setup", f.Coord, w(func(r *audit.Record) {
						c := &r.Contributions[0]
						c.Signature = rekeyed.SignAs(c.Site, c.Message(r.StudyID, r.Round, r.ParentModel))
					}), audit.ErrHospitalSignature),
				)
			} else {
				other := audittest.NewPKI(t)
				expired := audittest.Must(f.CA.Issue("site-a", tlsutil.RoleClient, nil, -time.Minute))
				wrongRole := audittest.Must(f.CA.Issue("site-a", tlsutil.RoleObserver, nil, time.Hour))
				siteX := audittest.Must(f.CA.Issue("site-x", tlsutil.RoleClient, nil, time.Hour))
				asSiteA := func(id *tlsutil.Identity) *audit.Record { return vouchedAs(f.Builder, good, "site-a", id) }
				cases = append(cases,
					signed("HE parameters on a plaintext round", f.Coord, v(func(r *audit.Record) { r.HEParamsID = audittest.HEParams }), audit.ErrHEParams),
					signed("collective key on a plaintext round", f.Coord, v(func(r *audit.Record) { r.CollectiveKeyHash = randomHash() }), audit.ErrHEParams),
					signed("decryption shares on a plaintext round", f.Coord, v(func(r *audit.Record) {
						r.DecryptionShares = []audit.DecryptionShare{{Site: "site-a", ShareHash: randomHash()}}
					}), audit.ErrUnexpectedField),
					signed("unapproved countersigner", f.Coord, v(func(r *audit.Record) { r.Countersignatures[1].Site = "site-x" }), audit.ErrSiteNotApproved),
					signed("certificate missing", f.Coord, w(func(r *audit.Record) { r.Certificates = r.Certificates[:1] }), audit.ErrCertificateSet),
					signed("no certificates", f.Coord, w(func(r *audit.Record) { r.Certificates = nil }), audit.ErrCertificateSet),
					signed("certificate of a non-signer", f.Coord, w(func(r *audit.Record) { r.Certificates = f.Certificates(audittest.Sites...) }), audit.ErrCertificateSet),
					signed("certificate twice", f.Coord, w(func(r *audit.Record) { r.Certificates = append(r.Certificates, r.Certificates[1]) }), audit.ErrCertificateSet),
					signed("certificate of an unapproved site", f.Coord, w(func(r *audit.Record) { r.Certificates = append(r.Certificates, siteX.Cert.Raw) }), audit.ErrSiteNotApproved),
					signed("certificate from another CA", f.Coord, asSiteA(other.Hospitals["site-a"]), audit.ErrHospitalCertificate),
					signed("certificate expired at the record's time", f.Coord, asSiteA(expired), audit.ErrHospitalCertificate),
					signed("certificate not a hospital's", f.Coord, asSiteA(wrongRole), audit.ErrHospitalCertificate),
					signed("garbage certificate", f.Coord, w(func(r *audit.Record) { r.Certificates[0] = randomBytes(100) }), audit.ErrHospitalCertificate),
				)
			}
			expectRejected(t, f.L, cases)
			if err := f.L.Check(audittest.Leaf(f.Coord, good)); err != nil {
				t.Fatalf("Check of the valid round 2: %v", err)
			}
			f.MustApply(t, f.Coord, good)
		})
	}
}

// TestForgedRoundOfTheIncident replays the incident: an attacker holding
// only the coordinator's key appends a round no hospital took part in
// (contribution "signatures" of random bytes, invented sample counts, no
// HE parameters), beyond the study's 15 rounds. Each layer of the rules
// refuses it on its own: the round limit, then (within the limit) the
// missing HE parameters, the missing decryption shares, and the hospital
// signatures once the attacker copies everything public from the log.
func TestForgedRoundOfTheIncident(t *testing.T) {
	for _, mode := range []string{"secure", "plaintext"} {
		t.Run(mode, func(t *testing.T) {
			o := audittest.Options{Rounds: 15}
			if mode == "secure" {
				o.Threshold = 2
			}
			f := audittest.NewFixtureWith(t, o)
			rounds := f.Chain(15, "site-a", "site-b", "site-c")
			forge := func(r uint64, parent audit.Hash) *audit.Record {
				rec := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: "heart", Round: r, ParentModel: parent, OutputModel: randomHash(),
					AggregateHash: randomHash(), OptimizerBefore: audittest.OptimizerState(parent), OptimizerAfter: randomHash(),
					Metrics: []audit.Metric{{Name: "train_loss", Value: 0.01}}, TimestampUnixNs: f.T0 + int64(r)*int64(time.Millisecond), SubmitterID: "coord"}
				for _, s := range audittest.Sites {
					rec.Contributions = append(rec.Contributions, audit.Contribution{Site: s, UpdateHash: randomHash(), Samples: 5000, Signature: randomBytes(64)})
				}
				return rec
			}
			for _, r := range rounds[:14] {
				f.MustApply(t, f.Coord, r)
			}
			within := forge(15, audittest.Output(14))
			var cases []ruleCase
			if mode == "secure" {
				withParams := with(within, func(r *audit.Record) {
					r.HEParamsID, r.CollectiveKeyHash = f.KeySetup.HEParamsID, f.KeySetup.CollectiveKeyHash
				})
				withShares := with(withParams, func(r *audit.Record) {
					for _, s := range []string{"site-a", "site-b"} {
						r.DecryptionShares = append(r.DecryptionShares, audit.DecryptionShare{Site: s, ShareHash: randomHash(), Signature: randomBytes(64)})
						r.Countersignatures = append(r.Countersignatures, audit.Countersignature{Site: s, Signature: randomBytes(64)})
					}
				})
				cases = []ruleCase{
					signed("round 15 without HE parameters", f.Coord, within, audit.ErrHEParams),
					signed("round 15 with the study's HE parameters, no decryption", f.Coord, withParams, audit.ErrTooFewDecryptors),
					signed("round 15 with fabricated shares and countersignatures", f.Coord, withShares, audit.ErrHospitalSignature),
				}
			} else {
				withCounter := with(within, func(r *audit.Record) {
					for _, s := range audittest.Sites {
						r.Countersignatures = append(r.Countersignatures, audit.Countersignature{Site: s, Signature: randomBytes(64)})
					}
					r.Certificates = f.Certificates(audittest.Sites...) // certificates are public
				})
				cases = []ruleCase{
					signed("round 15 without countersignatures", f.Coord, within, audit.ErrTooFewCountersignatures),
					signed("round 15 with the hospitals' public certificates", f.Coord, withCounter, audit.ErrHospitalSignature),
				}
			}
			expectRejected(t, f.L, cases)
			f.MustApply(t, f.Coord, rounds[14])
			expectRejected(t, f.L, []ruleCase{
				signed("round 16 of a 15-round study", f.Coord, forge(16, audittest.Output(15)), audit.ErrRoundLimit),
				signed("genuine round 16 of a 15-round study", f.Coord, f.Round(16, audittest.Output(15), model(16), audittest.Sites...), audit.ErrRoundLimit),
				signed("failed round 16 of a 15-round study", f.Coord, f.Failed(16, audittest.Output(15)), audit.ErrRoundLimit),
			})
		})
	}
}

// TestFailedRoundRules: a failed round advances the round counter only;
// failed rounds count toward the limit.
func TestFailedRoundRules(t *testing.T) {
	f := audittest.NewFixtureWith(t, audittest.Options{Rounds: 3})
	f.MustApply(t, f.Coord, f.Round(1, model(0), model(1), "site-a", "site-b"))
	good := f.Failed(2, model(1))
	expectRejected(t, f.L, []ruleCase{
		signed("with an output model", f.Coord, with(good, func(r *audit.Record) { r.OutputModel = model(2) }), audit.ErrUnexpectedField),
		signed("with an optimizer state after", f.Coord, with(good, func(r *audit.Record) { r.OptimizerAfter = randomHash() }), audit.ErrUnexpectedField),
		signed("with countersignatures", f.Coord, vouched(f.Builder, good, func(r *audit.Record) { r.Countersignatures = []audit.Countersignature{{Site: "site-a"}} }), audit.ErrUnexpectedField),
		signed("with certificates", f.Coord, with(good, func(r *audit.Record) { r.Certificates = f.Certificates("site-a") }), audit.ErrUnexpectedField),
		signed("with key holders", f.Coord, with(good, func(r *audit.Record) { r.KeyHolders = []audit.KeyHolder{{Site: "site-a", Point: 1}} }), audit.ErrUnexpectedField),
		signed("wrong parent", f.Coord, f.Failed(2, model(0)), audit.ErrParentMismatch),
		signed("skipped round", f.Coord, f.Failed(3, model(1)), audit.ErrSequence),
		signed("admin submits", f.Admin, with(good, func(r *audit.Record) { r.SubmitterID = "admin" }), audit.ErrWrongRole),
	})
	f.MustApply(t, f.Coord, good)
	// Round 3 chains to round 1's output and optimizer state.
	f.MustApply(t, f.Coord, f.Round(3, model(1), model(3), "site-a", "site-b"))
	expectRejected(t, f.L, []ruleCase{
		signed("round 4 of 3", f.Coord, f.Round(4, model(3), model(4), "site-a", "site-b"), audit.ErrRoundLimit),
	})
}

// TestSecureRoundBeforeKeySetup: no round of a secure study completes
// before its key setup is on the log.
func TestSecureRoundBeforeKeySetup(t *testing.T) {
	p := audittest.NewPKI(t)
	b := p.NewBuilder(audittest.Options{Threshold: 2}, time.Now().UnixNano())
	l := audit.NewLedger(p.CA.Pool())
	if _, err := l.Apply(audittest.Leaf(p.Admin, b.Study)); err != nil {
		t.Fatal(err)
	}
	expectRejected(t, l, []ruleCase{
		signed("round 1 before key setup", p.Coord, b.Round(1, model(0), model(1), audittest.Sites...), audit.ErrNoKeySetup),
	})
	// A failed round needs no key setup (key setup itself may have failed).
	if _, err := l.Apply(audittest.Leaf(p.Coord, b.Failed(1, model(0)))); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Apply(audittest.Leaf(p.Coord, b.KeySetup)); err != nil {
		t.Fatalf("key setup after a failed round: %v", err)
	}
	if _, err := l.Apply(audittest.Leaf(p.Coord, b.Round(2, model(0), model(2), audittest.Sites...))); err != nil {
		t.Fatal(err)
	}
}

// TestRuleErrorNamesTheRecord: a rejection says which record and why.
func TestRuleErrorNamesTheRecord(t *testing.T) {
	f := audittest.NewFixture(t)
	_, err := f.L.Apply(audittest.Leaf(f.Coord, f.Round(5, model(0), model(5), "site-a", "site-b")))
	var re *audit.RuleError
	if !errors.As(err, &re) || re.Study != "heart" || re.Round != 5 || re.Kind != audit.KindRoundCompleted || !errors.Is(err, audit.ErrSequence) {
		t.Fatalf("RuleError = %+v (%v)", re, err)
	}
	_, err = f.L.Apply(audittest.Leaf(f.Coord, f.Round(1, model(0), model(1), "site-a", "site-x")))
	if want := `audit: record round-completed study "heart" round 1 rejected: audit: site is not approved for the study: contributor "site-x"`; err == nil || err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

// TestBoundCertificateExpires: a secure study's hospital signatures are
// checked against the certificates bound at key setup, and a bound
// certificate that has expired by a round's time no longer vouches.
func TestBoundCertificateExpires(t *testing.T) {
	p := audittest.NewPKI(t)
	p.Hospitals["site-a"] = audittest.Must(p.CA.Issue("site-a", tlsutil.RoleClient, nil, time.Minute))
	b := p.NewBuilder(audittest.Options{Threshold: 2}, time.Now().UnixNano())
	l := audit.NewLedger(p.CA.Pool())
	for _, leaf := range [][]byte{audittest.Leaf(p.Admin, b.Study), audittest.Leaf(p.Coord, b.KeySetup)} {
		if _, err := l.Apply(leaf); err != nil {
			t.Fatal(err)
		}
	}
	late := func(r *audit.Record) { r.TimestampUnixNs = b.T0 + int64(2*time.Minute) }
	r1 := b.Round(1, model(0), model(1), "site-a", "site-b")
	expectRejected(t, l, []ruleCase{
		signed("site-a's bound certificate expired", p.Coord, vouched(b, r1, late), audit.ErrHospitalCertificate),
	})
	// Without site-a the same round, as late, is accepted.
	if _, err := l.Apply(audittest.Leaf(p.Coord, vouched(b, b.Round(1, model(0), model(1), "site-b", "site-c"), late))); err != nil {
		t.Fatalf("round without the expired holder: %v", err)
	}
}

// FuzzLedgerRules feeds the rules arbitrary records, each signed by the
// role its kind needs (so the envelope is valid and the rules decide),
// on a fresh ledger holding a secure study with its key setup and a round
// (fresh for each input, so the target is deterministic): no record may
// panic, Check must agree with Apply, and a rejected record must leave
// the ledger as it was.
func FuzzLedgerRules(f *testing.F) {
	fx := audittest.NewSecureFixture(f)
	fx.MustApply(f, fx.Coord, fx.Round(1, model(0), model(1), audittest.Sites...))
	history := fx.L.Leaves()
	for _, r := range []*audit.Record{fx.Round(2, model(1), model(2), "site-a", "site-b"), fx.Failed(2, model(1)), fx.Study, fx.KeySetup} {
		f.Add(r.Marshal())
	}
	for _, r := range validRecords(f) {
		f.Add(r.Marshal())
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec, err := audit.UnmarshalRecord(body)
		if err != nil {
			return
		}
		id := fx.Coord
		if rec.Kind == audit.KindStudyCreated || rec.Kind == audit.KindMembershipChange {
			id = fx.Admin
		}
		rec.SubmitterID = id.ID
		leaf := audittest.Leaf(id, rec)
		l := audit.NewLedger(fx.CA.Pool())
		for _, h := range history {
			if _, err := l.Apply(h); err != nil {
				t.Fatal(err)
			}
		}
		before := stateOf(l)
		checkErr := l.Check(leaf)
		_, err = l.Apply(leaf)
		if (checkErr == nil) != (err == nil) || (err != nil && checkErr.Error() != err.Error()) {
			t.Fatalf("Check said %v, Apply %v", checkErr, err)
		}
		if err != nil {
			if after := stateOf(l); !reflect.DeepEqual(before, after) {
				t.Fatalf("rejected record (%v) changed the ledger", err)
			}
		}
	})
}

// TestRoundEvaluations: a round record may carry its contributors' signed
// evaluations of the parent model (and of their personal models); every
// node checks each one. An evaluation whose figures changed after the
// hospital signed them, signed by another site, from a site that did not
// contribute, out of site order, or with a figure that is not finite is
// refused; so is one on a failed round.
func TestRoundEvaluations(t *testing.T) {
	for _, mode := range []string{"plaintext", "secure"} {
		t.Run(mode, func(t *testing.T) {
			f := roundFixture(t, mode)
			eval := func(site string, acc float64) audit.Evaluation {
				return audit.Evaluation{Site: site, Metrics: []audit.Metric{{Name: "global_test_accuracy", Value: acc}, {Name: "personal_test_accuracy", Value: acc + 0.1}}}
			}
			round1 := vouched(f.Builder, f.Round(1, model(0), model(1), "site-a", "site-b"), func(r *audit.Record) {
				r.Evaluations = []audit.Evaluation{eval("site-a", 0.7), eval("site-b", 0.6)}
			})
			f.MustApply(t, f.Coord, round1)
			good := f.Round(2, model(1), model(2), "site-a", "site-b")
			v := func(mod func(*audit.Record)) *audit.Record { return vouched(f.Builder, good, mod) }
			withEvals := v(func(r *audit.Record) { r.Evaluations = []audit.Evaluation{eval("site-a", 0.8), eval("site-b", 0.75)} })
			w := func(mod func(*audit.Record)) *audit.Record { return with(withEvals, mod) }
			expectRejected(t, f.L, []ruleCase{
				signed("figure changed after signing", f.Coord, w(func(r *audit.Record) { r.Evaluations[0].Metrics[0].Value = 0.99 }), audit.ErrHospitalSignature),
				signed("figure added after signing", f.Coord, w(func(r *audit.Record) {
					r.Evaluations[1].Metrics = append(r.Evaluations[1].Metrics, audit.Metric{Name: "global_test_auc", Value: 0.9})
				}), audit.ErrHospitalSignature),
				signed("another site's signature", f.Coord, w(func(r *audit.Record) { r.Evaluations[1].Signature = r.Evaluations[0].Signature }), audit.ErrHospitalSignature),
				signed("signed for another parent", f.Coord, w(func(r *audit.Record) {
					r.Evaluations[0].Signature = f.SignAs("site-a", r.Evaluations[0].Message(r.StudyID, r.Round, model(7)))
				}), audit.ErrHospitalSignature),
				signed("from a site that did not contribute", f.Coord, v(func(r *audit.Record) { r.Evaluations = []audit.Evaluation{eval("site-c", 0.8)} }), audit.ErrUnexpectedField),
				signed("out of site order", f.Coord, v(func(r *audit.Record) {
					r.Evaluations = []audit.Evaluation{eval("site-b", 0.8), eval("site-a", 0.8)}
				}), audit.ErrListOrder),
				signed("not finite", f.Coord, v(func(r *audit.Record) { r.Evaluations = []audit.Evaluation{eval("site-a", math.NaN())} }), audit.ErrMalformedEvaluation),
				signed("no figures", f.Coord, v(func(r *audit.Record) { r.Evaluations = []audit.Evaluation{{Site: "site-a"}} }), audit.ErrMalformedEvaluation),
				signed("on a failed round", f.Coord, with(f.Failed(2, model(1)), func(r *audit.Record) { r.Evaluations = []audit.Evaluation{eval("site-a", 0.8)} }), audit.ErrUnexpectedField),
			})
			f.MustApply(t, f.Coord, withEvals)
		})
	}
}
