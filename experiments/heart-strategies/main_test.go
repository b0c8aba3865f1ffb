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
	if got := strings.Join(recs[0][5:9], ","); got != "federated_acc,personalised_acc,alone_acc,pooled_acc" {
		t.Fatalf("CSV columns %v", recs[0])
	}
	personalised := 0
	for _, r := range recs[1:] {
		for i, col := range r[5:] {
			if col == "" && (i == 1 || i == 5) { // no personal model in this method
				continue
			}
			v, err := strconv.ParseFloat(col, 64)
			if err != nil || v < 0 || v > 1 {
				t.Fatalf("bad metric %q in %v", col, r)
			}
			if i == 1 {
				personalised++
			}
		}
	}
	if personalised == 0 {
		t.Fatal("no personalised accuracy in results.csv")
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
