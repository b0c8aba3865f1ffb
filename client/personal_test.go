package client

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/model"
	pb "github.com/fedledger/fedledger/proto"
)

// TestHoldOutIsStratifiedAndStable: the validation part that chooses a
// site's personal model is carved from its training split only, keeps each
// label's share, covers every row exactly once, and is the same every time.
func TestHoldOutIsStratifiedAndStable(t *testing.T) {
	d, _, err := train.LoadHeart("hungary", train.HeartSplitSeed)
	if err != nil {
		t.Fatal(err)
	}
	fit, val := holdOut(d, 0.25, 7)
	if fit.Len()+val.Len() != d.Len() {
		t.Fatalf("%d + %d rows of %d", fit.Len(), val.Len(), d.Len())
	}
	pos := func(x *train.Dataset) (n float64) {
		for _, y := range x.Y {
			n += y
		}
		return n
	}
	if got, want := pos(val), pos(d)*0.25; got < want-1 || got > want+1 {
		t.Fatalf("validation has %v positives, want about %v", got, want)
	}
	again, _ := holdOut(d, 0.25, 7)
	for i := range fit.X {
		if &again.X[i][0] != &fit.X[i][0] {
			t.Fatal("two hold-outs with one seed differ")
		}
	}
}

func TestPersonalConfigValidate(t *testing.T) {
	tc := model.DefaultTrainConfig()
	for name, p := range map[string]PersonalConfig{
		"unknown method":          {Method: "fedper", Train: tc},
		"ditto with λ = 0":        {Method: train.PersonalDitto, Train: tc, Lambdas: []float64{1, 0}},
		"ditto without λ":         {Method: train.PersonalDitto, Train: tc},
		"negative intercept λ":    {Method: train.PersonalIntercept, Train: tc, Lambdas: []float64{-1}},
		"validation fraction 1":   {Method: train.PersonalFineTune, Train: tc, ValidationFraction: 1},
		"no personal train steps": {Method: train.PersonalFineTune, Train: model.TrainConfig{Optimizer: "adam", LearningRate: 0.1, BatchSize: 4}},
	} {
		if err := p.Validate(); !errors.Is(err, train.ErrPersonal) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := (PersonalConfig{Method: train.PersonalIntercept, Train: tc, Lambdas: []float64{0, 1}}).Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestPersonalModelIsKept: a personalising site keeps its personal model
// in a 0600 model file of the study, reports its test metrics with the
// update, and after a restart continues from the model it kept.
func TestPersonalModelIsKept(t *testing.T) {
	f := secureFixture(t)
	e := f.clone(t, "site-a")
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps, tc.LearningRate = 0, 50, 0.01
	e.edit = func(c *Config) {
		c.Personal = &PersonalConfig{Method: train.PersonalIntercept, Train: tc, Lambdas: []float64{0.1, 0}}
	}
	e.c = e.restart(t)
	task := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	if err := e.c.trainRound(t.Context(), e.coord, task); err != nil {
		t.Fatal(err)
	}
	hdr := e.coord.updates[0].header
	if hdr.PersonalTest == nil || hdr.PersonalTest.N != uint64(e.c.test.Len()) {
		t.Fatalf("personal metrics with the update: %v", hdr.PersonalTest)
	}
	fi, err := os.Stat(e.c.personalFile())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("personal model file: %v, %v", fi, err)
	}
	kept := slices.Clone(e.c.personal)
	restarted := e.restart(t)
	if got := restarted.previousPersonal(kept); !slices.Equal(got, kept) {
		t.Fatalf("after a restart the site continues from %v, it kept %v", got, kept)
	}
}

// TestTrialUsesValidationOnly: in a tuning trial (a study with a
// validation fraction) the site trains on its training split less the
// held-out part, signs its figures on that part under val_* names, never
// evaluates on its test split, and does not personalise; the held-out rows
// are the same in every trial.
func TestTrialUsesValidationOnly(t *testing.T) {
	f := secureFixture(t)
	e := f.clone(t, "site-a")
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps, tc.LearningRate = 0, 5, 0.01
	e.edit = func(c *Config) {
		c.Personal = &PersonalConfig{Method: train.PersonalIntercept, Train: tc, Lambdas: []float64{0}}
	}
	e.spec = proto.Clone(f.spec).(*pb.StudySpec)
	e.spec.ValidationFraction = 0.25
	e.c = e.restart(t)
	task := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	if err := e.c.trainRound(t.Context(), e.coord, task); err != nil {
		t.Fatal(err)
	}
	hdr := e.coord.updates[0].header
	all := e.c.train.Len()
	nVal := e.c.eval.Len()
	if nVal < all/5 || nVal > all/3 || e.c.fit.Len()+nVal != all {
		t.Fatalf("held out %d of %d training rows, fit on %d; want about a quarter", nVal, all, e.c.fit.Len())
	}
	if hdr.NumSamples != uint64(e.c.fit.Len()) {
		t.Fatalf("the update counts %d samples, the site trained on %d", hdr.NumSamples, e.c.fit.Len())
	}
	if hdr.PersonalTest != nil {
		t.Fatalf("a trial's update carries personal metrics: %v", hdr.PersonalTest)
	}
	names := map[string]float64{}
	for _, m := range hdr.Evaluation {
		names[m.Name] = m.Value
		if strings.Contains(m.Name, "test") || strings.HasPrefix(m.Name, "personal") {
			t.Errorf("a trial's evaluation names %q", m.Name)
		}
	}
	if names["val_n"] != float64(nVal) {
		t.Fatalf("val_n = %v, want %d", names["val_n"], nVal)
	}
	for _, n := range []string{"global_val_accuracy", "global_val_auc", "global_val_loss"} {
		if _, ok := names[n]; !ok {
			t.Errorf("no %s in %v", n, names)
		}
	}
	if hdr.ParentTest.N != uint64(nVal) {
		t.Fatalf("parent evaluated on %d rows, the validation part has %d", hdr.ParentTest.N, nVal)
	}
	// Another trial holds out the same rows.
	again := e.restart(t)
	if !slices.EqualFunc(again.eval.X, e.c.eval.X, slices.Equal) {
		t.Fatal("two trials held out different rows")
	}
	// An ordinary study evaluates on the test split.
	e.spec = f.spec
	plain := e.restart(t)
	if plain.eval != plain.test || plain.fit != plain.train || !plain.personalises() {
		t.Fatal("an ordinary study does not train on the training split and evaluate on the test split")
	}
}
