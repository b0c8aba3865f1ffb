package audit_test

import (
	"errors"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

// An admin's exclusion binds every audit node: a round that aggregates the
// excluded site's contribution is refused, whoever submits it, and only an
// admin can exclude or readmit.
func TestExclusionRules(t *testing.T) {
	f := audittest.NewFixture(t) // sites a, b, c; K = 2
	now := time.Now().UnixNano()
	excl := func(site string, from uint64, reason string) *audit.Record {
		return audit.ExclusionRecord(f.Study.StudyID, site, from, reason, f.Admin.ID, true, now)
	}
	r1 := f.Round(1, audittest.Model(0), audittest.Output(1), "site-a", "site-b", "site-c")
	f.MustApply(t, f.Coord, r1)

	expectRejected(t, f.L, []ruleCase{
		signed("the coordinator excludes a site", f.Coord, asSubmitter(excl("site-c", 2, "norm"), f.Coord.ID), audit.ErrWrongRole),
		signed("a round already on the log", f.Admin, excl("site-c", 1, "norm"), audit.ErrExclusion),
		signed("no reason", f.Admin, excl("site-c", 2, "  "), audit.ErrExclusion),
		signed("an unknown site", f.Admin, excl("site-z", 2, "norm"), audit.ErrExclusion),
		signed("past the study's rounds", f.Admin, excl("site-c", 65, "norm"), audit.ErrExclusion),
		signed("another role", f.Admin, with(excl("site-c", 2, "norm"), func(r *audit.Record) { r.MemberRole = "observer" }), audit.ErrExclusion),
		signed("with contributions", f.Admin, with(excl("site-c", 2, "norm"), func(r *audit.Record) { r.Contributions = r1.Contributions }), audit.ErrUnexpectedField),
		signed("with a model", f.Admin, with(excl("site-c", 2, "norm"), func(r *audit.Record) { r.OutputModel = audittest.Output(2) }), audit.ErrExclusion),
		signed("readmits a site never excluded", f.Admin, with(excl("site-c", 2, "ok"), func(r *audit.Record) { r.MemberRemoved = false }), audit.ErrExclusion),
	})

	f.MustApply(t, f.Admin, excl("site-c", 3, "left out by the norm check in round 1"))
	if got := f.L.Exclusions(f.Study.StudyID)["site-c"]; got.From != 3 || got.By != f.Admin.ID || got.Reason == "" {
		t.Fatalf("exclusion held as %+v", got)
	}
	// Round 2 is before the exclusion: site-c may still contribute.
	f.MustApply(t, f.Coord, f.Round(2, audittest.Output(1), audittest.Output(2), "site-a", "site-b", "site-c"))
	expectRejected(t, f.L, []ruleCase{
		signed("the excluded site's contribution aggregated", f.Coord, f.Round(3, audittest.Output(2), audittest.Output(3), "site-a", "site-c"), audit.ErrExcludedSite),
		signed("excluded twice", f.Admin, excl("site-c", 4, "again"), audit.ErrExclusion),
		signed("too few sites left", f.Admin, excl("site-b", 3, "norm"), audit.ErrExclusion),
	})
	// A failed round states no aggregate: nothing to refuse.
	f.MustApply(t, f.Coord, f.Failed(3, audittest.Output(2)))
	f.MustApply(t, f.Coord, f.Round(4, audittest.Output(2), audittest.Output(4), "site-a", "site-b"))

	// Readmission from round 6: round 5 still refuses site-c, round 6 takes it.
	f.MustApply(t, f.Admin, with(excl("site-c", 6, "fixed"), func(r *audit.Record) { r.MemberRemoved = false }))
	if _, ok := f.L.Exclusions(f.Study.StudyID)["site-c"]; ok {
		t.Fatal("site-c still excluded after its readmission")
	}
	f.MustApply(t, f.Coord, f.Round(5, audittest.Output(4), audittest.Output(5), "site-a", "site-c"))
}

// Two sites may be excluded from the same round, each by its own record.
func TestTwoExclusionsInOneRound(t *testing.T) {
	f := audittest.NewFixtureWith(t, audittest.Options{K: 1})
	now := time.Now().UnixNano()
	for _, s := range []string{"site-b", "site-c"} {
		f.MustApply(t, f.Admin, audit.ExclusionRecord(f.Study.StudyID, s, 1, "test", f.Admin.ID, true, now))
	}
	if n := len(f.L.Exclusions(f.Study.StudyID)); n != 2 {
		t.Fatalf("%d exclusions, want 2", n)
	}
	if _, err := f.L.Apply(audittest.Leaf(f.Admin, audit.ExclusionRecord(f.Study.StudyID, "site-a", 1, "test", f.Admin.ID, true, now))); !errors.Is(err, audit.ErrExclusion) {
		t.Fatalf("excluding the last site: %v", err)
	}
	got := audit.ExclusionsOf([]*audit.Record{
		audit.ExclusionRecord("s", "site-b", 1, "x", "admin", true, now),
		audit.ExclusionRecord("s", "site-c", 2, "y", "admin", true, now),
		audit.ExclusionRecord("s", "site-b", 3, "z", "admin", false, now),
	})
	if len(got) != 1 || got["site-c"].From != 2 || got["site-c"].Reason != "y" {
		t.Fatalf("ExclusionsOf = %+v", got)
	}
}

func asSubmitter(r *audit.Record, id string) *audit.Record {
	r.SubmitterID = id
	return r
}
