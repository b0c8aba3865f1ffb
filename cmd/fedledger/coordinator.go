package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/version"
)

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
    threshold: 3                        # t hospitals decrypt a sum (a majority; default N/2 + 1)
  audit:
    nodes: [audit-1.example.org:7600, audit-2.example.org:7600, audit-3.example.org:7600]
    study_record: heart-2026.rec        # signed by an admin: fedledger study sign
  linger: 24h                           # after the study: keep answering study status
  console: {addr: 0.0.0.0:9470}         # read-only web console, mTLS for observers and admins; "" (default) disables

When the study ends the coordinator prints the final model's path and each
site's accuracy of it, then keeps answering "fedledger study status" (and
serving the final model) for --linger before it exits; 0 exits at once.

` + precedence,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var co *coordinator.Coordinator
			c, err := config.LoadCoordinator(cfgFile, cmd.Flags())
			if err != nil {
				return err
			}
			logger, err := config.NewLogger(cmd.ErrOrStderr(), c.File.Log)
			if err != nil {
				return err
			}
			var alog *cluster.Client
			if c.AuditTLS != nil {
				rec, err := c.StudyRecord()
				if err != nil {
					return err
				}
				alog, err = cluster.Dial(c.File.Audit.Nodes, c.AuditTLS)
				if err != nil {
					return err
				}
				defer alog.Close()
				c.Config.Recorder = &coordinator.AuditRecorder{Log: alog, Identity: c.Identity, StudyRecord: rec, Logger: logger}
			}
			c.Config.OnFinish = func(res coordinator.StudyResult, _ error) { printOutcome(cmd.OutOrStdout(), res, co.FinalModelPath()) }
			co, err = coordinator.New(c.Config, logger)
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
			if c.File.Console.Addr != "" {
				stop, err := startCoordinatorConsole(c.File.Console.Addr, c, co, alog, logger)
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
	f.Duration("linger", 0, "after the study ends, keep answering study status for this long (default 24h; 0: exit at once)")
	return cmd
}

// printOutcome tells the operator where the final model is and what each
// site reported of it.
func printOutcome(w io.Writer, res coordinator.StudyResult, path string) {
	if res.ModelBytes == nil {
		return
	}
	fmt.Fprintf(w, "study %s finished: %d rounds\n  final model %s\n  sha256 %x\n", res.Study, len(res.Rounds), path, res.Model)
	var sites []string
	for s := range res.FinalTest {
		sites = append(sites, s)
	}
	slices.Sort(sites)
	for _, s := range sites {
		m := res.FinalTest[s]
		fmt.Fprintf(w, "  %-20s test accuracy %.3f  AUC %.3f  (%d examples)\n", s, m.Accuracy, m.AUC, m.N)
	}
}
