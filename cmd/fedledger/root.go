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
	root.AddCommand(newCoordinatorCmd(), newClientCmd(), newAuditNodeCmd(), newProvisionCmd(), newVerifyCmd(), newStudyCmd(), newTrustCmd(), newStandardizationCmd(), newTuningCmd(), newDemoCmd(), newConsoleCmd(), newFHIRCmd(), newVersionCmd())
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
