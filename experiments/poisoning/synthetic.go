package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/experiments/internal/expkit"
	"github.com/fedledger/fedledger/internal/demo"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
)

// The synthetic federation: 20 hospitals of 200 rows each
// (expkit.SyntheticCSV: 13 features, a logistic label shared by all, a
// shift of the feature means per site), logistic regression, FedAvg, K =
// 15, t = 11; 1, 3 or 5 of them malicious (the first ones), every
// attack, each defence: in secure mode none, the norm bound, and the bound
// with the admin's exclusion; in plaintext mode the median and Multi-Krum.

// synthArm is one arm of the synthetic experiment.
type synthArm struct {
	name, attack, defence string
	scale                 float64
	malicious             int
}

// Synthetic defences (beside noDefence, bounded, excluding).
const (
	plainMean   = "plaintext"
	plainMedian = "plaintext+median"
	plainKrum   = "plaintext+multi-krum"
)

func synthArms(attacks []string, counts []int, scale float64) ([]synthArm, error) {
	out := []synthArm{{"clean", "", noDefence, 0, 0}, {"clean+bound", "", bounded, 0, 0},
		{"clean+median", "", plainMedian, 0, 0}, {"clean+multi-krum", "", plainKrum, 0, 0}}
	for _, a := range attacks {
		kind, s, err := attackOf(a, scale)
		if err != nil {
			return nil, err
		}
		for _, m := range counts {
			for _, d := range []string{noDefence, bounded, excluding, plainMedian, plainKrum} {
				out = append(out, synthArm{fmt.Sprintf("%s-x%g/%d-malicious/%s", a, s, m, d), kind, d, s, m})
			}
		}
	}
	return out, nil
}

type synthRow struct {
	arm       synthArm
	seed      int64
	honestAcc float64
	tally
}

// runSynthetic runs the synthetic experiment and writes
// results-synthetic.{csv,md}.
func runSynthetic(ctx context.Context, seeds, rounds int, bound, scale float64, attacks []string, counts []int, outDir string, progress io.Writer) error {
	arms, err := synthArms(attacks, counts, scale)
	if err != nil {
		return err
	}
	var rows []synthRow
	for _, a := range arms {
		for seed := int64(1); seed <= int64(seeds); seed++ {
			r, err := runSynth(ctx, a, seed, rounds, bound)
			if err != nil {
				return fmt.Errorf("%s seed %d: %w", a.name, seed, err)
			}
			rows = append(rows, r)
			fmt.Fprintf(progress, "%-44s seed %d: honest accuracy %.3f  malicious left out %d/%d, left out or flagged %d  honest left out %d/%d, flagged %d\n",
				a.name, seed, r.honestAcc, r.caught, r.attacked, r.detected, r.honestOut, r.honest, r.honestFlagged)
		}
	}
	g := func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) }
	var csv [][]string
	for _, r := range rows {
		csv = append(csv, []string{r.arm.name, r.arm.attack, g(r.arm.scale), strconv.Itoa(r.arm.malicious), r.arm.defence, strconv.FormatInt(r.seed, 10), g(r.honestAcc),
			strconv.Itoa(r.attacked), strconv.Itoa(r.caught), strconv.Itoa(r.detected), strconv.Itoa(r.honest), strconv.Itoa(r.honestOut), strconv.Itoa(r.honestFlagged)})
	}
	if err := expkit.WriteCSV(filepath.Join(outDir, "results-synthetic.csv"), []string{"arm", "attack", "scale", "malicious", "defence", "seed", "honest_mean_acc",
		"malicious_rounds", "malicious_left_out", "malicious_left_out_or_flagged", "honest_contributions", "honest_left_out", "honest_left_out_or_flagged"}, csv); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Synthetic federation: 20 hospitals, %d rounds, norm bound B = %g. Accuracy: mean federated test accuracy of the honest hospitals, over seeds.\n\n", rounds, bound)
	fmt.Fprintf(&b, "| arm | honest accuracy | sd | malicious rounds left out | left out or flagged | honest left out | honest left out or flagged |\n|---|---|---|---|---|---|---|\n")
	for _, a := range arms {
		var accs []float64
		var s synthRow
		for _, r := range rows {
			if r.arm.name == a.name {
				accs = append(accs, r.honestAcc)
				s.attacked, s.caught, s.detected = s.attacked+r.attacked, s.caught+r.caught, s.detected+r.detected
				s.honest, s.honestOut, s.honestFlagged = s.honest+r.honest, s.honestOut+r.honestOut, s.honestFlagged+r.honestFlagged
			}
		}
		m, sd := expkit.MeanSD(accs)
		pct := func(k, n int) string {
			if n == 0 {
				return "-"
			}
			return fmt.Sprintf("%d/%d (%.1f%%)", k, n, 100*float64(k)/float64(n))
		}
		fmt.Fprintf(&b, "| %s | %.3f | %.3f | %s | %s | %s | %s |\n", a.name, m, sd, pct(s.caught, s.attacked), pct(s.detected, s.attacked), pct(s.honestOut, s.honest), pct(s.honestFlagged, s.honest))
	}
	return os.WriteFile(filepath.Join(outDir, "results-synthetic.md"), []byte(b.String()), 0o644)
}

// runSynth runs one study of the synthetic federation.
func runSynth(ctx context.Context, a synthArm, seed int64, rounds int, bound float64) (synthRow, error) {
	dir, err := os.MkdirTemp("", "fedledger-poison-synth-")
	if err != nil {
		return synthRow{}, err
	}
	defer os.RemoveAll(dir)
	const n = 20
	var ids []string
	for i := range n {
		ids = append(ids, fmt.Sprintf("site-%02d", i))
		if err := expkit.SyntheticCSV(filepath.Join(dir, ids[i]+".csv"), i, 200, seed); err != nil {
			return synthRow{}, err
		}
	}
	malicious := ids[:a.malicious]
	strat, _ := aggregation.DefaultConfig(aggregation.FedAvg)
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps, tc.LearningRate, tc.Seed = 0, 50, 0.1, seed
	st := coordinator.StudyConfig{
		ID: "synthetic", Model: model.Spec{Kind: model.KindLogReg, Inputs: 13}, Training: tc, Rounds: rounds, MinClients: 15, Clients: ids,
		RoundDeadline: 10 * time.Minute, StartTimeout: 2 * time.Minute, Strategy: strat, Seed: seed,
		Mode: coordinator.ModeSecure, HEPreset: secure.Default.ID, Threshold: 11, KeySetupTimeout: 5 * time.Minute,
	}
	switch a.defence {
	case bounded, excluding:
		st.NormBound = bound
	case plainMedian, plainKrum, plainMean:
		st.Mode = coordinator.ModePlaintext
		if a.defence == plainMedian {
			st.Robust = aggregation.RobustMedian
		} else if a.defence == plainKrum {
			st.Robust = fmt.Sprintf("%s:%d", aggregation.RobustMultiKrum, max(1, a.malicious))
		}
	}
	var fed *fedtest.Federation
	admin := &fedtest.LeftOutAdmin{}
	fed, err = fedtest.Start(ctx, fedtest.Config{Dir: dir, Study: st, AuditNodes: 1, Logger: expkit.Quiet(),
		Data: func(site string) client.DataConfig {
			return client.DataConfig{CSV: &train.CSVConfig{Path: filepath.Join(dir, site+".csv"), LabelColumn: "y", PositiveLabels: []string{"1"},
				Numeric: expkit.Features(), Missing: "drop", TestFraction: 0.25, Seed: seed, Standardize: true}}
		},
		Client: func(site string, kc *client.Config) {
			kc.Policy.MinK, kc.AllowPlaintext = 2, true
			if slices.Contains(malicious, site) {
				kc.Tamper, kc.PoisonData = demo.AttackHooks(a.attack, a.scale)
			}
		},
		Coordinator: func(cc *coordinator.Config) {
			if a.defence != excluding {
				return
			}
			cc.OnRound = func(r coordinator.RoundReport) { admin.LeftOut(ctx, fed, st.ID, r) }
		},
	})
	if err != nil {
		return synthRow{}, err
	}
	defer fed.Close()
	defer admin.Wait()
	if err := fed.StartClients(); err != nil {
		return synthRow{}, err
	}
	res, err := fed.Wait(time.Hour)
	if err != nil {
		return synthRow{}, err
	}
	r := synthRow{arm: a, seed: seed}
	var accs []float64
	for site, m := range res.FinalTest {
		if !slices.Contains(malicious, site) {
			accs = append(accs, m.Accuracy)
		}
	}
	r.honestAcc, _ = expkit.MeanSD(accs)
	r.tally = tallyRounds(res.Rounds, func(site string) bool { return slices.Contains(malicious, site) })
	return r, nil
}
