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
	if err := run(context.Background(), true, dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) != 4 || rows[1][0] != "append" || rows[2][0] != "verify" {
		t.Fatalf("results.csv %v: %v", rows, err)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if !strings.Contains(string(md), "### Appends") || !strings.Contains(string(md), "### Offline verification") {
		t.Fatalf("results.md:\n%s", md)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "verify_time.png")); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
		t.Fatalf("plot: %v", err)
	}
}
