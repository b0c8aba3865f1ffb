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

// TestQuickRunWritesWellFormedResults runs the experiment's quick sweep and
// checks its outputs, so the experiment cannot rot.
func TestQuickRunWritesWellFormedResults(t *testing.T) {
	dir := t.TempDir()
	if err := run(context.Background(), 1, true, dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("results.csv: %d rows, %v", len(rows), err)
	}
	for _, r := range rows[1:] {
		for i, col := range []string{"time_ratio", "bytes_ratio"} {
			v, err := strconv.ParseFloat(r[5+3*i], 64)
			if err != nil || v <= 1 {
				t.Errorf("%s = %q: secure must cost more than plaintext", col, r[5+3*i])
			}
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if !strings.Contains(string(md), "| sweep | parameters |") || !strings.Contains(string(md), "audit append") {
		t.Fatalf("results.md:\n%s", md)
	}
	for _, p := range []string{"overhead_vs_params.png", "overhead_vs_clients.png"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
			t.Errorf("%s: not a PNG (%v)", p, err)
		}
	}
}
