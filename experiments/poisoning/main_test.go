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

// TestShortRun runs the experiment at 2 rounds and one seed, with an
// attacker far past the bound (×10^6), and checks its outputs: a row per
// arm, seed and hospital; no honest contribution left out; the attacker
// left out of every round it sent in the bounded arm.
func TestShortRun(t *testing.T) {
	dir := t.TempDir()
	if err := run(context.Background(), 1, 2, 0.5, 1e6, []string{"va"}, dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	recs, err := expkit.ReadCSV(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+4*4 {
		t.Fatalf("%d rows, want 17", len(recs))
	}
	for _, r := range recs[1:] {
		caught, _ := strconv.Atoi(r[4])
		attacked, _ := strconv.Atoi(r[5])
		out, _ := strconv.Atoi(r[6])
		if out != 0 {
			t.Fatalf("honest contributions left out: %v", r)
		}
		if r[0] == "va-x1e+06+bound" && (attacked != 2 || caught != 2) {
			t.Fatalf("the attacker caught in %d of %d rounds: %v", caught, attacked, r)
		}
	}
	for _, f := range []string{"results.md", "accuracy_per_round.png"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
}
