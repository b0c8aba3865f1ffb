package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/coordinator/tuning"
)

func newTuningCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tuning",
		Short: "Federated hyperparameter tuning: check a tuning run's choice from the audit log",
	}
	cmd.AddCommand(newTuningReportCmd())
	return cmd
}

func newTuningReportCmd() *cobra.Command {
	var bundleFile, trustFile string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "report TUNING_ID --trust trust.json --bundle BUNDLE [--json]",
		Short: "Recompute a tuning run's trials, scores and choice from an exported audit log",
		Long: `Recompute a tuning run from the audit log alone. It verifies the bundle as
verify does (checkpoint quorum, Merkle root, every record replayed through the
audit rules with the hospitals' signatures), finds the run's trial studies by
their admin-signed study records, scores every trial from the validation
figures each hospital signed on its round records (the sample-weighted
validation loss of the model after each round; no test split is used), and
selects as the tuning did: the lowest loss of the last rung. Prints one line
per trial and the choice. Exit status 0: a choice; 1: the log holds no
complete tuning run of that id.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trustFile == "" || bundleFile == "" {
				return fmt.Errorf("%w: tuning report needs --trust and --bundle", config.ErrConfig)
			}
			trust, err := audit.LoadTrust(trustFile)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			data, err := os.ReadFile(bundleFile)
			if err != nil {
				return fmt.Errorf("%w: bundle: %v", config.ErrConfig, err)
			}
			b, err := audit.UnmarshalBundle(data)
			if err != nil {
				return fmt.Errorf("%w: bundle %s: %v", errVerify, bundleFile, err)
			}
			_, _, steps, err := audit.ReplayBundle(b, trust)
			if err != nil {
				return fmt.Errorf("%w: %v", errVerify, err)
			}
			res, err := tuning.Recompute(steps, args[0])
			if err != nil {
				return fmt.Errorf("%w: %v", errVerify, err)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return writeTuning(cmd, res)
		},
	}
	f := cmd.Flags()
	f.StringVar(&bundleFile, "bundle", "", "offline bundle exported from the audit log (fedledger verify --save-bundle)")
	f.StringVar(&trustFile, "trust", "", "trust file: consortium CA, audit node keys, quorum")
	f.BoolVar(&asJSON, "json", false, "print the trials and the choice as JSON")
	return cmd
}

func writeTuning(cmd *cobra.Command, res *tuning.Result) error {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "tuning %s: %d trials on the log, scored on the hospitals' signed validation figures\n", res.ID, len(res.Trials))
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  rung\ttrial\tstudy\tlearning rate\tlocal steps\tserver lr\tbudget\tbest after\tval loss\tval acc\tval auc\tsites")
	for _, t := range res.Trials {
		if !t.Scored {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%g\t%d\t%g\t%d\t-\t-\t-\t-\t-\n", t.Rung, t.Candidate.Name, t.Study, t.Candidate.LearningRate, t.Candidate.LocalSteps, t.Candidate.ServerLR, t.Budget)
			continue
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%g\t%d\t%g\t%d\t%d\t%.4f\t%.3f\t%.3f\t%d\n", t.Rung, t.Candidate.Name, t.Study, t.Candidate.LearningRate, t.Candidate.LocalSteps,
			t.Candidate.ServerLR, t.Budget, t.Best.After, t.Best.Loss, t.Best.Accuracy, t.Best.AUC, t.Best.Sites)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	s := res.Selected
	_, err := fmt.Fprintf(out, "chosen: %s (trial %s): learning rate %g, %d local steps, server learning rate %g, %d rounds; validation loss %.4f, accuracy %.3f\n",
		s.Study, s.Candidate.Name, s.Candidate.LearningRate, s.Candidate.LocalSteps, s.Candidate.ServerLR, s.Best.After, s.Best.Loss, s.Best.Accuracy)
	return err
}
