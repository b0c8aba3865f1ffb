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

// TestShortRun runs the experiment at 2 rounds, one seed, without DP and
// at ε = 3 at both levels, and checks its outputs: a row per level,
// budget, seed and hospital, and the ε the log says was spent within the
// budget.
func TestShortRun(t *testing.T) {
	dir := t.TempDir()
	if err := run(context.Background(), 1, 2, []float64{3}, []string{"record", "client"}, "plaintext", dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	recs, err := expkit.ReadCSV(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1+3*4 {
		t.Fatalf("%d rows, want 13", len(recs))
	}
	for i, r := range recs[5:] {
		level := []string{"record", "client"}[i/4]
		spent, err := strconv.ParseFloat(r[6], 64)
		if r[0] != level || r[1] != "3.0000" || err != nil || spent <= 0 || spent > 3 {
			t.Fatalf("DP row %v: ε spent %v (%v)", r, spent, err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "results.md")); err != nil {
		t.Fatal(err)
	}
}
