// Command cost-of-privacy measures what secure aggregation costs: whole
// rounds of a real federation (coordinator and N hospital clients over gRPC
// with mutual TLS on loopback, every round committed to a one-node audit
// log), run in plaintext and in secure mode on the same model, clients and
// data in the same run. It measures the grid of model sizes
// (10^3..10^6 parameters) by numbers of clients (2..32), with what a
// decryptor receives to check each aggregate, and writes results.csv,
// results.md and plots beside itself. The files are
// rewritten after every cell, so a long run that is stopped keeps what it
// measured.
//
//	go run ./experiments/cost-of-privacy [-rounds 2] [-params 1000,...] [-clients 2,...] [-quick] [-out DIR]
package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/experiments/internal/expkit"
)

func main() {
	expkit.LimitMemory()
	rounds := flag.Int("rounds", 2, "rounds per study (the mean round time is reported)")
	params := flag.String("params", "1000,10000,100000,1000000", "model sizes, comma-separated")
	clients := flag.String("clients", "2,4,8,16,32", "numbers of clients, comma-separated")
	resume := flag.Bool("resume", false, "keep the cells already in DIR/results.csv and measure only the others")
	quick := flag.Bool("quick", false, "a tiny grid (tests)")
	out := flag.String("out", "experiments/cost-of-privacy", "output directory")
	flag.Parse()
	g := grid{rounds: *rounds, resume: *resume}
	var err error
	if g.params, err = ints(*params); err == nil {
		g.clients, err = ints(*clients)
	}
	if err != nil {
		log.Fatalf("cost-of-privacy: %v", err)
	}
	if *quick {
		g = grid{params: []int{1_000}, clients: []int{2}, rounds: 1, resume: *resume}
	}
	if err := run(context.Background(), g, *out, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

// grid is what to measure.
type grid struct {
	params, clients []int
	rounds          int
	// resume keeps the cells of an earlier run's results.csv (same
	// rounds) and measures only the missing ones.
	resume bool
}

func ints(list string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// cell is one (model size, clients) point of the grid.
type cell struct {
	params, clients int
	plain, sec      *expkit.RunResult
}

func (c cell) timeRatio() float64  { return c.sec.RoundSeconds / c.plain.RoundSeconds }
func (c cell) bytesRatio() float64 { return c.sec.WireBytesPerRound / c.plain.WireBytesPerRound }

// checkContributions is what a decryptor received to check an aggregate,
// in contributions' worth.
func (c cell) checkContributions() float64 {
	return c.sec.CheckBytesPerDecryption / c.sec.ContributionBytes
}

var phases = []string{"client_train", "client_encode", "client_upload", "coordinator_aggregate", "client_sketch", "coordinator_sketch", "client_decryption_share",
	"coordinator_decryption_shares", "coordinator_combine", "audit_append"}

func run(ctx context.Context, g grid, outDir string, progress io.Writer) error {
	if len(g.params) == 0 || len(g.clients) == 0 || g.rounds < 1 {
		return fmt.Errorf("cost-of-privacy: nothing to measure (params %v, clients %v, rounds %d)", g.params, g.clients, g.rounds)
	}
	var cells, done []cell
	if g.resume {
		var err error
		if done, err = readCells(filepath.Join(outDir, "results.csv")); err != nil {
			return err
		}
	}
	total, start := len(g.params)*len(g.clients), time.Now()
	study := func(params, clients int, mode string) (*expkit.RunResult, error) {
		res, err := expkit.Run(ctx, expkit.RunConfig{Clients: clients, Mode: mode, Model: expkit.MLP(params), Rounds: g.rounds,
			LocalSteps: 10, Seed: 1})
		if err != nil {
			return nil, fmt.Errorf("%s %d params %d clients: %w", mode, params, clients, err)
		}
		for _, r := range res.Rounds {
			if r.Failed {
				return nil, fmt.Errorf("%s %d params %d clients: round %d failed: %s", mode, params, clients, r.Round, r.Reason)
			}
		}
		return res, nil
	}
	// Cheap cells first: the grid's corner takes most of the time.
	for _, n := range g.params {
		for _, k := range g.clients {
			c := cell{params: n, clients: k}
			if i := slices.IndexFunc(done, func(d cell) bool { return d.params == n && d.clients == k }); i >= 0 {
				cells = append(cells, done[i])
				fmt.Fprintf(progress, "[%2d/%d] %8d params %2d clients: kept from results.csv\n", len(cells), total, n, k)
				continue
			}
			var err error
			if c.plain, err = study(n, k, coordinator.ModePlaintext); err != nil {
				return err
			}
			if c.sec, err = study(n, k, coordinator.ModeSecure); err != nil {
				return err
			}
			cells = append(cells, c)
			fmt.Fprintf(progress, "[%2d/%d %s] %8d params %2d clients: plaintext %.3fs %s/round, secure %.3fs %s/round (%.1fx time, %.1fx bytes)\n",
				len(cells), total, time.Since(start).Round(time.Second), n, k, c.plain.RoundSeconds, mib(c.plain.WireBytesPerRound),
				c.sec.RoundSeconds, mib(c.sec.WireBytesPerRound), c.timeRatio(), c.bytesRatio())
			if err := write(outDir, cells, g.rounds); err != nil {
				return err
			}
		}
	}
	return write(outDir, cells, g.rounds) // also when every cell was kept: redraws the plots
}

// readCells reads the cells of an earlier run back from its results.csv.
func readCells(path string) ([]cell, error) {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	recs, err := csv.NewReader(fh).ReadAll()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(recs) == 0 {
		return nil, nil
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	var cells []cell
	for line, r := range recs[1:] {
		bad := func(name string) error { return fmt.Errorf("%s line %d: column %s", path, line+2, name) }
		num := func(name string) (float64, error) {
			i, ok := col[name]
			if !ok || i >= len(r) {
				return 0, bad(name)
			}
			v, err := strconv.ParseFloat(r[i], 64)
			if err != nil {
				return 0, fmt.Errorf("%w: %v", bad(name), err)
			}
			return v, nil
		}
		var c cell
		c.plain, c.sec = &expkit.RunResult{}, &expkit.RunResult{Phases: map[string]float64{}}
		var p, k float64
		for _, fld := range []struct {
			name string
			dst  *float64
		}{{"params", &p}, {"clients", &k}, {"plaintext_round_s", &c.plain.RoundSeconds}, {"secure_round_s", &c.sec.RoundSeconds},
			{"plaintext_bytes_per_round", &c.plain.WireBytesPerRound}, {"secure_bytes_per_round", &c.sec.WireBytesPerRound}, {"key_setup_s", &c.sec.KeySetupSeconds},
			{"contribution_bytes", &c.sec.ContributionBytes}, {"decryptor_check_bytes", &c.sec.CheckBytesPerDecryption}} {
			if *fld.dst, err = num(fld.name); err != nil {
				return nil, err
			}
		}
		c.params, c.clients = int(p), int(k)
		for _, ph := range phases {
			if c.sec.Phases[ph], err = num(ph); err != nil {
				return nil, err
			}
		}
		cells = append(cells, c)
	}
	return cells, nil
}

func mib(b float64) string { return fmt.Sprintf("%.2f MiB", b/(1<<20)) }

// f writes a CSV number exactly (shortest round-trip form), so -resume
// reads back the very values it measured.
func f(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

func pow10(n int) string {
	if s := strconv.Itoa(n); strings.Trim(s[1:], "0") == "" && s[0] == '1' {
		return fmt.Sprintf("10^%d", len(s)-1)
	}
	return strconv.Itoa(n)
}

func write(dir string, cells []cell, rounds int) error {
	header := []string{"params", "clients", "plaintext_round_s", "secure_round_s", "time_ratio", "plaintext_bytes_per_round", "secure_bytes_per_round", "bytes_ratio", "key_setup_s",
		"contribution_bytes", "decryptor_check_bytes", "decryptor_check_contributions"}
	header = append(header, phases...)
	var rows [][]string
	for _, c := range cells {
		r := []string{strconv.Itoa(c.params), strconv.Itoa(c.clients), f(c.plain.RoundSeconds), f(c.sec.RoundSeconds),
			f(c.timeRatio()), f(c.plain.WireBytesPerRound), f(c.sec.WireBytesPerRound), f(c.bytesRatio()), f(c.sec.KeySetupSeconds),
			f(c.sec.ContributionBytes), f(c.sec.CheckBytesPerDecryption), f(c.checkContributions())}
		for _, ph := range phases {
			r = append(r, f(c.sec.Phases[ph]))
		}
		rows = append(rows, r)
	}
	if err := expkit.WriteCSV(filepath.Join(dir, "results.csv"), header, rows); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Machine: %s. Command: `go run ./experiments/cost-of-privacy -rounds %d`. Each cell is the mean over %d rounds of one study; every round is committed to a one-node audit log in both modes. Secure mode: t = N/2 + 1.\n\n", expkit.Machine(), rounds, rounds)
	fmt.Fprintf(&md, "### Secure vs plaintext, whole rounds\n\n")
	var t [][]string
	for _, c := range cells {
		t = append(t, []string{pow10(c.params), strconv.Itoa(c.clients), fmt.Sprintf("%.3f", c.plain.RoundSeconds), fmt.Sprintf("%.3f", c.sec.RoundSeconds),
			fmt.Sprintf("%.1f×", c.timeRatio()), mib(c.plain.WireBytesPerRound), mib(c.sec.WireBytesPerRound),
			fmt.Sprintf("%.1f×", c.bytesRatio()), fmt.Sprintf("%.2f", c.sec.KeySetupSeconds)})
	}
	expkit.WriteTable(&md, []string{"parameters", "clients", "plaintext s/round", "secure s/round", "time ×", "plaintext bytes/round", "secure bytes/round", "bytes ×", "key setup s (once)"}, t)
	fmt.Fprintf(&md, "\n### What a decryptor receives to check the aggregate\n\n")
	fmt.Fprintf(&md, "Every contributor signs a sketch of its contribution (2 random linear combinations per prime, 32 bytes) once the aggregate is committed; a decryptor checks the aggregate against them and downloads only the contributions without one. Before sketches, it downloaded the N − 1 other contributions.\n\n")
	t = nil
	for _, c := range cells {
		t = append(t, []string{pow10(c.params), strconv.Itoa(c.clients), mib(c.sec.ContributionBytes), fmt.Sprintf("%.0f B", c.sec.CheckBytesPerDecryption),
			fmt.Sprintf("%.2g", c.checkContributions()), strconv.Itoa(c.clients - 1)})
	}
	expkit.WriteTable(&md, []string{"parameters", "clients", "one contribution", "received to check, per decryptor", "in contributions", "before (re-sum)"}, t)
	fmt.Fprintf(&md, "\n### Where a secure round's time goes (seconds; client phases are per client, in parallel)\n\n")
	t = nil
	for _, c := range cells {
		r := []string{pow10(c.params), strconv.Itoa(c.clients)}
		for _, ph := range phases {
			r = append(r, fmt.Sprintf("%.3f", c.sec.Phases[ph]))
		}
		t = append(t, r)
	}
	expkit.WriteTable(&md, []string{"parameters", "clients", "train", "encrypt", "upload", "aggregate", "sketch (client)", "collect sketches (coord.)", "decryption share (client)", "collect shares (coord.)", "combine+decode", "audit append"}, t)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	return plots(dir, cells)
}

// plots draws the time and bytes ratios against model size (a line per
// number of clients) and against clients (a line per model size).
func plots(dir string, cells []cell) error {
	var params, clients []int
	for _, c := range cells {
		if !slices.Contains(params, c.params) {
			params = append(params, c.params)
		}
		if !slices.Contains(clients, c.clients) {
			clients = append(clients, c.clients)
		}
	}
	type ratio func(c cell) (float64, bool)
	timeR := func(c cell) (float64, bool) { return c.timeRatio(), true }
	bytesR := func(c cell) (float64, bool) { return c.bytesRatio(), true }
	// series collects, for each fixed value, the points along the other axis.
	series := func(byParams bool, fixed []int, r ratio, name string, dashed bool) []expkit.Series {
		var out []expkit.Series
		for _, v := range fixed {
			s := expkit.Series{Name: fmt.Sprintf(name, v), Dashed: dashed}
			if byParams {
				s.Name = fmt.Sprintf(name, pow10(v))
			}
			for _, c := range cells {
				if (byParams && c.params != v) || (!byParams && c.clients != v) {
					continue
				}
				if y, ok := r(c); ok {
					x := c.clients
					if !byParams {
						x = c.params
					}
					s.X, s.Y = append(s.X, float64(x)), append(s.Y, y)
				}
			}
			if len(s.X) > 0 {
				out = append(out, s)
			}
		}
		return out
	}
	for _, p := range []struct {
		file, title, y string
		on             ratio
		logY           bool
	}{
		{"time", "Secure / plaintext round time", "time ratio", timeR, false},
		{"bytes", "Secure / plaintext bytes on the wire", "bytes ratio (log)", bytesR, true},
	} {
		if err := expkit.Lines(filepath.Join(dir, p.file+"_vs_params.png"), p.title+", by model size", "model parameters", p.y, true, p.logY,
			series(false, clients, p.on, "%d clients", false)...); err != nil {
			return err
		}
		if err := expkit.Lines(filepath.Join(dir, p.file+"_vs_clients.png"), p.title+", by number of clients", "clients", p.y, true, p.logY,
			series(true, params, p.on, "%s parameters", false)...); err != nil {
			return err
		}
	}
	return nil
}
