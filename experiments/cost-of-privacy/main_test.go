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

// TestQuickRunWritesWellFormedResults runs the experiment's quick grid (one
// cell) and checks its outputs, so the experiment cannot rot.
func TestQuickRunWritesWellFormedResults(t *testing.T) {
	dir := t.TempDir()
	g := grid{params: []int{1_000}, clients: []int{2}, rounds: 1}
	if err := run(context.Background(), g, dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("results.csv: %d rows, %v", len(rows), err)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	num := func(name string) float64 {
		t.Helper()
		i, ok := col[name]
		if !ok {
			t.Fatalf("results.csv has no %s column: %v", name, rows[0])
		}
		v, err := strconv.ParseFloat(rows[1][i], 64)
		if err != nil {
			t.Fatalf("%s = %q: %v", name, rows[1][i], err)
		}
		return v
	}
	for _, name := range []string{"time_ratio", "bytes_ratio"} {
		if v := num(name); v <= 1 {
			t.Errorf("%s = %v: secure must cost more than plaintext", name, v)
		}
	}
	if v := num("client_encode"); v <= 0 {
		t.Errorf("encrypt phase = %v", v)
	}
	// Both contributors sketched: a decryptor received two 32-byte
	// sketches, not the other contribution.
	if v, c := num("decryptor_check_bytes"), num("contribution_bytes"); v != 2*32 || c < 16*1000 {
		t.Errorf("a decryptor received %v bytes to check the aggregate (a contribution is %v)", v, c)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	if !strings.Contains(string(md), "| parameters | clients |") || !strings.Contains(string(md), "audit append") || !strings.Contains(string(md), "| 10^3 | 2 |") {
		t.Fatalf("results.md:\n%s", md)
	}
	for _, p := range []string{"time_vs_params.png", "time_vs_clients.png", "bytes_vs_params.png", "bytes_vs_clients.png"} {
		if b, err := os.ReadFile(filepath.Join(dir, p)); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
			t.Errorf("%s: not a PNG (%v)", p, err)
		}
	}
	if err := run(context.Background(), grid{rounds: 1}, dir, io.Discard); err == nil {
		t.Error("an empty grid ran")
	}
	// -resume keeps the measured cell: nothing is re-measured, so the files
	// come back byte for byte.
	before, _ := os.ReadFile(filepath.Join(dir, "results.csv"))
	g.resume = true
	if err := run(context.Background(), g, dir, io.Discard); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "results.csv")); string(after) != string(before) {
		t.Fatalf("resume re-measured the kept cell:\n%s\nbecame\n%s", before, after)
	}
	// A results.csv that is not this experiment's is an error, not a restart.
	os.WriteFile(filepath.Join(dir, "results.csv"), []byte("params,clients\n1000,2\n"), 0o644)
	if err := run(context.Background(), g, dir, io.Discard); err == nil || !strings.Contains(err.Error(), "column plaintext_round_s") {
		t.Fatalf("resume from a foreign results.csv: %v", err)
	}
}
