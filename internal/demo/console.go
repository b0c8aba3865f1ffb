package demo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fedledger/fedledger/internal/console"
	"github.com/fedledger/fedledger/internal/fedtest"
)

// Served is what Config.Serve is given once the study has run: the web
// consoles' URLs and the federation behind them, still up.
type Served struct {
	// CoordinatorURL is the coordinator's console, AuditURL the first
	// audit node's: plain HTTP on loopback, the demo's consoles.
	CoordinatorURL, AuditURL string
	// AuditNode is the id of the audit node AuditURL explores.
	AuditNode  string
	Federation *fedtest.Federation
	Report     *Report
}

// serveConsoles starts the coordinator's console and the first audit
// node's on loopback, gives them to cfg.Serve, and stops them when it
// returns. The coordinator's console reads the log with the coordinator's
// own identity, as `fedledger coordinator` with console.addr does, and
// both check checkpoints against the trust file the demo wrote.
func serveConsoles(ctx context.Context, cfg Config, fed *fedtest.Federation, rep *Report, logger *slog.Logger) error {
	if fed == nil || fed.Audit == nil || len(fed.Audit.Nodes) == 0 || fed.Audit.Nodes[0] == nil {
		return errors.New("demo: no federation to serve")
	}
	trust := console.TrustFile(fed.Audit.Trust)
	alog, err := fed.AuditClient(fed.PKI.Coordinator)
	if err != nil {
		return err
	}
	defer alog.Close()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With(slog.String("component", "console"))
	ch, err := console.NewCoordinator(console.CoordinatorConfig{Status: fed.Coordinator().Status, Log: alog, Trust: trust, Logger: logger})
	if err != nil {
		return err
	}
	cs, err := console.Start(console.ServerConfig{Addr: "127.0.0.1:0", Logger: logger}, ch)
	if err != nil {
		return err
	}
	defer cs.Close()
	node := fed.Audit.Nodes[0]
	ah, err := console.NewAuditNode(console.AuditNodeConfig{Node: console.Node(node), Trust: trust, Logger: logger})
	if err != nil {
		return err
	}
	as, err := console.Start(console.ServerConfig{Addr: "127.0.0.1:0", Logger: logger}, ah)
	if err != nil {
		return err
	}
	defer as.Close()
	if err := cfg.Serve(ctx, Served{CoordinatorURL: cs.URL(), AuditURL: as.URL(), AuditNode: node.ID(), Federation: fed, Report: rep}); err != nil {
		return fmt.Errorf("demo: serving the consoles: %w", err)
	}
	return nil
}
