package main

import (
	"fmt"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
)

func newClientCmd() *cobra.Command {
	var cfgFile string
	var check bool
	var summary string
	cmd := &cobra.Command{
		Use:   "client --config client.yaml [--check] [--summary FILE]",
		Short: "Run a hospital client: train on local data and send model updates",
		Long: `Run a hospital's participant. It only dials out (the hospital accepts no
inbound connection), authenticates with its certificate, and for each round
fetches the global model, trains on the local data and sends its update.
Patient records never leave the process.

Example client.yaml:

  coordinator: coordinator.example.org:7443
  data_dir: /var/lib/fedledger-client   # key material (secret share, 0600)
  tls: {cert: cleveland.pem, key: cleveland-key.pem, ca: ca.pem}
  studies: [heart-2026]
  min_contributors: 3                   # never help decrypt a sum of fewer
  allow_plaintext: false                # refuse studies whose updates are unencrypted
  data:
    csv:
      path: /data/export.csv
      label_column: diagnosis
      positive_labels: ["malignant"]
      numeric: all                      # every column not listed below
      categorical: [sex, cp, restecg, exang]
      exclude: [patient_id, admitted]
      missing: drop                     # or impute (column mean)

  (or, for the shipped heart-disease data: data: {heart: cleveland})

Write the data section from the export itself with
'fedledger client init --csv FILE --out client.yaml', and check a
configuration and its data without connecting to anything with
'fedledger client --config client.yaml --check'.

` + dataOptionsHelp + `

` + precedence,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.LoadClient(cfgFile, cmd.Flags())
			if err != nil {
				return err
			}
			logger, err := config.NewLogger(cmd.ErrOrStderr(), c.File.Log)
			if err != nil {
				return err
			}
			if check {
				return runClientCheck(cmd, cfgFile, c, logger.With(slog.String("site", c.Identity.ID)))
			}
			if summary != "" {
				return writeSummary(cmd, cfgFile, c, summary, logger.With(slog.String("site", c.Identity.ID)))
			}
			cl, err := client.New(c.Config, logger.With(slog.String("site", c.Identity.ID)))
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			if c.File.MetricsListen != "" {
				stop, err := serveMetrics(c.File.MetricsListen, cl.Metrics(), logger)
				if err != nil {
					return err
				}
				defer stop()
			}
			return cl.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML configuration file")
	f.String("coordinator", "", "coordinator address host:port")
	f.String("data-dir", "", "directory for local state")
	f.String("heart", "", "use the shipped UCI heart-disease data of one hospital: cleveland, hungary, switzerland or va")
	f.String("csv", "", "local CSV export to train on (see data.csv in the config)")
	f.BoolVar(&check, "check", false, "load the configuration and the data, print what was loaded and the data manifest hash, and exit")
	f.StringVar(&summary, "summary", "", "write this site's summary for the consortium's standardisation (row count, per-input sums and sums of squares; no row) to FILE, and exit")
	cmd.AddCommand(newClientInitCmd())
	return cmd
}
