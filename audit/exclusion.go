package audit

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// An admin excludes a site from a study's later rounds with a
// membership-change record (KindMembershipChange) that the admin signs:
// StudyID, MemberID the site, MemberRole RoleContributor, MemberRemoved
// true, Round the first round the exclusion applies to, and the reason as
// the parameter ParamReason. The same record with MemberRemoved false
// readmits an excluded site. Every audit node then refuses a completed
// round that aggregates the site's contribution: the coordinator alone
// cannot exclude a hospital (it cannot sign an admin's record), nor quietly
// keep using one an admin excluded.
//
// An excluded site stays a key holder of a secure study: it may still give
// decryption shares and countersignatures (the threshold t may need it),
// but its updates no longer count.

// RoleContributor is the MemberRole of an exclusion or a readmission.
const RoleContributor = "contributor"

// ParamReason is the reason an admin gives for an exclusion or a
// readmission.
const ParamReason = "reason"

// ErrExclusion: an exclusion or readmission record is malformed or does not
// fit the study.
var ErrExclusion = errors.New("audit: invalid exclusion")

// ErrExcludedSite: a completed round aggregates a contribution from a site
// an admin excluded from that round on.
var ErrExcludedSite = errors.New("audit: the round aggregates a contribution from a site an admin excluded")

// Exclusion is an admin's exclusion of a site, as the log holds it.
type Exclusion struct {
	Site string `json:"site"`
	// From is the first round the site may not contribute to.
	From   uint64 `json:"from_round"`
	By     string `json:"by"`
	Reason string `json:"reason"`
}

// ExclusionRecord is the record an admin signs to exclude site from study
// on from round from (readmit: false readmits it).
func ExclusionRecord(study, site string, from uint64, reason, admin string, exclude bool, timestampUnixNs int64) *Record {
	return &Record{Kind: KindMembershipChange, StudyID: study, Round: from, MemberID: site, MemberRole: RoleContributor,
		MemberRemoved: exclude, Hyperparameters: []Param{{Name: ParamReason, Value: reason}}, SubmitterID: admin,
		TimestampUnixNs: timestampUnixNs}
}

// checkMembership validates an admin's exclusion or readmission of a site
// against the study's state and returns the new state.
func checkMembership(st *studyState, rec *Record) (*studyState, error) {
	bad := func(format string, a ...any) (*studyState, error) {
		return nil, fmt.Errorf("%w: %s", ErrExclusion, fmt.Sprintf(format, a...))
	}
	rules := &st.rules
	reason := strings.TrimSpace(rec.Param(ParamReason))
	switch {
	case rec.MemberRole != RoleContributor:
		return bad("member role %q, want %q", rec.MemberRole, RoleContributor)
	case !slices.Contains(rules.ApprovedSites, rec.MemberID):
		return bad("%q is not an approved site of the study", rec.MemberID)
	case reason == "":
		return bad("no reason given (parameter %q)", ParamReason)
	case len(rec.Hyperparameters) != 1:
		return bad("%d parameters, want only %q", len(rec.Hyperparameters), ParamReason)
	case rec.Round <= st.lastRound:
		return bad("round %d is already on the log (the last is %d): an exclusion applies to later rounds only", rec.Round, st.lastRound)
	case rec.Round > uint64(rules.Rounds):
		return bad("round %d of a study of %d rounds", rec.Round, rules.Rounds)
	case rec.ParentModel != Hash{} || rec.OutputModel != Hash{} || rec.AggregateHash != Hash{} || len(rec.Metrics) > 0 || len(rec.ApprovedSites) > 0:
		return bad("the record carries round or study fields")
	}
	if err := absent(rec, "exclusion", fContributions|fDecryptionShares|fCountersignatures|fKeyHolders|fCertificates|fCollectiveKey|fEvaluations); err != nil {
		return nil, err
	}
	_, out := st.excluded[rec.MemberID]
	switch {
	case rec.MemberRemoved && out:
		return bad("%q is already excluded from round %d", rec.MemberID, st.excluded[rec.MemberID].From)
	case !rec.MemberRemoved && !out:
		return bad("%q is not excluded: nothing to readmit", rec.MemberID)
	}
	next := *st
	next.excluded = maps.Clone(st.excluded)
	if next.excluded == nil {
		next.excluded = map[string]Exclusion{}
	}
	if !rec.MemberRemoved {
		delete(next.excluded, rec.MemberID)
		return &next, nil
	}
	if left := len(rules.ApprovedSites) - len(next.excluded) - 1; left < int(rules.MinContributors) {
		return bad("excluding %q would leave %d sites, fewer than the study's minimum of %d contributors", rec.MemberID, left, rules.MinContributors)
	}
	next.excluded[rec.MemberID] = Exclusion{Site: rec.MemberID, From: rec.Round, By: rec.SubmitterID, Reason: reason}
	return &next, nil
}

// checkExcluded refuses a completed round that aggregates a contribution
// from an excluded site.
func checkExcluded(st *studyState, rec *Record) error {
	for _, c := range rec.Contributions {
		if e, out := st.excluded[c.Site]; out && rec.Round >= e.From {
			return fmt.Errorf("%w: %q contributed to round %d, excluded from round %d by %s (%s)", ErrExcludedSite, c.Site, rec.Round, e.From, e.By, e.Reason)
		}
	}
	return nil
}

// Exclusions returns the sites an admin has excluded from study (and not
// readmitted), by site.
func (l *Ledger) Exclusions(study string) map[string]Exclusion {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.studies[study]; st != nil {
		return maps.Clone(st.excluded)
	}
	return nil
}

// ExclusionsOf replays a study's records (in log order) and returns its
// exclusions in force after them, by site. It does not check the records
// (ReplayBundle does).
func ExclusionsOf(recs []*Record) map[string]Exclusion {
	out := map[string]Exclusion{}
	for _, r := range recs {
		if r.Kind != KindMembershipChange || r.MemberRole != RoleContributor {
			continue
		}
		if r.MemberRemoved {
			out[r.MemberID] = Exclusion{Site: r.MemberID, From: r.Round, By: r.SubmitterID, Reason: strings.TrimSpace(r.Param(ParamReason))}
		} else {
			delete(out, r.MemberID)
		}
	}
	return out
}
