package main

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
)

func newAuditNodeCmd() *cobra.Command {
	var cfgFile string
	cmd := &cobra.Command{
		Use:   "audit-node --config audit.yaml",
		Short: "Run an audit-log node: a Raft replica of the signed round records",
		Long: `Run one node of the audit log: a Raft member (bbolt log and stable store
with fsync, file snapshots) whose state machine is a Merkle log of signed study
and round records, each validated identically on every node before it is
applied. Raft and the AuditLog gRPC service share one mutual-TLS port. The
node signs checkpoints with its certificate key and cosigns the leader's as a
witness, keeping its witness state (and any inconsistent checkpoint it is
shown) in data_dir/witness.json.

Start the first node with bootstrap: true, the others with join: <a member's
address>; a node that cannot join within --join-timeout (default 2m) exits
with status 1, naming the address and the last error. Three nodes at three
different consortium members tolerate the loss of one.

At every start the node checks its stored state (raft.db, snapshots, the tree
against the checkpoint it last cosigned) before Raft reads it. Damage is
logged at error level, counted in fedledger_audit_corruption_detected_total,
and the damaged files move to data_dir/evidence/<time>/; the node then
recovers its log from the other nodes, without voting or serving reads until
it has caught up.

Example audit.yaml:

  listen: 0.0.0.0:7600
  advertise: audit-1.example.org:7600
  metrics_listen: 127.0.0.1:9465
  data_dir: /var/lib/fedledger-audit
  tls: {cert: audit-1.pem, key: audit-1-key.pem, ca: ca.pem}
  origin: example-consortium/audit-log
  bootstrap: true                       # first node only; others: join: audit-1.example.org:7600
  console: {addr: 0.0.0.0:9471}         # read-only log explorer, mTLS for observers and admins; "" (default) disables

` + precedence,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := config.LoadAuditNode(cfgFile, cmd.Flags())
			if err != nil {
				return err
			}
			logger, err := config.NewLogger(cmd.ErrOrStderr(), c.File.Log)
			if err != nil {
				return err
			}
			c.Config.Logger = logger
			if c.Config.JoinTimeout, err = cmd.Flags().GetDuration("join-timeout"); err != nil || c.Config.JoinTimeout <= 0 {
				return fmt.Errorf("%w: --join-timeout %v must be positive", config.ErrConfig, c.Config.JoinTimeout)
			}
			n, err := cluster.StartNode(c.Config)
			if err != nil {
				return err
			}
			defer n.Close()
			// A node recovering from detected corruption is already a member;
			// the leader brings it back.
			if c.File.Join != "" && !n.Member() && !n.Recovering() {
				logger.Info("joining the audit cluster", slog.String("via", c.File.Join), slog.Duration("gives_up_after", c.Config.JoinTimeout))
				if err := n.JoinCluster(cmd.Context(), c.File.Join); err != nil {
					return err
				}
				logger.Info("joined the audit cluster", slog.String("via", c.File.Join))
			}
			if c.File.MetricsListen != "" {
				stop, err := serveMetrics(c.File.MetricsListen, n.Metrics(), logger)
				if err != nil {
					return err
				}
				defer stop()
			}
			if c.File.Console.Addr != "" {
				stop, err := startAuditConsole(c.File.Console.Addr, c, n, logger)
				if err != nil {
					return err
				}
				defer stop()
			}
			select {
			case <-cmd.Context().Done():
				logger.Info("shutting down")
				return nil
			case <-n.Done():
				// Corruption found while running: exit non-zero so the
				// service manager restarts it; the restart recovers.
				return n.Err()
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfgFile, "config", "", "YAML configuration file")
	f.String("listen", "", "address for Raft and the AuditLog service (default 127.0.0.1:7600)")
	f.String("data-dir", "", "directory for the Raft store, snapshots and witness state")
	f.Bool("bootstrap", false, "start a new cluster with this node as its first voter")
	f.String("join", "", "address of an existing member to join through")
	f.Duration("join-timeout", 2*time.Minute, "give up joining (exit status 1) when the join address has not answered in this time")
	return cmd
}
