// Command cost-of-privacy measures what secure aggregation costs: whole
// rounds of a real federation (coordinator and N hospital clients over gRPC
// with mutual TLS on loopback, every round committed to a one-node audit
// log), run in plaintext and in secure mode on the same model, clients and
// data in the same run. It sweeps the model size (10^3..10^6 parameters,
// 4 clients) and the number of clients (2..32, 10^4 parameters) and writes
// results.csv, results.md and two plots beside itself.
//
//	go run ./experiments/cost-of-privacy [-rounds 2] [-quick] [-out DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/experiments/internal/expkit"
)

func main() {
	rounds := flag.Int("rounds", 2, "rounds per study (the mean round time is reported)")
	quick := flag.Bool("quick", false, "a tiny sweep (tests)")
	out := flag.String("out", "experiments/cost-of-privacy", "output directory")
	flag.Parse()
	if err := run(context.Background(), *rounds, *quick, *out, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

type point struct {
	sweep           string
	params, clients int
	plain, sec      *expkit.RunResult
}

var phases = []string{"client_train", "client_encode", "client_upload", "coordinator_aggregate", "client_decryption_share", "coordinator_decryption_shares", "coordinator_combine", "audit_append"}

func run(ctx context.Context, rounds int, quick bool, outDir string, progress io.Writer) error {
	paramsSweep, clientSweep := []int{1_000, 10_000, 100_000, 1_000_000}, []int{2, 4, 8, 16, 32}
	if quick {
		paramsSweep, clientSweep, rounds = []int{1_000}, []int{2}, 1
	}
	var pts []point
	measure := func(sweep string, params, clients int) error {
		p := point{sweep: sweep, params: params, clients: clients}
		for _, mode := range []string{coordinator.ModePlaintext, coordinator.ModeSecure} {
			res, err := expkit.Run(ctx, expkit.RunConfig{Clients: clients, Mode: mode, Model: expkit.MLP(params), Rounds: rounds, LocalSteps: 10, Seed: 1, Audit: true})
			if err != nil {
				return fmt.Errorf("%s %d params %d clients: %w", mode, params, clients, err)
			}
			for _, r := range res.Rounds {
				if r.Failed {
					return fmt.Errorf("%s %d params %d clients: round %d failed: %s", mode, params, clients, r.Round, r.Reason)
				}
			}
			if mode == coordinator.ModeSecure {
				p.sec = res
			} else {
				p.plain = res
			}
		}
		fmt.Fprintf(progress, "%-7s %8d params %2d clients: plaintext %.3fs %s/round, secure %.3fs %s/round (%.1fx time, %.1fx bytes)\n",
			sweep, params, clients, p.plain.RoundSeconds, mib(p.plain.WireBytesPerRound), p.sec.RoundSeconds, mib(p.sec.WireBytesPerRound),
			p.sec.RoundSeconds/p.plain.RoundSeconds, p.sec.WireBytesPerRound/p.plain.WireBytesPerRound)
		pts = append(pts, p)
		return nil
	}
	for _, n := range paramsSweep {
		if err := measure("params", n, 4); err != nil {
			return err
		}
	}
	for _, c := range clientSweep {
		if err := measure("clients", 10_000, c); err != nil {
			return err
		}
	}
	return write(outDir, pts, rounds)
}

func mib(b float64) string { return fmt.Sprintf("%.2f MiB", b/(1<<20)) }

func f(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }

func write(dir string, pts []point, rounds int) error {
	header := []string{"sweep", "params", "clients", "plaintext_round_s", "secure_round_s", "time_ratio", "plaintext_bytes_per_round", "secure_bytes_per_round", "bytes_ratio", "key_setup_s"}
	header = append(header, phases...)
	var rows [][]string
	for _, p := range pts {
		r := []string{p.sweep, strconv.Itoa(p.params), strconv.Itoa(p.clients), f(p.plain.RoundSeconds), f(p.sec.RoundSeconds),
			f(p.sec.RoundSeconds / p.plain.RoundSeconds), f(p.plain.WireBytesPerRound), f(p.sec.WireBytesPerRound),
			f(p.sec.WireBytesPerRound / p.plain.WireBytesPerRound), f(p.sec.KeySetupSeconds)}
		for _, ph := range phases {
			r = append(r, f(p.sec.Phases[ph]))
		}
		rows = append(rows, r)
	}
	if err := expkit.WriteCSV(filepath.Join(dir, "results.csv"), header, rows); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Machine: %s. Command: `go run ./experiments/cost-of-privacy -rounds %d`. Each cell is the mean over %d rounds of one study; every round is committed to a one-node audit log in both modes.\n\n", expkit.Machine(), rounds, rounds)
	fmt.Fprintf(&md, "### Secure vs plaintext, whole rounds\n\n")
	var t [][]string
	for _, p := range pts {
		t = append(t, []string{p.sweep, strconv.Itoa(p.params), strconv.Itoa(p.clients), fmt.Sprintf("%.3f", p.plain.RoundSeconds), fmt.Sprintf("%.3f", p.sec.RoundSeconds),
			fmt.Sprintf("%.1f×", p.sec.RoundSeconds/p.plain.RoundSeconds), mib(p.plain.WireBytesPerRound), mib(p.sec.WireBytesPerRound),
			fmt.Sprintf("%.1f×", p.sec.WireBytesPerRound/p.plain.WireBytesPerRound), fmt.Sprintf("%.2f", p.sec.KeySetupSeconds)})
	}
	expkit.WriteTable(&md, []string{"sweep", "parameters", "clients", "plaintext s/round", "secure s/round", "time ×", "plaintext bytes/round", "secure bytes/round", "bytes ×", "key setup s (once)"}, t)
	fmt.Fprintf(&md, "\n### Where a secure round's time goes (seconds; client phases are per client, in parallel)\n\n")
	t = nil
	for _, p := range pts {
		r := []string{strconv.Itoa(p.params), strconv.Itoa(p.clients)}
		for _, ph := range phases {
			r = append(r, fmt.Sprintf("%.3f", p.sec.Phases[ph]))
		}
		t = append(t, r)
	}
	expkit.WriteTable(&md, append([]string{"parameters", "clients"}, "train", "encrypt", "upload", "aggregate", "decryption share (client)", "collect shares (coord.)", "combine+decode", "audit append"), t)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	series := func(sweep string, x func(point) int) (xs, time, bytes []float64) {
		for _, p := range pts {
			if p.sweep == sweep {
				xs = append(xs, float64(x(p)))
				time = append(time, p.sec.RoundSeconds/p.plain.RoundSeconds)
				bytes = append(bytes, p.sec.WireBytesPerRound/p.plain.WireBytesPerRound)
			}
		}
		return
	}
	xs, tm, by := series("params", func(p point) int { return p.params })
	if len(xs) > 0 {
		if err := expkit.Lines(filepath.Join(dir, "overhead_vs_params.png"), "Secure / plaintext, 4 clients", "model parameters", "ratio", true, false,
			expkit.Series{Name: "round time", X: xs, Y: tm}, expkit.Series{Name: "bytes on the wire", X: xs, Y: by}); err != nil {
			return err
		}
	}
	xs, tm, by = series("clients", func(p point) int { return p.clients })
	if len(xs) > 0 {
		return expkit.Lines(filepath.Join(dir, "overhead_vs_clients.png"), "Secure / plaintext, 10^4 parameters", "clients", "ratio", true, false,
			expkit.Series{Name: "round time", X: xs, Y: tm}, expkit.Series{Name: "bytes on the wire", X: xs, Y: by})
	}
	return nil
}
