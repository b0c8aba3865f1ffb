package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/fedledger/fedledger/experiments/internal/expkit"
)

// TestShortRun runs the experiment at 3 rounds and one seed, with a scaled
// attacker far past the bound (×10^6), and checks its outputs: a row per
// arm, seed and hospital; no honest contribution left out; the attacker
// left out of every round it sent in the bounded arm, and, once the admin
// has excluded it, sending no more.
func TestShortRun(t *testing.T) {
	dir := t.TempDir()
	if err := run(context.Background(), 1, 3, 0.5, 1e6, "va", []string{"scaled"}, dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	recs, err := expkit.ReadCSV(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+7*4 {
		t.Fatalf("%d rows, want 29", len(recs))
	}
	for _, r := range recs[1:] {
		attacked, _ := strconv.Atoi(r[8])
		caught, _ := strconv.Atoi(r[9])
		out, _ := strconv.Atoi(r[12])
		if out != 0 {
			t.Fatalf("honest contributions left out: %v", r)
		}
		switch r[0] {
		case "without-attacker":
			// va is excluded from round 1: three contributions a round.
			if honest, _ := strconv.Atoi(r[11]); honest != 9 {
				t.Fatalf("without the attacker, %d contributions in 3 rounds, want 9: %v", honest, r)
			}
		case "scaled-x1e+06+bound":
			if attacked != 3 || caught != 3 {
				t.Fatalf("the attacker left out of %d of %d rounds: %v", caught, attacked, r)
			}
		case "scaled-x1e+06+bound+exclusion":
			// Left out of round 1, then excluded: it sends nothing more
			// (round 2 may have its update already, and leave it out).
			if caught != attacked || attacked < 1 || attacked > 2 {
				t.Fatalf("after the exclusion the attacker sent %d rounds, %d left out: %v", attacked, caught, r)
			}
		}
	}
	for _, f := range []string{"results.md", "accuracy_per_round.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}
