// Command poisoning measures what one compromised hospital does to the
// heart-disease study, and what fedledger's defences do about it: the
// demo's study (secure mode, logistic regression, FedAvg, consortium
// standardisation, 20 rounds) run clean and with one hospital (VA Long
// Beach by default) attacking every round, each attack with no defence,
// with the norm bound (every hospital clips its update to B; t key
// holders open one projection of each contribution onto the round's
// direction; a contribution past the bound is left out), and with the
// bound and the admin's exclusion (the demo's admin excludes a site from
// the next round on once the norm check has left it out: a signed record
// on the audit log).
//
// Attacks: scaled (sends s·Δ, model replacement's boosting), signflip
// (−s·Δ), noise (Gaussian noise of s·‖Δ‖), labelflip (trains on flipped
// labels, sends its update as is) and replace (trains on flipped labels
// and sends s times that update: model replacement with a poisoned model).
//
// It records the mean test accuracy of the honest hospitals (and of all
// four), how many of the attacker's rounds were left out or flagged (the
// study's own flags, on the round records), and how many honest
// contributions were left out or flagged. Writes results.csv, results.md
// and accuracy_per_round.png.
//
//	go run ./experiments/poisoning [-seeds 5] [-rounds 20] [-bound 0.3] [-scale 10] [-attacker va] [-attacks scaled,signflip,noise,labelflip,replace] [-out DIR]
//
// With -federation synthetic it runs the same attacks on a synthetic
// federation of 20 hospitals, 1 to 5 of them malicious (-malicious 1,5),
// with the secure defences and, in plaintext, the median and Multi-Krum
// (synthetic.go); it writes results-synthetic.{csv,md}.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/experiments/internal/expkit"
	"github.com/fedledger/fedledger/internal/demo"
)

func main() {
	expkit.LimitMemory()
	seeds := flag.Int("seeds", 5, "number of seeds")
	rounds := flag.Int("rounds", 20, "federated rounds per run")
	bound := flag.Float64("bound", 0.3, "the norm bound on every hospital's update")
	scale := flag.Float64("scale", 10, "the attacker's multiplier s")
	attacker := flag.String("attacker", "va", "the compromised hospital")
	attacks := flag.String("attacks", "scaled,signflip,noise,labelflip,replace", "the attacks to run")
	out := flag.String("out", "experiments/poisoning", "directory for the results")
	only := flag.String("only", "", "run only the arms named (comma-separated), e.g. without-attacker+bound")
	federation := flag.String("federation", "heart", "heart (4 hospitals, one attacker) or synthetic (20 hospitals, -malicious of them attacking)")
	malicious := flag.String("malicious", "1,5", "synthetic: how many hospitals attack, per arm")
	flag.Parse()
	if *federation == "synthetic" {
		var counts []int
		for _, f := range strings.Split(*malicious, ",") {
			n, err := strconv.Atoi(f)
			if err != nil || n < 1 || n > 9 {
				log.Fatalf("-malicious %q: want counts from 1 to 9", f)
			}
			counts = append(counts, n)
		}
		if err := runSynthetic(context.Background(), *seeds, *rounds, *bound, *scale, strings.Split(*attacks, ","), counts, *out, os.Stderr); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *only != "" {
		onlyArms = strings.Split(*only, ",")
	}
	if err := run(context.Background(), *seeds, *rounds, *bound, *scale, *attacker, strings.Split(*attacks, ","), *out, os.Stderr); err != nil {
		log.Fatal(err)
	}
}

// onlyArms, when set (-only), are the heart arms to run.
var onlyArms []string

// Defences.
const (
	noDefence = "none"
	bounded   = "bound"
	excluding = "bound+exclusion"
	// absent: the attacker's hospital excluded from round 1 (the best a
	// defence that leaves it out can do).
	absent = "absent"
	// absentBounded: absent, with the norm bound (the best the bound with
	// exclusion can do).
	absentBounded = "absent+bound"
)

type arm struct {
	name, attack, defence string
	scale                 float64
}

func (a arm) bound() bool {
	return a.defence == bounded || a.defence == excluding || a.defence == absentBounded
}

type row struct {
	arm       arm
	seed      int64
	honestAcc float64 // mean over the honest hospitals
	allAcc    float64 // mean over all four
	perSite   map[string]float64
	tally
	// perRound is the test accuracy (all test rows) of each round's
	// starting model, then of the final model.
	perRound []float64
}

// attackOf is the demo attack and multiplier an experiment's attack name
// runs: label flipping as is (×1), "replace" as label flipping ×scale
// (model replacement with a poisoned model), the others ×scale.
func attackOf(name string, scale float64) (kind string, s float64, err error) {
	switch name {
	case demo.AttackScaled, demo.AttackSignFlip, demo.AttackNoise:
		return name, scale, nil
	case demo.AttackLabelFlip:
		return name, 1, nil
	case "replace":
		return demo.AttackLabelFlip, scale, nil
	}
	return "", 0, fmt.Errorf("unknown attack %q (want scaled, signflip, noise, labelflip or replace)", name)
}

// arms are the clean runs and, for each attack, its three defences.
func arms(attacks []string, scale float64) ([]arm, error) {
	out := []arm{{"clean", "", noDefence, 0}, {"clean+bound", "", bounded, 0}, {"without-attacker", "", absent, 0},
		{"without-attacker+bound", "", absentBounded, 0}}
	for _, a := range attacks {
		kind, s, err := attackOf(a, scale)
		if err != nil {
			return nil, err
		}
		name := fmt.Sprintf("%s-x%g", a, s)
		for _, d := range []string{noDefence, bounded, excluding} {
			n := name
			if d != noDefence {
				n += "+" + d
			}
			out = append(out, arm{n, kind, d, s})
		}
	}
	return out, nil
}

func run(ctx context.Context, seeds, rounds int, bound, scale float64, attacker string, attacks []string, outDir string, progress io.Writer) error {
	if !slices.Contains(train.Hospitals, attacker) {
		return fmt.Errorf("unknown hospital %q (want one of %v)", attacker, train.Hospitals)
	}
	arms, err := arms(attacks, scale)
	if err != nil {
		return err
	}
	if onlyArms != nil {
		arms = slices.DeleteFunc(arms, func(a arm) bool { return !slices.Contains(onlyArms, a.name) })
	}
	var rows []row
	for _, a := range arms {
		for seed := int64(1); seed <= int64(seeds); seed++ {
			cfg := demo.DefaultConfig()
			cfg.Rounds, cfg.Seed, cfg.Personal = rounds, seed, nil
			cfg.Training.Seed = seed
			if a.attack != "" {
				cfg.Attacker, cfg.Attack, cfg.AttackScale = attacker, a.attack, a.scale
			}
			if a.bound() {
				cfg.NormBound = bound
			}
			cfg.ExcludeLeftOut = a.defence == excluding
			if a.defence == absent || a.defence == absentBounded {
				cfg.ExcludeAtStart = attacker
			}
			dir, err := os.MkdirTemp("", "fedledger-poison-")
			if err != nil {
				return err
			}
			cfg.DataDir, cfg.Out = dir, io.Discard
			rep, err := demo.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
			os.RemoveAll(dir)
			if err != nil {
				// Once more, in case another process took one of the
				// loopback ports the federation had picked.
				fmt.Fprintf(progress, "%s seed %d: %v; running it again\n", a.name, seed, err)
				if dir, err = os.MkdirTemp("", "fedledger-poison-"); err != nil {
					return err
				}
				cfg.DataDir = dir
				rep, err = demo.Run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
				os.RemoveAll(dir)
			}
			if err != nil {
				return fmt.Errorf("%s seed %d: %w", a.name, seed, err)
			}
			r := measure(rep, a, seed, attacker)
			rows = append(rows, r)
			fmt.Fprintf(progress, "%-32s seed %d: honest accuracy %.3f (all %.3f)  attacker left out %d/%d, left out or flagged %d  honest left out %d/%d, flagged %d\n",
				a.name, seed, r.honestAcc, r.allAcc, r.caught, r.attacked, r.detected, r.honestOut, r.honest, r.honestFlagged)
		}
	}
	if err := writeCSV(filepath.Join(outDir, "results.csv"), rows); err != nil {
		return err
	}
	if err := writePlot(filepath.Join(outDir, "accuracy_per_round.png"), arms, rows); err != nil {
		return err
	}
	return writeMarkdown(filepath.Join(outDir, "results.md"), arms, rows, bound, attacker)
}

// measure reads a run's accuracies and, from its round records, the
// attacker's and the honest hospitals' rounds left out and flagged.
func measure(rep *demo.Report, a arm, seed int64, attacker string) row {
	r := row{arm: a, seed: seed, perSite: map[string]float64{}, perRound: rep.AccuracyPerRound()}
	var honest []float64
	for _, s := range rep.Rows {
		r.perSite[s.Hospital] = s.Federated.Accuracy
		r.allAcc += s.Federated.Accuracy / float64(len(rep.Rows))
		if s.Hospital != train.HospitalName(attacker) { // in the clean arms too: the same three
			honest = append(honest, s.Federated.Accuracy)
		}
	}
	r.honestAcc, _ = expkit.MeanSD(honest)
	r.tally = tallyRounds(rep.Rounds, func(site string) bool { return a.attack != "" && site == attacker })
	return r
}

// tally counts, over a study's rounds, the malicious and the honest
// contributions: sent (contributed or left out), left out by the norm
// check, and left out or flagged on the round's record.
type tally struct {
	attacked, caught, detected       int
	honest, honestOut, honestFlagged int
}

func tallyRounds(rounds []coordinator.RoundReport, malicious func(site string) bool) tally {
	var t tally
	for _, rr := range rounds {
		sent, out, flagged := map[string]bool{}, map[string]bool{}, map[string]bool{}
		for _, s := range rr.Contributors {
			sent[s] = true
		}
		for _, s := range rr.Excluded {
			sent[s], out[s] = true, true
		}
		for _, f := range rr.Flags {
			flagged[f.Site] = true
		}
		for site := range sent {
			switch {
			case malicious(site):
				t.attacked++
				if out[site] {
					t.caught++
				}
				if out[site] || flagged[site] {
					t.detected++
				}
			default:
				t.honest++
				if out[site] {
					t.honestOut++
				}
				if out[site] || flagged[site] {
					t.honestFlagged++
				}
			}
		}
	}
	return t
}

// writePlot draws each arm's seed-mean test accuracy (all test rows
// pooled) of each round's starting model, and of the final model.
func writePlot(path string, arms []arm, rows []row) error {
	var series []expkit.Series
	for _, a := range arms {
		var sum []float64
		n := 0
		for _, r := range rows {
			if r.arm.name != a.name || len(r.perRound) == 0 {
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
		s := expkit.Series{Name: a.name, Dashed: a.bound()}
		for i, v := range sum {
			s.X, s.Y = append(s.X, float64(i+1)), append(s.Y, v/float64(n))
		}
		series = append(series, s)
	}
	return expkit.Lines(path, "One hospital attacking, secure: accuracy per round (dashed: bound)",
		"round (last point: final model)", "accuracy (all test rows)", false, false, series...)
}

func writeCSV(path string, rows []row) error {
	g := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	var out [][]string
	for _, r := range rows {
		for _, h := range []string{"Cleveland", "Hungary", "Switzerland", "VA Long Beach"} {
			out = append(out, []string{r.arm.name, r.arm.attack, g(r.arm.scale), r.arm.defence, strconv.FormatInt(r.seed, 10), h, g(r.perSite[h]),
				g(r.honestAcc), strconv.Itoa(r.attacked), strconv.Itoa(r.caught), strconv.Itoa(r.detected),
				strconv.Itoa(r.honest), strconv.Itoa(r.honestOut), strconv.Itoa(r.honestFlagged)})
		}
	}
	return expkit.WriteCSV(path, []string{"arm", "attack", "scale", "defence", "seed", "hospital", "federated_acc", "honest_mean_acc",
		"attacker_rounds", "attacker_left_out", "attacker_left_out_or_flagged", "honest_contributions", "honest_left_out", "honest_left_out_or_flagged"}, out)
}

func writeMarkdown(path string, arms []arm, rows []row, bound float64, attacker string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "Attacker: %s. Norm bound B = %g. Accuracy: mean federated test accuracy of the three other (honest) hospitals, in every arm, the clean ones included; \"all four\" adds the attacker's own test split. Means over seeds.\n\n",
		train.HospitalName(attacker), bound)
	fmt.Fprintf(&b, "| arm | honest accuracy | sd | vs clean | all four | attacker's rounds left out | left out or flagged | honest left out | honest left out or flagged |\n|---|---|---|---|---|---|---|---|---|\n")
	var clean float64
	for i, a := range arms {
		var accs, all []float64
		var attacked, caught, detected, honest, out, flagged int
		for _, r := range rows {
			if r.arm.name == a.name {
				accs, all = append(accs, r.honestAcc), append(all, r.allAcc)
				attacked, caught, detected = attacked+r.attacked, caught+r.caught, detected+r.detected
				honest, out, flagged = honest+r.honest, out+r.honestOut, flagged+r.honestFlagged
			}
		}
		m, sd := expkit.MeanSD(accs)
		ma, _ := expkit.MeanSD(all)
		if i == 0 {
			clean = m
		}
		pct := func(k, n int) string {
			if n == 0 {
				return "-"
			}
			return fmt.Sprintf("%d/%d (%.1f%%)", k, n, 100*float64(k)/float64(n))
		}
		det, detf := "-", "-"
		if a.attack != "" {
			det, detf = pct(caught, attacked), pct(detected, attacked)
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %+.3f | %.3f | %s | %s | %s | %s |\n", a.name, m, sd, m-clean, ma, det, detf, pct(out, honest), pct(flagged, honest))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
