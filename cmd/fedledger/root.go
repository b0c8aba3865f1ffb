package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/config"
	"github.com/fedledger/fedledger/internal/version"
)

const precedence = `Configuration comes from, highest precedence first: command-line flags,
FEDLEDGER_* environment variables (the key in upper case, dots as
underscores: study.min_clients is FEDLEDGER_STUDY_MIN_CLIENTS), the YAML
file given with --config, then built-in defaults. Relative paths in the file
are resolved against the file's directory.`

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "fedledger",
		Short: "Federated learning between hospitals, with encrypted updates and audited rounds",
		Long: `fedledger trains one model across hospitals without any hospital's records
leaving its walls. Hospital clients train locally and send model updates to a
coordinator over mutual TLS; the coordinator aggregates them into the next
global model.

Start with 'fedledger demo': the whole federation on this machine, on the
UCI heart-disease data of four real hospitals.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-format", "text", "log format: text (for humans) or json (for machines)")
	root.PersistentFlags().String("log-level", "info", "log level: debug, info, warn or error")
	root.AddCommand(newCoordinatorCmd(), newClientCmd(), newAuditNodeCmd(), newProvisionCmd(), newVerifyCmd(), newStudyCmd(), newTrustCmd(), newDemoCmd(), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the fedledger version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), "fedledger", version.String())
			return err
		},
	}
}

func newCoordinatorCmd() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "coordinator --config coordinator.yaml",
		Short: "Run the coordinator: serve the Federation API and drive a study's rounds",
		Long: `Run the coordinator of one study. It listens for hospital clients (mutual TLS
only: each client is identified by its certificate), announces rounds, collects
their updates, aggregates them with the configured strategy and stores every
global model under its SHA-256 in the data directory. In secure mode (the
default) it relays the hospitals' collective key setup, only ever adds their
encrypted updates, and asks t hospitals for decryption shares of the sum.

Example coordinator.yaml:

  listen: 0.0.0.0:7443
  metrics_listen: 127.0.0.1:9464        # Prometheus /metrics; "" disables
  data_dir: /var/lib/fedledger
  tls: {cert: coordinator.pem, key: coordinator-key.pem, ca: ca.pem}
  study:
    id: heart-2026
    model: {kind: logreg, inputs: 13}
    rounds: 20
    min_clients: 3                      # K: fewer updates fail the round
    clients: [cleveland, hungary, switzerland, va]
    round_deadline: 2m
    strategy: {name: fedadam}           # fedavg | fedadam | fedyogi | fedadagrad
    training: {optimizer: adam, learning_rate: 0.001, batch_size: 4, local_steps: 50}
    mode: secure                        # default; plaintext only for baselines
    threshold: 3                        # t hospitals decrypt a sum (default: majority)
  audit:
    nodes: [audit-1.example.org:7600, audit-2.example.org:7600, audit-3.example.org:7600]
    study_record: heart-2026.rec        # signed by an admin: fedledger study sign

` + precedence,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.LoadCoordinator(cfgFile, cmd.Flags())
			if err != nil {
				return err
			}
			logger, err := config.NewLogger(cmd.ErrOrStderr(), c.File.Log)
			if err != nil {
				return err
			}
			if c.AuditTLS != nil {
				rec, err := c.StudyRecord()
				if err != nil {
					return err
				}
				alog, err := audit.Dial(c.File.Audit.Nodes, c.AuditTLS)
				if err != nil {
					return err
				}
				defer alog.Close()
				c.Config.Recorder = &coordinator.AuditRecorder{Log: alog, Identity: c.Identity, StudyRecord: rec, Logger: logger}
			}
			co, err := coordinator.New(c.Config, logger)
			if err != nil {
				return err
			}
			lis, err := net.Listen("tcp", c.File.Listen)
			if err != nil {
				return fmt.Errorf("listen on %s: %w", c.File.Listen, err)
			}
			logger.Info("coordinator listening", slog.String("addr", lis.Addr().String()), slog.String("study", c.Config.Study.ID), slog.String("version", version.String()))
			if c.File.MetricsListen != "" {
				stop, err := serveMetrics(c.File.MetricsListen, co.Metrics(), logger)
				if err != nil {
					lis.Close()
					return err
				}
				defer stop()
			}
			return co.Run(cmd.Context(), lis)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML configuration file")
	f.String("listen", "", "address to listen on (default 127.0.0.1:7443)")
	f.String("data-dir", "", "directory for the model store and state")
	f.Int("rounds", 0, "number of rounds (overrides study.rounds)")
	f.String("strategy", "", "server strategy: fedavg, fedadam, fedyogi or fedadagrad")
	f.String("mode", "", "secure (default: updates encrypted, threshold decryption) or plaintext (coordinator can read updates)")
	return cmd
}

func newClientCmd() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "client --config client.yaml",
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
  resum: true                           # re-add the ciphertexts before sharing
  allow_plaintext: false                # refuse studies whose updates are unencrypted
  data:
    csv:
      path: /data/export.csv
      label_column: diagnosis
      positive_labels: ["1"]
      numeric: [age, trestbps, chol, thalach, oldpeak]
      categorical: [sex, cp, restecg, exang]
      missing: drop                     # or impute (column mean)

  (or, for the shipped heart-disease data: data: {heart: cleveland})

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
	return cmd
}

// serveMetrics serves reg on addr at /metrics until stop is called.
func serveMetrics(addr string, reg *prometheus.Registry, logger *slog.Logger) (stop func(), err error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("metrics server", slog.Any("err", err))
		}
	}()
	logger.Info("serving Prometheus metrics", slog.String("addr", "http://"+lis.Addr().String()+"/metrics"))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
