// Package audittest builds valid audit-log fixtures for tests: a consortium
// CA with its admin and coordinator identities, and a ledger holding one
// study. It is imported only by tests.
package audittest

import (
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// PKI is a consortium CA with the identities that sign records.
type PKI struct {
	CA           *tlsutil.CA
	Coord, Admin *tlsutil.Identity
}

// NewPKI makes a fresh CA valid for a day, with "coord" (coordinator) and
// "admin" identities.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	ca, err := tlsutil.NewCA("consortium", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &PKI{CA: ca, Coord: Issue(t, ca, "coord", tlsutil.RoleCoordinator), Admin: Issue(t, ca, "admin", tlsutil.RoleAdmin)}
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

// Fixture is a ledger holding one study, "heart", created by the admin.
type Fixture struct {
	*PKI
	L     *audit.Ledger
	T0    int64
	Study *audit.Record
}

// Model is a recognisable model hash.
func Model(b byte) audit.Hash { return audit.Hash{b, 0xaa} }

// NewFixture creates the study on a fresh ledger.
func NewFixture(t testing.TB) *Fixture {
	t.Helper()
	p := NewPKI(t)
	f := &Fixture{PKI: p, L: audit.NewLedger(p.CA.Pool()), T0: time.Now().UnixNano()}
	f.Study = &audit.Record{Kind: audit.KindStudyCreated, StudyID: "heart", OutputModel: Model(0),
		ApprovedSites: []string{"site-a", "site-b", "site-c"}, MinContributors: 2,
		ExpiresAtUnixNs: f.T0 + int64(time.Hour), TimestampUnixNs: f.T0, SubmitterID: "admin"}
	f.MustApply(t, p.Admin, f.Study)
	return f
}

// Round is a completed-round record of the study.
func (f *Fixture) Round(r uint64, parent, out audit.Hash, sites ...string) *audit.Record {
	rec := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: "heart", Round: r, ParentModel: parent, OutputModel: out,
		TimestampUnixNs: f.T0 + int64(r)*int64(time.Second), SubmitterID: "coord"}
	for _, s := range sites {
		rec.Contributions = append(rec.Contributions, audit.Contribution{Site: s, UpdateHash: audit.Hash{byte(len(s))}})
	}
	return rec
}

// MustApply signs rec with id and applies it to the fixture's ledger.
func (f *Fixture) MustApply(t testing.TB, id *tlsutil.Identity, rec *audit.Record) int64 {
	t.Helper()
	idx, err := f.L.Apply(Must(audit.Sign(id, rec)).Marshal())
	if err != nil {
		t.Fatalf("Apply %s round %d: %v", rec.Kind, rec.Round, err)
	}
	return idx
}

// Must returns v or panics on err.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
