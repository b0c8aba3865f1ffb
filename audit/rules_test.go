package audit

import (
	"errors"
	"testing"
	"time"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

type ledgerFixture struct {
	*testPKI
	l      *Ledger
	t0     int64
	study  *Record
	rounds []*Record
}

func model(b byte) Hash { return Hash{b, 0xaa} }

func newLedgerFixture(t testing.TB) *ledgerFixture {
	t.Helper()
	p := newPKI(t)
	f := &ledgerFixture{testPKI: p, l: NewLedger(p.ca.Pool()), t0: time.Now().UnixNano()}
	f.study = &Record{Kind: KindStudyCreated, StudyID: "heart", OutputModel: model(0),
		ApprovedSites: []string{"site-a", "site-b", "site-c"}, MinContributors: 2,
		ExpiresAtUnixNs: f.t0 + int64(time.Hour), TimestampUnixNs: f.t0, SubmitterID: "admin"}
	f.mustApply(t, p.admin, f.study)
	return f
}

func (f *ledgerFixture) round(r uint64, parent, out Hash, sites ...string) *Record {
	rec := &Record{Kind: KindRoundCompleted, StudyID: "heart", Round: r, ParentModel: parent, OutputModel: out,
		TimestampUnixNs: f.t0 + int64(r)*int64(time.Second), SubmitterID: "coord"}
	for _, s := range sites {
		rec.Contributions = append(rec.Contributions, Contribution{Site: s, UpdateHash: Hash{byte(len(s))}})
	}
	return rec
}

func (f *ledgerFixture) mustApply(t testing.TB, id *tlsutil.Identity, rec *Record) int64 {
	t.Helper()
	idx, err := f.l.Apply(Must(Sign(id, rec)).Marshal())
	if err != nil {
		t.Fatalf("Apply %s round %d: %v", rec.Kind, rec.Round, err)
	}
	return idx
}

func TestLedgerAcceptsSequenceAndIsIdempotent(t *testing.T) {
	f := newLedgerFixture(t)
	r1 := f.round(1, model(0), model(1), "site-a", "site-b")
	i1 := f.mustApply(t, f.coord, r1)
	if again := f.mustApply(t, f.coord, r1); again != i1 {
		t.Fatalf("re-append returned %d, want %d", again, i1)
	}
	if n := f.l.Log().Size(); n != 2 {
		t.Fatalf("log size %d after idempotent retry, want 2", n)
	}
	fail := &Record{Kind: KindRoundFailed, StudyID: "heart", Round: 2, ParentModel: model(1),
		TimestampUnixNs: f.t0 + 2, SubmitterID: "coord"}
	f.mustApply(t, f.coord, fail)
	f.mustApply(t, f.coord, f.round(3, model(1), model(3), "site-a", "site-b", "site-c"))
	out, round, err := f.l.LatestOutput("heart")
	if err != nil || out != model(3) || round != 3 {
		t.Fatalf("LatestOutput = %x, %d, %v", out[:2], round, err)
	}

	// A second ledger fed the same leaves reaches the same root.
	replica := NewLedger(f.ca.Pool())
	for i := int64(0); i < f.l.Log().Size(); i++ {
		leaf, _ := f.l.Log().Leaf(i)
		if _, err := replica.Apply(leaf); err != nil {
			t.Fatalf("replica apply %d: %v", i, err)
		}
	}
	n1, h1, _ := f.l.Root()
	n2, h2, _ := replica.Root()
	if n1 != n2 || h1 != h2 {
		t.Fatalf("replica root (%d,%v) != (%d,%v)", n2, h2, n1, h1)
	}
}

func TestLedgerRejects(t *testing.T) {
	f := newLedgerFixture(t)
	f.mustApply(t, f.coord, f.round(1, model(0), model(1), "site-a", "site-b"))
	stranger := newPKI(t)
	good2 := f.round(2, model(1), model(2), "site-a", "site-b")

	type tc struct {
		name string
		leaf func() []byte
		want error
	}
	sign := func(id *tlsutil.Identity, r *Record) func() []byte {
		return func() []byte { return Must(Sign(id, r)).Marshal() }
	}
	with := func(mod func(r *Record)) *Record { r := *good2; mod(&r); return &r }
	cases := []tc{
		{"bad signature", func() []byte {
			e := Must(Sign(f.coord, good2))
			e.Signature[0] ^= 1
			return e.Marshal()
		}, ErrBadSignature},
		{"body altered after signing", func() []byte {
			e := Must(Sign(f.coord, good2))
			e.Body = with(func(r *Record) { r.OutputModel = model(9) }).Marshal()
			return e.Marshal()
		}, ErrBadSignature},
		{"unknown signer", sign(stranger.coord, good2), ErrUntrustedCert},
		{"malformed leaf", func() []byte { return []byte{1, 2, 3} }, ErrMalformed},
		{"admin signs round", sign(f.admin, with(func(r *Record) { r.SubmitterID = "admin" })), ErrWrongRole},
		{"coordinator creates study", sign(f.coord, &Record{Kind: KindStudyCreated, StudyID: "x", ApprovedSites: []string{"a"},
			MinContributors: 1, TimestampUnixNs: f.t0, SubmitterID: "coord"}), ErrWrongRole},
		{"wrong parent", sign(f.coord, with(func(r *Record) { r.ParentModel = model(7) })), ErrParentMismatch},
		{"skipped round", sign(f.coord, with(func(r *Record) { r.Round = 3 })), ErrSequence},
		{"conflicting round 1", sign(f.coord, f.round(1, model(0), model(5), "site-a", "site-b")), ErrConflict},
		{"too few contributors", sign(f.coord, f.round(2, model(1), model(2), "site-a")), ErrTooFewContributors},
		{"duplicate contributor", sign(f.coord, f.round(2, model(1), model(2), "site-a", "site-a")), ErrStudyRules},
		{"unapproved site", sign(f.coord, f.round(2, model(1), model(2), "site-a", "site-x")), ErrSiteNotApproved},
		{"expired", sign(f.coord, with(func(r *Record) { r.TimestampUnixNs = f.t0 + int64(2*time.Hour) })), ErrStudyExpired},
		{"unknown study", sign(f.coord, with(func(r *Record) { r.StudyID = "nope" })), ErrUnknownStudy},
		{"study twice", sign(f.admin, with(func(r *Record) {
			*r = *f.study
			r.MinContributors = 3
		})), ErrConflict},
		{"study K above sites", sign(f.admin, &Record{Kind: KindStudyCreated, StudyID: "s2", ApprovedSites: []string{"a"},
			MinContributors: 2, TimestampUnixNs: f.t0, SubmitterID: "admin"}), ErrStudyRules},
		{"study no sites", sign(f.admin, &Record{Kind: KindStudyCreated, StudyID: "s3", MinContributors: 1,
			TimestampUnixNs: f.t0, SubmitterID: "admin"}), ErrStudyRules},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n0, h0, _ := f.l.Root()
			_, err := f.l.Apply(c.leaf())
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			n1, h1, _ := f.l.Root()
			if n0 != n1 || h0 != h1 {
				t.Fatal("rejected record changed the log")
			}
			if out, round, _ := f.l.LatestOutput("heart"); out != model(1) || round != 1 {
				t.Fatalf("rejected record changed study state: %x round %d", out[:2], round)
			}
		})
	}
	var re *RuleError
	_, err := f.l.Apply(Must(Sign(f.coord, with(func(r *Record) { r.Round = 5 }))).Marshal())
	if !errors.As(err, &re) || re.Study != "heart" || re.Round != 5 || re.Kind != KindRoundCompleted {
		t.Fatalf("RuleError = %+v (%v)", re, err)
	}
	// The good record is still accepted after all the rejections.
	if idx := f.mustApply(t, f.coord, good2); idx != 2 {
		t.Fatalf("good round 2 at index %d, want 2", idx)
	}
}
