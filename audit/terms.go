package audit

import (
	"errors"
	"fmt"
	"slices"
)

// ErrTerms: an admin-signed study record does not say what a participant
// was told about the study.
var ErrTerms = errors.New("audit: the signed study record does not match")

// Terms are a study's rules as one participant knows them: the
// coordinator from its configuration, a hospital from what the
// coordinator announced. Check compares them with the study record an
// admin signed, the one check both sides use. Zero fields are not
// checked, except that a study is plaintext exactly when HEParams is "".
type Terms struct {
	Study     string
	Sites     []string // the approved sites, in any order
	Site      string   // a site that must be approved
	K         int
	Rounds    int
	HEParams  string
	Threshold int
	Strategy  string
	// InitialModel is the round-0 model's hash (nil: not checked).
	InitialModel *Hash
}

// Check returns why rec is not the study record of these terms, or nil.
func (t Terms) Check(rec *Record) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrTerms, fmt.Sprintf(format, a...))
	}
	switch {
	case rec.Kind != KindStudyCreated:
		return bad("the record is %s, not %s", rec.Kind, KindStudyCreated)
	case rec.StudyID != t.Study:
		return bad("the record is for study %q, not %q", rec.StudyID, t.Study)
	case t.Sites != nil && !sameSet(t.Sites, rec.ApprovedSites):
		return bad("it approves %v, configured %v", sorted(rec.ApprovedSites), sorted(t.Sites))
	case t.Site != "" && !slices.Contains(rec.ApprovedSites, t.Site):
		return bad("site %q is not among its approved sites %v", t.Site, rec.ApprovedSites)
	case t.K != 0 && int(rec.MinContributors) != t.K:
		return bad("it says K=%d, announced %d", rec.MinContributors, t.K)
	case t.Rounds != 0 && int(rec.Rounds) != t.Rounds:
		return bad("it allows %d rounds, announced %d", rec.Rounds, t.Rounds)
	case rec.HEParamsID != t.HEParams && t.HEParams == "":
		return bad("it is a secure study (%s), announced as plaintext", rec.HEParamsID)
	case rec.HEParamsID != t.HEParams:
		return bad("its HE parameters are %q, announced %q", rec.HEParamsID, t.HEParams)
	case t.Threshold != 0 && int(rec.Threshold) != t.Threshold:
		return bad("its decryption threshold is t=%d, announced %d", rec.Threshold, t.Threshold)
	case t.Strategy != "" && rec.Strategy != t.Strategy:
		return bad("its strategy is %q, announced %q", rec.Strategy, t.Strategy)
	case t.InitialModel != nil && rec.OutputModel != *t.InitialModel:
		return bad("its initial model is %x, this one is %x", rec.OutputModel[:8], t.InitialModel[:8])
	}
	return nil
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func sameSet(a, b []string) bool { return slices.Equal(sorted(a), sorted(b)) }
