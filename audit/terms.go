package audit

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
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
	// Params are hyperparameters as announced (learning rates, local
	// steps, a trial's validation fraction): each must be the record's,
	// a parameter the record does not carry counting as "". Use
	// StudyParam to format them as the study record does.
	Params []Param
}

// StudyParam formats a study hyperparameter as study records carry it:
// floats in the shortest form that round-trips, integers in decimal.
func StudyParam(name string, v any) Param {
	switch v := v.(type) {
	case float64:
		return Param{Name: name, Value: strconv.FormatFloat(v, 'g', -1, 64)}
	case int:
		return Param{Name: name, Value: strconv.Itoa(v)}
	case int64:
		return Param{Name: name, Value: strconv.FormatInt(v, 10)}
	case uint32:
		return Param{Name: name, Value: strconv.FormatUint(uint64(v), 10)}
	case string:
		return Param{Name: name, Value: v}
	}
	panic(fmt.Sprintf("audit: study parameter %s of type %T", name, v))
}

// Param returns the value of the record's hyperparameter name ("" when
// it has none).
func (r *Record) Param(name string) string {
	for _, p := range r.Hyperparameters {
		if p.Name == name {
			return p.Value
		}
	}
	return ""
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
	for _, p := range t.Params {
		if v := rec.Param(p.Name); v != p.Value {
			return bad("its %s is %q, announced %q", p.Name, v, p.Value)
		}
	}
	return nil
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

func sameSet(a, b []string) bool { return slices.Equal(sorted(a), sorted(b)) }
