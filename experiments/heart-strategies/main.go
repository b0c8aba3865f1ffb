// Command heart-strategies compares FedAvg, FedProx, FedAdam, FedYogi and
// FedAdagrad on the four UCI heart-disease hospitals, each in plaintext and
// in secure mode, running the real federation (coordinator, four clients
// over gRPC with mutual TLS on loopback, three audit nodes) once per
// method, mode and seed, and writes results.csv, results.md and
// accuracy_per_round.png beside itself.
//
//	go run ./experiments/heart-strategies [-seeds 5] [-rounds 20] [-modes plaintext,secure] [-out DIR]
package main

import (
	"context"
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/fedledger/fedledger/experiments/internal/expkit"
	"github.com/fedledger/fedledger/internal/demo"
)

func main() {
	expkit.LimitMemory()
	seeds := flag.Int("seeds", 5, "number of seeds (initial model and local shuffles)")
	rounds := flag.Int("rounds", 20, "federated rounds per run")
	modes := flag.String("modes", "plaintext,secure", "modes to run")
	out := flag.String("out", "experiments/heart-strategies", "directory for the results")
	flag.Parse()
	if err := run(context.Background(), *seeds, *rounds, strings.Split(*modes, ","), *out, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

// method is a server strategy, with FedProx as FedAvg plus the clients'
// proximal term.
type method struct {
	name, strategy string
	proxMu         float64
	serverLR       float64 // 0: the strategy's default
}

// Methods compared, each with its default server learning rate, and
// FedAdagrad once more at the server learning rate FLamby tuned for it on
// this dataset (0.316; config_heart_disease.json in owkin/FLamby).
var methods = []method{
	{"fedavg", "fedavg", 0, 0}, {"fedprox", "fedavg", 0.1, 0}, {"fedadam", "fedadam", 0, 0}, {"fedyogi", "fedyogi", 0, 0}, {"fedadagrad", "fedadagrad", 0, 0},
	{"fedadagrad-lr0.316", "fedadagrad", 0, 0.316228},
}

type row struct {
	method   string
	mode     string
	seed     int64
	perSite  []demo.Row
	fed      float64
	local    float64
	pooled   float64
	perRound []float64 // test accuracy of each round's starting model, then the final model's
}

func run(ctx context.Context, seeds, rounds int, modes []string, outDir string, progress io.Writer) error {
	var rows []row
	for _, mode := range modes {
		for _, m := range methods {
			for seed := int64(1); seed <= int64(seeds); seed++ {
				cfg := demo.DefaultConfig()
				cfg.Strategy, cfg.Rounds, cfg.Seed, cfg.Mode, cfg.ServerLR = m.strategy, rounds, seed, mode, m.serverLR
				cfg.Training.Seed, cfg.Training.ProxMu = seed, m.proxMu
				cfg.MinClients = 4
				dir, err := os.MkdirTemp("", "fedledger-exp-")
				if err != nil {
					return err
				}
				cfg.DataDir = dir
				cfg.Out = io.Discard
				rep, err := demo.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
				os.RemoveAll(dir)
				if err != nil {
					return fmt.Errorf("%s %s seed %d: %w", m.name, mode, seed, err)
				}
				f, l, p := rep.MeanAccuracy()
				r := row{method: m.name, mode: mode, seed: seed, perSite: rep.Rows, fed: f, local: l, pooled: p}
				for _, rr := range rep.Rounds {
					var acc, n float64
					for _, pt := range rr.ParentTest {
						acc, n = acc+pt.Accuracy*float64(pt.N), n+float64(pt.N)
					}
					r.perRound = append(r.perRound, acc/max(n, 1))
				}
				var acc, n float64
				for _, s := range rep.Rows {
					acc, n = acc+s.Federated.Accuracy*float64(s.Test), n+float64(s.Test)
				}
				r.perRound = append(r.perRound, acc/n)
				rows = append(rows, r)
				fmt.Fprintf(progress, "%-10s %-9s seed %d: federated %.3f  alone %.3f  pooled %.3f\n", m.name, mode, seed, f, l, p)
			}
		}
	}
	if err := writeCSV(filepath.Join(outDir, "results.csv"), rows); err != nil {
		return err
	}
	if err := writePlot(filepath.Join(outDir, "accuracy_per_round.png"), rows, modes[0]); err != nil {
		return err
	}
	return writeMarkdown(filepath.Join(outDir, "results.md"), rows, seeds, rounds, modes)
}

// writePlot draws the seed-mean test accuracy (all test rows pooled) of
// each round's starting model, and of the final model, per method.
func writePlot(path string, rows []row, mode string) error {
	var series []expkit.Series
	for _, m := range methods {
		var sum []float64
		n := 0
		for _, r := range rows {
			if r.method != m.name || r.mode != mode {
				continue
			}
			if sum == nil {
				sum = make([]float64, len(r.perRound))
			}
			for i, v := range r.perRound {
				sum[i] += v
			}
			n++
		}
		if n == 0 {
			continue
		}
		s := expkit.Series{Name: m.name}
		for i, v := range sum {
			s.X, s.Y = append(s.X, float64(i+1)), append(s.Y, v/float64(n))
		}
		series = append(series, s)
	}
	return expkit.Lines(path, "Heart disease, 4 hospitals: test accuracy of each round's model ("+mode+", mean over seeds)",
		"round (last point: final model)", "accuracy (all test rows)", false, false, series...)
}

func writeCSV(path string, rows []row) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := csv.NewWriter(f)
	w.Write([]string{"method", "mode", "seed", "hospital", "test_n", "federated_acc", "alone_acc", "pooled_acc"})
	for _, r := range rows {
		for _, s := range r.perSite {
			w.Write([]string{r.method, r.mode, strconv.FormatInt(r.seed, 10), s.Hospital, strconv.Itoa(s.Test),
				ff(s.Federated.Accuracy), ff(s.Local.Accuracy), ff(s.Pooled.Accuracy)})
		}
	}
	w.Flush()
	return w.Error()
}

func writeMarkdown(path string, rows []row, seeds, rounds int, modes []string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "Machine: %s. Mean per-hospital test accuracy, mean ± sd over %d seeds, %d rounds, logistic regression, Adam lr 1e-3, batch 4, 50 local steps per round (FedProx: mu = 0.1).\n\n", expkit.Machine(), seeds, rounds)
	fmt.Fprintln(f, "| method | mode | federated | Cleveland | Hungary | Switzerland | VA | each hospital alone | pooled |")
	fmt.Fprintln(f, "|---|---|---|---|---|---|---|---|---|")
	for _, mode := range modes {
		for _, m := range methods {
			var fed, loc, poo []float64
			site := map[string][]float64{}
			for _, r := range rows {
				if r.method == m.name && r.mode == mode {
					fed, loc, poo = append(fed, r.fed), append(loc, r.local), append(poo, r.pooled)
					for _, s := range r.perSite {
						site[s.Hospital] = append(site[s.Hospital], s.Federated.Accuracy)
					}
				}
			}
			fmt.Fprintf(f, "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name, mode, meanSD(fed),
				meanSD(site["Cleveland"]), meanSD(site["Hungary"]), meanSD(site["Switzerland"]), meanSD(site["VA Long Beach"]), meanSD(loc), meanSD(poo))
		}
	}
	return nil
}

func meanSD(v []float64) string {
	var m, sd float64
	for _, x := range v {
		m += x / float64(len(v))
	}
	for _, x := range v {
		sd += (x - m) * (x - m)
	}
	if len(v) > 1 {
		sd = math.Sqrt(sd / float64(len(v)-1))
	}
	return fmt.Sprintf("%.3f ± %.3f", m, sd)
}

func ff(x float64) string { return strconv.FormatFloat(x, 'f', 4, 64) }
