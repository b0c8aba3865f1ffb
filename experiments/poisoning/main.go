// Command poisoning measures what one compromised hospital does to the
// heart-disease study, and what the norm bound checked under encryption
// does about it: the demo's study (secure mode, logistic regression,
// FedAvg, consortium standardisation, 20 rounds) run clean, with one
// hospital (VA Long Beach, the smallest but one, then Cleveland, the
// largest) multiplying its update by 10 every round and no defence, and
// the same attacks with a norm bound (each hospital clips its update; t key
// holders open one projection of each contribution onto the round's
// direction; a contribution past the bound is left out).
// It records the mean per-hospital test accuracy, how many of the
// attacker's rounds were caught, and how many honest contributions were
// left out. Writes results.csv and results.md.
//
//	go run ./experiments/poisoning [-seeds 5] [-bound 0.1] [-scale 10] [-attackers va,cleveland] [-out DIR]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/fedledger/fedledger/experiments/internal/expkit"
	"github.com/fedledger/fedledger/internal/anomaly"
	"github.com/fedledger/fedledger/internal/demo"
)

func main() {
	expkit.LimitMemory()
	seeds := flag.Int("seeds", 5, "number of seeds")
	rounds := flag.Int("rounds", 20, "federated rounds per run")
	bound := flag.Float64("bound", 0.1, "the norm bound on every hospital's update")
	scale := flag.Float64("scale", 10, "the attacker's update multiplier")
	attackers := flag.String("attackers", "va,cleveland", "the compromised hospital of each attack arm")
	out := flag.String("out", "experiments/poisoning", "directory for the results")
	flag.Parse()
	if err := run(context.Background(), *seeds, *rounds, *bound, *scale, strings.Split(*attackers, ","), *out, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

type arm struct {
	name     string
	attacker string // "": no attack
	bound    bool
}

type row struct {
	arm       string
	seed      int64
	acc       float64
	perSite   map[string]float64
	caught    int // the attacker's rounds it was left out of
	attacked  int // rounds the attacker contributed to or was left out of
	honestOut int // honest contributions left out
	honest    int // honest contributions checked
	// The anomaly detector over the disclosed projections (|p| / n·B per
	// site and round), together with the norm check: the attacker's rounds
	// flagged or left out, and the honest site-rounds flagged.
	flagged, honestFlagged int
	// perRound is the test accuracy (all test rows) of each round's
	// starting model, then of the final model.
	perRound []float64
}

func run(ctx context.Context, seeds, rounds int, bound, scale float64, attackers []string, outDir string, progress io.Writer) error {
	arms := []arm{{"clean", "", false}, {"clean+bound", "", true}}
	for _, a := range attackers {
		arms = append(arms, arm{fmt.Sprintf("%s-x%g", a, scale), a, false}, arm{fmt.Sprintf("%s-x%g+bound", a, scale), a, true})
	}
	var rows []row
	for _, a := range arms {
		for seed := int64(1); seed <= int64(seeds); seed++ {
			cfg := demo.DefaultConfig()
			cfg.Rounds, cfg.Seed, cfg.Personal = rounds, seed, nil
			cfg.Training.Seed = seed
			if a.attacker != "" {
				cfg.Attacker, cfg.AttackScale = a.attacker, scale
			}
			if a.bound {
				cfg.NormBound = bound
			}
			dir, err := os.MkdirTemp("", "fedledger-poison-")
			if err != nil {
				return err
			}
			cfg.DataDir, cfg.Out = dir, io.Discard
			rep, err := demo.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			os.RemoveAll(dir)
			if err != nil {
				return fmt.Errorf("%s seed %d: %w", a.name, seed, err)
			}
			f, _, _ := rep.MeanAccuracy()
			r := row{arm: a.name, seed: seed, acc: f, perSite: map[string]float64{}}
			for _, s := range rep.Rows {
				r.perSite[s.Hospital] = s.Federated.Accuracy
			}
			r.perRound = rep.AccuracyPerRound()
			r.flagged, r.honestFlagged, err = detect(rep, a.attacker, bound)
			if err != nil {
				return err
			}
			for _, rr := range rep.Rounds {
				for site := range rr.Projections {
					out := false
					for _, e := range rr.Excluded {
						out = out || e == site
					}
					switch {
					case site == a.attacker:
						r.attacked++
						if out {
							r.caught++
						}
					default:
						r.honest++
						if out {
							r.honestOut++
						}
					}
				}
			}
			rows = append(rows, r)
			fmt.Fprintf(progress, "%-12s seed %d: mean accuracy %.3f  attacker caught %d/%d (flagged or caught %d)  honest left out %d/%d (flagged %d)\n",
				a.name, seed, f, r.caught, r.attacked, r.flagged, r.honestOut, r.honest, r.honestFlagged)
		}
	}
	if err := writeCSV(filepath.Join(outDir, "results.csv"), rows); err != nil {
		return err
	}
	if err := writePlot(filepath.Join(outDir, "accuracy_per_round.png"), arms, rows); err != nil {
		return err
	}
	return writeMarkdown(filepath.Join(outDir, "results.md"), arms, rows)
}

// detect runs the anomaly detector (robust z-score and isolation forest,
// internal/anomaly) over each round's disclosed projections, |p| / (n·B)
// per site, as the coordinator would: it returns the attacker's rounds
// flagged or left out by the norm check, and the honest site-rounds
// flagged.
func detect(rep *demo.Report, attacker string, bound float64) (flagged, honestFlagged int, err error) {
	det := anomaly.NewDetector([]string{"projection_ratio"}, anomaly.WithMinScale("projection_ratio", 0.05))
	for _, rr := range rep.Rounds {
		if len(rr.Projections) == 0 {
			continue
		}
		samples := map[string]uint64{}
		for _, c := range rr.Contributions {
			samples[c.Site] = c.Samples
		}
		var obs []anomaly.Observation
		for _, site := range slices.Sorted(maps.Keys(rr.Projections)) {
			n := samples[site]
			if n == 0 { // left out: not in the round's contributions
				n = 1
				for _, o := range rep.Rounds[0].Contributions {
					if o.Site == site {
						n = o.Samples
					}
				}
			}
			obs = append(obs, anomaly.Observation{Site: site, Round: uint64(rr.Round), Values: []float64{math.Abs(rr.Projections[site]) / (float64(n) * bound)}})
		}
		flags, err := det.Observe(uint64(rr.Round), obs)
		if err != nil {
			return 0, 0, err
		}
		hit := map[string]bool{}
		for _, f := range flags {
			hit[f.Site] = true
		}
		for _, e := range rr.Excluded {
			hit[e] = true
		}
		for site := range rr.Projections {
			switch {
			case site == attacker && hit[site]:
				flagged++
			case site != attacker && hit[site]:
				honestFlagged++
			}
		}
	}
	return flagged, honestFlagged, nil
}

// writePlot draws each arm's seed-mean test accuracy (all test rows
// pooled) of each round's starting model, and of the final model.
func writePlot(path string, arms []arm, rows []row) error {
	var series []expkit.Series
	for _, a := range arms {
		var sum []float64
		n := 0
		for _, r := range rows {
			if r.arm != a.name || len(r.perRound) == 0 {
				continue
			}
			if sum == nil {
				sum = make([]float64, len(r.perRound))
			}
			for i := range min(len(sum), len(r.perRound)) {
				sum[i] += r.perRound[i]
			}
			n++
		}
		if n == 0 {
			continue
		}
		s := expkit.Series{Name: a.name, Dashed: a.bound}
		for i, v := range sum {
			s.X, s.Y = append(s.X, float64(i+1)), append(s.Y, v/float64(n))
		}
		series = append(series, s)
	}
	return expkit.Lines(path, "One hospital x10, secure: accuracy per round (dashed: bound)",
		"round (last point: final model)", "accuracy (all test rows)", false, false, series...)
}

func writeCSV(path string, rows []row) error {
	g := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	var out [][]string
	for _, r := range rows {
		for _, h := range []string{"Cleveland", "Hungary", "Switzerland", "VA Long Beach"} {
			out = append(out, []string{r.arm, strconv.FormatInt(r.seed, 10), h, g(r.perSite[h]), strconv.Itoa(r.caught), strconv.Itoa(r.attacked), strconv.Itoa(r.honestOut), strconv.Itoa(r.honest),
				strconv.Itoa(r.flagged), strconv.Itoa(r.honestFlagged)})
		}
	}
	return expkit.WriteCSV(path, []string{"arm", "seed", "hospital", "federated_acc", "attacker_rounds_caught", "attacker_rounds", "honest_left_out", "honest_checked",
		"attacker_rounds_flagged_or_caught", "honest_flagged"}, out)
}

func writeMarkdown(path string, arms []arm, rows []row) error {
	var b strings.Builder
	fmt.Fprintf(&b, "| arm | mean per-hospital accuracy | sd over seeds | vs clean | attacker's rounds caught | honest contributions left out | attacker's rounds flagged or caught | honest site-rounds flagged |\n|---|---|---|---|---|---|---|---|\n")
	var clean float64
	for i, a := range arms {
		var accs []float64
		var caught, attacked, out, honest, flagged, honestFlagged int
		for _, r := range rows {
			if r.arm == a.name {
				accs = append(accs, r.acc)
				caught, attacked, out, honest = caught+r.caught, attacked+r.attacked, out+r.honestOut, honest+r.honest
				flagged, honestFlagged = flagged+r.flagged, honestFlagged+r.honestFlagged
			}
		}
		m, sd := expkit.MeanSD(accs)
		if i == 0 {
			clean = m
		}
		det, fp, fl, hf := "-", "-", "-", "-"
		if attacked > 0 {
			det = fmt.Sprintf("%d/%d (%.0f%%)", caught, attacked, 100*float64(caught)/float64(attacked))
			fl = fmt.Sprintf("%d/%d (%.0f%%)", flagged, attacked, 100*float64(flagged)/float64(attacked))
		}
		if honest > 0 {
			fp = fmt.Sprintf("%d/%d", out, honest)
			hf = fmt.Sprintf("%d/%d (%.1f%%)", honestFlagged, honest, 100*float64(honestFlagged)/float64(honest))
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %+.3f | %s | %s | %s | %s |\n", a.name, m, sd, m-clean, det, fp, fl, hf)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
