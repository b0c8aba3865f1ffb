package client

import (
	"errors"
	"testing"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/model"
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
