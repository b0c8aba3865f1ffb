package main

import (
	"context"
	"encoding/csv"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestShortRun runs the experiment in short mode (1 seed, 2 rounds) and
// checks its outputs are well formed, so the experiment cannot rot.
func TestShortRun(t *testing.T) {
	dir := t.TempDir()
	if err := run(context.Background(), 1, 2, []string{"plaintext", "secure"}, dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + 2*len(methods)*4; len(recs) != want {
		t.Fatalf("%d CSV rows, want %d", len(recs), want)
	}
	for _, r := range recs[1:] {
		for _, col := range r[5:] {
			v, err := strconv.ParseFloat(col, 64)
			if err != nil || v < 0 || v > 1 {
				t.Fatalf("bad accuracy %q in %v", col, r)
			}
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, m := range methods {
		for _, mode := range []string{"plaintext", "secure"} {
			if !strings.Contains(string(md), "| "+m.name+" | "+mode+" |") {
				t.Errorf("results.md has no row for %s %s", m.name, mode)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "accuracy_per_round.png")); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
		t.Errorf("plot: %v", err)
	}
}
