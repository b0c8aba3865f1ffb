package audit

import (
	"errors"
	"testing"
)

func TestTermsCheck(t *testing.T) {
	initial := Hash{1}
	rec := &Record{Kind: KindStudyCreated, StudyID: "heart", ApprovedSites: []string{"b", "a"}, MinContributors: 2, Rounds: 5,
		HEParamsID: "ckks", Threshold: 2, Strategy: "fedadam", OutputModel: initial}
	good := Terms{Study: "heart", Sites: []string{"a", "b"}, Site: "a", K: 2, Rounds: 5, HEParams: "ckks", Threshold: 2, Strategy: "fedadam", InitialModel: &initial}
	if err := good.Check(rec); err != nil {
		t.Fatal(err)
	}
	other := Hash{2}
	for name, f := range map[string]func(*Terms){
		"study":         func(x *Terms) { x.Study = "lung" },
		"sites":         func(x *Terms) { x.Sites = []string{"a"} },
		"site":          func(x *Terms) { x.Site = "mallory" },
		"K":             func(x *Terms) { x.K = 1 },
		"rounds":        func(x *Terms) { x.Rounds = 6 },
		"plaintext":     func(x *Terms) { x.HEParams, x.Threshold = "", 0 },
		"params":        func(x *Terms) { x.HEParams = "ckks-other" },
		"threshold":     func(x *Terms) { x.Threshold = 3 },
		"strategy":      func(x *Terms) { x.Strategy = "fedavg" },
		"initial model": func(x *Terms) { x.InitialModel = &other },
	} {
		x := good
		f(&x)
		if err := x.Check(rec); !errors.Is(err, ErrTerms) {
			t.Errorf("%s: %v", name, err)
		}
	}
	plain := *rec
	plain.HEParamsID, plain.Threshold = "", 0
	if err := good.Check(&plain); !errors.Is(err, ErrTerms) {
		t.Errorf("a plaintext record passed for a secure study: %v", err)
	}
	notStudy := *rec
	notStudy.Kind = KindRoundCompleted
	if err := good.Check(&notStudy); !errors.Is(err, ErrTerms) {
		t.Errorf("a round record passed as the study record: %v", err)
	}
}
