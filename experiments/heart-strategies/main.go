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

	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/experiments/internal/expkit"
	"github.com/fedledger/fedledger/internal/demo"
	"github.com/fedledger/fedledger/internal/model"
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
// proximal term; the later methods standardise with the consortium's
// statistics, train with SGD on the clients, and personalise.
type method struct {
	name, strategy string
	proxMu         float64
	serverLR       float64 // 0: the strategy's default
	// consortium: the consortium's standardisation, SGD at learning rate
	// 0.01 on the clients (chosen on validation splits; see the README).
	consortium bool
	personal   string // "": no personal models
	selectBy   string // the personal model's validation criterion ("": accuracy)
}

// Methods compared, each with its default server learning rate, and
// FedAdagrad once more at the server learning rate FLamby tuned for it on
// this dataset (0.316; config_heart_disease.json in owkin/FLamby).
var methods = []method{
	{name: "fedavg", strategy: "fedavg"}, {name: "fedprox", strategy: "fedavg", proxMu: 0.1}, {name: "fedadam", strategy: "fedadam"},
	{name: "fedyogi", strategy: "fedyogi"}, {name: "fedadagrad", strategy: "fedadagrad"},
	{name: "fedadagrad-lr0.316", strategy: "fedadagrad", serverLR: 0.316228},
	{name: "fedavg-cs+intercept", strategy: "fedavg", consortium: true, personal: train.PersonalIntercept},
	{name: "fedavg-cs+intercept-byloss", strategy: "fedavg", consortium: true, personal: train.PersonalIntercept, selectBy: client.SelectByLoss},
	{name: "fedavg-cs+ditto", strategy: "fedavg", consortium: true, personal: train.PersonalDitto},
	{name: "fedavg-cs+finetune", strategy: "fedavg", consortium: true, personal: train.PersonalFineTune},
}

type row struct {
	method  string
	mode    string
	seed    int64
	perSite []demo.Row
	fed     float64
	local   float64
	pooled  float64
	// personal is the mean of the hospitals' personal models (hasPersonal).
	personal    float64
	hasPersonal bool
	perRound    []float64 // test accuracy of each round's starting model, then the final model's
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
				// The first methods: FLamby's setting, per-site
				// standardisation and Adam at 1e-3 on the clients.
				cfg.Standardization, cfg.Personal = demo.StandardizeSite, nil
				cfg.Training.Optimizer, cfg.Training.LearningRate = model.OptAdam, 1e-3
				if m.consortium {
					cfg.Standardization = demo.StandardizeConsortium
					cfg.Training.Optimizer, cfg.Training.LearningRate = model.OptSGD, 0.01
				}
				if m.personal != "" {
					cfg.Personal = demo.PersonalConfig(m.personal)
					cfg.Personal.SelectBy = m.selectBy
				}
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
				r.personal, r.hasPersonal = rep.MeanPersonal()
				r.perRound = rep.AccuracyPerRound()
				rows = append(rows, r)
				fmt.Fprintf(progress, "%-20s %-9s seed %d: federated %.3f  personalised %.3f  alone %.3f  pooled %.3f\n", m.name, mode, seed, f, r.personal, l, p)
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
	w.Write([]string{"method", "mode", "seed", "hospital", "test_n", "federated_acc", "personalised_acc", "alone_acc", "pooled_acc",
		"federated_auc", "personalised_auc", "alone_auc", "pooled_auc"})
	for _, r := range rows {
		for _, s := range r.perSite {
			pa, pu := "", ""
			if s.HasPersonal {
				pa, pu = ff(s.Personal.Accuracy), ff(s.Personal.AUC)
			}
			w.Write([]string{r.method, r.mode, strconv.FormatInt(r.seed, 10), s.Hospital, strconv.Itoa(s.Test),
				ff(s.Federated.Accuracy), pa, ff(s.Local.Accuracy), ff(s.Pooled.Accuracy),
				ff(s.Federated.AUC), pu, ff(s.Local.AUC), ff(s.Pooled.AUC)})
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
	fmt.Fprintf(f, "Machine: %s. Mean per-hospital test accuracy, mean ± sd over %d seeds, %d rounds, logistic regression, batch 4, 50 local steps per round. "+
		"The first six methods: per-site standardisation, Adam lr 1e-3 on the clients (FedProx: mu = 0.1). The fedavg-cs methods: the consortium's standardisation, "+
		"SGD lr 0.01 on the clients, and each hospital's personal model (Adam lr 0.01, batch 4, 300 steps, λ chosen on a validation quarter of its training split). "+
		"The baselines train with each method's client settings; pooled training always uses the pooled standardisation.\n\n", expkit.Machine(), seeds, rounds)
	fmt.Fprintln(f, "| method | mode | federated | personalised | Cleveland | Hungary | Switzerland | VA | each hospital alone | pooled |")
	fmt.Fprintln(f, "|---|---|---|---|---|---|---|---|---|---|")
	hospitals := []string{"Cleveland", "Hungary", "Switzerland", "VA Long Beach"}
	for _, mode := range modes {
		for _, m := range methods {
			var fed, loc, poo, per []float64
			site := map[string][]float64{}
			for _, r := range rows {
				if r.method == m.name && r.mode == mode {
					fed, loc, poo = append(fed, r.fed), append(loc, r.local), append(poo, r.pooled)
					if r.hasPersonal {
						per = append(per, r.personal)
					}
					for _, s := range r.perSite {
						site[s.Hospital] = append(site[s.Hospital], s.Federated.Accuracy)
					}
				}
			}
			if len(fed) == 0 {
				continue
			}
			personal := "–"
			if len(per) > 0 {
				personal = meanSD(per)
			}
			fmt.Fprintf(f, "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", m.name, mode, meanSD(fed), personal,
				meanSD(site[hospitals[0]]), meanSD(site[hospitals[1]]), meanSD(site[hospitals[2]]), meanSD(site[hospitals[3]]), meanSD(loc), meanSD(poo))
		}
	}
	fmt.Fprintf(f, "\nPersonalised against alone, per hospital (mean over seeds; accuracy, then AUC):\n\n")
	fmt.Fprintln(f, "| method | mode | hospital | federated | personalised | alone | pooled | federated AUC | personalised AUC | alone AUC | pooled AUC |")
	fmt.Fprintln(f, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, mode := range modes {
		for _, m := range methods {
			if m.personal == "" {
				continue
			}
			for _, h := range hospitals {
				var v [8]float64
				n := 0.0
				for _, r := range rows {
					if r.method != m.name || r.mode != mode {
						continue
					}
					for _, s := range r.perSite {
						if s.Hospital == h {
							for k, x := range []float64{s.Federated.Accuracy, s.Personal.Accuracy, s.Local.Accuracy, s.Pooled.Accuracy,
								s.Federated.AUC, s.Personal.AUC, s.Local.AUC, s.Pooled.AUC} {
								v[k] += x
							}
							n++
						}
					}
				}
				if n == 0 {
					continue
				}
				fmt.Fprintf(f, "| %s | %s | %s |", m.name, mode, h)
				for _, x := range v {
					fmt.Fprintf(f, " %.3f |", x/n)
				}
				fmt.Fprintln(f)
			}
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
