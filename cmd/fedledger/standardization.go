package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
)

// writeSummary writes the site's summary for the consortium's
// standardisation: what 'fedledger standardization' pools.
func writeSummary(cmd *cobra.Command, cfgFile string, c *config.Client, out string, logger *slog.Logger) error {
	cl, err := client.New(c.Config, logger)
	if err != nil {
		return fmt.Errorf("%w: %s: data: %v", config.ErrConfig, cfgFile, err)
	}
	s, err := cl.Summary()
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("%w: --summary: %v", config.ErrConfig, err)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %d training rows, %d inputs (row count, sums and sums of squares; no row)\n", out, s.N, len(s.Features))
	return nil
}

func newStandardizationCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "standardization --out statistics.json SUMMARY...",
		Short: "Pool the hospitals' summaries into the consortium's standardisation",
		Long: `Pool the summaries the hospitals wrote with 'fedledger client --summary' (each
its training rows' count and, per input, the sum and the sum of squares)
into the consortium's mean and standard deviation per input. Every hospital
then sets data.standardization to the file, scales its inputs with it, and
its data manifest records the statistics it used.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var sums []train.Summary
			for _, f := range args {
				b, err := os.ReadFile(f)
				if err != nil {
					return fmt.Errorf("%w: %v", config.ErrConfig, err)
				}
				var s train.Summary
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&s); err != nil {
					return fmt.Errorf("%w: %s is not a summary: %v", config.ErrConfig, f, err)
				}
				sums = append(sums, s)
			}
			st, err := train.PoolSummaries(sums...)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			b, _ := json.MarshalIndent(st, "", "  ")
			if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
				return fmt.Errorf("%w: --out: %v", config.ErrConfig, err)
			}
			n := 0
			for _, s := range sums {
				n += s.N
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: mean and std of %d inputs over %d training rows from %d sites\n", out, len(st.Features), n, len(sums))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "file to write the consortium's statistics to")
	cmd.MarkFlagRequired("out")
	return cmd
}
