// Command dropouts measures secure rounds when hospitals vanish right after
// uploading their update: N = 6 clients, K = 3, decryption threshold t = 3,
// and d = 0 .. N-t+1 clients lost, several seeds each, in secure and in
// plaintext mode (a real federation over gRPC with mutual TLS on loopback).
// It writes results.csv, results.md and a plot beside itself.
//
//	go run ./experiments/dropouts [-trials 3] [-quick] [-out DIR]
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

const (
	clients   = 6
	threshold = 4 // a majority of the six, as secure mode requires
	minK      = 3
)

func main() {
	expkit.LimitMemory()
	trials := flag.Int("trials", 3, "studies per (mode, dropouts) cell")
	quick := flag.Bool("quick", false, "one trial, d in {0, 1} (tests)")
	out := flag.String("out", "experiments/dropouts", "output directory")
	flag.Parse()
	if err := run(context.Background(), *trials, *quick, *out, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

type cell struct {
	mode      string
	dropped   int
	trials    int
	succeeded int
	seconds   float64 // mean round time over the trials
	reasons   []string
}

func run(ctx context.Context, trials int, quick bool, outDir string, progress io.Writer) error {
	maxDrop := clients - threshold + 1
	if quick {
		trials, maxDrop = 1, 1
	}
	var cells []cell
	for _, mode := range []string{coordinator.ModePlaintext, coordinator.ModeSecure} {
		for d := 0; d <= maxDrop; d++ {
			c := cell{mode: mode, dropped: d, trials: trials}
			var drop []int
			for i := 0; i < d; i++ {
				drop = append(drop, i)
			}
			for s := 1; s <= trials; s++ {
				res, err := expkit.Run(ctx, expkit.RunConfig{Clients: clients, Mode: mode, Model: expkit.MLP(1000), Rounds: 1,
					MinClients: minK, Threshold: threshold, LocalSteps: 10, Seed: int64(s), Drop: map[int][]int{1: drop}})
				if err != nil {
					return fmt.Errorf("%s d=%d seed %d: %w", mode, d, s, err)
				}
				r := res.Rounds[0]
				c.seconds += r.Duration.Seconds() / float64(trials)
				if r.Failed {
					c.reasons = append(c.reasons, r.Reason)
				} else {
					c.succeeded++
				}
			}
			fmt.Fprintf(progress, "%-9s %d lost after upload: %d/%d rounds succeeded, %.2fs per round %v\n", mode, d, c.succeeded, trials, c.seconds, c.reasons)
			cells = append(cells, c)
		}
	}
	return write(outDir, cells, trials)
}

func write(dir string, cells []cell, trials int) error {
	var rows, t [][]string
	series := map[string]*expkit.Series{}
	for _, c := range cells {
		reason := ""
		if len(c.reasons) > 0 {
			reason = c.reasons[0]
		}
		rows = append(rows, []string{c.mode, strconv.Itoa(c.dropped), strconv.Itoa(c.trials), strconv.Itoa(c.succeeded), fmt.Sprintf("%.4f", c.seconds), reason})
		t = append(t, []string{c.mode, strconv.Itoa(c.dropped), fmt.Sprintf("%d/%d", c.succeeded, c.trials), fmt.Sprintf("%.2f", c.seconds), reason})
		s := series[c.mode]
		if s == nil {
			s = &expkit.Series{Name: c.mode + " success rate"}
			series[c.mode] = s
		}
		s.X, s.Y = append(s.X, float64(c.dropped)), append(s.Y, float64(c.succeeded)/float64(c.trials))
	}
	if err := expkit.WriteCSV(filepath.Join(dir, "results.csv"), []string{"mode", "dropped_after_upload", "trials", "succeeded", "round_s", "failure"}, rows); err != nil {
		return err
	}
	var md strings.Builder
	fmt.Fprintf(&md, "Machine: %s. Command: `go run ./experiments/dropouts -trials %d`. N = %d hospitals, K = %d, t = %d; the lost hospitals upload first and disconnect, the others upload one second later.\n\n",
		expkit.Machine(), trials, clients, minK, threshold)
	expkit.WriteTable(&md, []string{"mode", "lost after upload", "rounds succeeded", "s/round (mean)", "failure reason"}, t)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return err
	}
	var ss []expkit.Series
	for _, m := range []string{coordinator.ModePlaintext, coordinator.ModeSecure} {
		if s := series[m]; s != nil {
			ss = append(ss, *s)
		}
	}
	return expkit.Lines(filepath.Join(dir, "success_vs_dropouts.png"), fmt.Sprintf("Rounds succeeding, N=%d, t=%d", clients, threshold),
		"hospitals lost after uploading", "success rate", false, false, ss...)
}
