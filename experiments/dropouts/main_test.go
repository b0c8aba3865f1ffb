package main

import (
	"context"
	"encoding/csv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

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
	if err != nil || len(rows) != 5 {
		t.Fatalf("results.csv %v: %v", rows, err)
	}
	for _, r := range rows[1:] {
		// With one hospital lost of six (t = 3), every round succeeds.
		if r[3] != "1" {
			t.Errorf("%s with %s lost: %s of %s succeeded (%s)", r[0], r[1], r[3], r[2], r[5])
		}
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if !strings.Contains(string(md), "| mode | lost after upload |") {
		t.Fatalf("results.md:\n%s", md)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "success_vs_dropouts.png")); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
		t.Fatalf("plot: %v", err)
	}
}
