package main

import (
	"strings"
	"testing"

	pb "github.com/fedledger/fedledger/proto"
)

// TestPrintStatusShowsPrivacyAndFlags: study status shows a DP study's
// budget and spend, and the last round's norm-check exclusions and
// anomaly flags, in text and in JSON.
func TestPrintStatusShowsPrivacyAndFlags(t *testing.T) {
	s := &pb.StudyStatus{StudyId: "heart", Mode: "secure", Phase: "round_open", Round: 4, Rounds: 20,
		DpEpsilonBudget: 3, DpDelta: 1e-5, DpEpsilonSpent: 1.25,
		LastExcluded: []string{"va"}, LastFlags: []*pb.AnomalyFlag{{Site: "va", Reason: "projection_ratio=0.95 is 17 robust z from median 0.1"}}}
	var text, js strings.Builder
	if err := printStatus(&text, s, false); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"differential privacy: each hospital has spent ε = 1.250 of its budget 3 (δ = 1e-05); 1.750 left",
		"last round left out, past the norm bound: va",
		"last round's anomaly flag at va: projection_ratio=0.95 is 17 robust z from median 0.1",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, text.String())
		}
	}
	if err := printStatus(&js, s, true); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"dp_epsilon_spent": 1.25`, `"last_norm_excluded": [`, `"va": "projection_ratio=0.95`} {
		if !strings.Contains(js.String(), want) {
			t.Errorf("status JSON lacks %q:\n%s", want, js.String())
		}
	}
}
