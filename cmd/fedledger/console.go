package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/console"
	"github.com/fedledger/fedledger/internal/demo"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// startCoordinatorConsole serves the coordinator's console on addr over
// mutual TLS with the coordinator's certificate. It reads the audit log
// through alog (nil: no log) and learns the nodes' checkpoint keys from
// their certificates (console.HandshakeTrust).
func startCoordinatorConsole(addr string, c *config.Coordinator, co *coordinator.Coordinator, alog *cluster.Client, logger *slog.Logger) (stop func(), err error) {
	cfg := console.CoordinatorConfig{Status: co.Status, Logger: logger}
	if alog != nil {
		nodes := c.File.Audit.Nodes
		cfg.Log, cfg.Trust = alog, console.HandshakeTrust(func() []string { return nodes }, c.AuditTLS, "", 0)
	}
	h, err := console.NewCoordinator(cfg)
	if err != nil {
		return nil, err
	}
	srv, err := console.Start(console.ServerConfig{Addr: addr, Identity: c.Identity, Roots: c.Config.TLS.ClientCAs, Logger: logger}, h)
	if err != nil {
		return nil, err
	}
	return func() { srv.Close() }, nil
}

// startAuditConsole serves an audit node's console on addr over mutual
// TLS with the node's certificate. The checkpoint keys are the voters'
// certificates' (console.HandshakeTrust), the quorum the node's.
func startAuditConsole(addr string, c *config.AuditNode, n *cluster.Node, logger *slog.Logger) (stop func(), err error) {
	voters := func() []string {
		var out []string
		for _, m := range n.Status().Members {
			if m.Voter {
				out = append(out, m.Address)
			}
		}
		return out
	}
	tlsCfg := tlsutil.ClientConfig(c.Config.Identity, c.Config.Roots, "")
	h, err := console.NewAuditNode(console.AuditNodeConfig{Node: console.Node(n), Logger: logger,
		Trust: console.HandshakeTrust(voters, tlsCfg, c.Config.Origin, c.Config.Quorum)})
	if err != nil {
		return nil, err
	}
	srv, err := console.Start(console.ServerConfig{Addr: addr, Identity: c.Config.Identity, Roots: c.Config.Roots, Logger: logger}, h)
	if err != nil {
		return nil, err
	}
	return func() { srv.Close() }, nil
}

// serveDemoConsoles is `fedledger demo --serve`: print the consoles'
// addresses and keep the federation up until the context ends (Ctrl-C).
func serveDemoConsoles(w io.Writer) func(context.Context, demo.Served) error {
	return func(ctx context.Context, s demo.Served) error {
		fmt.Fprintf(w, "\nThe audit log stays up, with the coordinator's final status. Read-only web consoles (plain HTTP on loopback: the demo's only):\n")
		fmt.Fprintf(w, "  coordinator          %s\n", s.CoordinatorURL)
		fmt.Fprintf(w, "  audit node %-9s %s\n", s.AuditNode, s.AuditURL)
		fmt.Fprintf(w, "Press Ctrl-C to stop.\n")
		<-ctx.Done()
		return nil
	}
}

func newConsoleCmd() *cobra.Command {
	var cert, key, ca, listen string
	cmd := &cobra.Command{
		Use:   "console URL --cert observer.pem --key observer-key.pem --ca ca.pem",
		Short: "Open a coordinator's or an audit node's web console in your browser, with your certificate",
		Long: `Open a read-only web console that a coordinator or an audit node serves
(console.addr in its configuration) over mutual TLS. The console admits
consortium certificates with the observer or admin role; browsers cannot
present them (they are Ed25519, which browsers do not speak in TLS), so this
command holds your certificate and key, serves the console to your browser
on a loopback address of this machine (plain HTTP, never another interface),
and forwards every request with your certificate.

While it runs, anyone who can reach that loopback address on this machine
reads the console as you. Stop it with Ctrl-C.

'fedledger demo --serve' serves the demo's consoles without any of this.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cert == "" || key == "" || ca == "" {
				return fmt.Errorf("%w: console needs --cert, --key and --ca (an observer's or admin's identity)", config.ErrConfig)
			}
			target, err := url.Parse(args[0])
			if err != nil || target.Scheme != "https" || target.Host == "" {
				return fmt.Errorf("%w: console URL %q: want https://host:port/ (the server's console.addr)", config.ErrConfig, args[0])
			}
			id, err := tlsutil.LoadIdentity(cert, key)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			pool, err := tlsutil.LoadCAPool(ca)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			lf := config.LogFile{Format: cmd.Flag("log-format").Value.String(), Level: cmd.Flag("log-level").Value.String()}
			logger, err := config.NewLogger(cmd.ErrOrStderr(), lf)
			if err != nil {
				return err
			}
			h, err := console.NewProxy(console.ProxyConfig{Target: target, TLS: tlsutil.ClientConfig(id, pool, ""), Logger: logger})
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			srv, err := console.Start(console.ServerConfig{Addr: listen, Logger: logger}, h)
			if err != nil {
				if errors.Is(err, console.ErrNotLoopback) {
					return fmt.Errorf("%w: --listen: %v", config.ErrConfig, err)
				}
				return err
			}
			defer srv.Close()
			fmt.Fprintf(cmd.OutOrStdout(), "console %s as %s (%s): open %s\nPress Ctrl-C to stop.\n", target, id.ID, id.Role, srv.URL())
			<-cmd.Context().Done()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cert, "cert", "", "your certificate (observer or admin)")
	f.StringVar(&key, "key", "", "your key")
	f.StringVar(&ca, "ca", "", "consortium CA bundle")
	f.StringVar(&listen, "listen", "127.0.0.1:8470", "loopback address to serve your browser on")
	return cmd
}
