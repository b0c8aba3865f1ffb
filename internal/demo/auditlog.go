package demo

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
)

// auditCluster is the demo's three-node audit log on loopback.
type auditCluster struct {
	nodes []*cluster.Node
	addrs []string
	trust *audit.TrustFile
}

const demoOrigin = "fedledger-demo/audit-log"

// startAuditCluster starts three audit nodes (real Raft over mutual TLS,
// bbolt stores under dir): the first bootstraps, the others join.
func startAuditCluster(ctx context.Context, pki *devPKI, dir string, logger *slog.Logger) (*auditCluster, error) {
	c := &auditCluster{}
	var certs []*x509.Certificate
	for i, id := range pki.auditNodes {
		cfg := cluster.DefaultNodeConfig()
		cfg.Listen, cfg.DataDir, cfg.Identity, cfg.Roots = "127.0.0.1:0", filepath.Join(dir, id.ID), id, pki.ca.Pool()
		cfg.Origin, cfg.Bootstrap, cfg.Logger = demoOrigin, i == 0, logger.With(slog.String("component", "audit"))
		n, err := cluster.StartNode(cfg)
		if err != nil {
			c.close()
			return nil, err
		}
		c.nodes, c.addrs, certs = append(c.nodes, n), append(c.addrs, n.Addr()), append(certs, id.Cert)
		if i == 0 {
			if err := waitLeader(ctx, n); err != nil {
				c.close()
				return nil, err
			}
			continue
		}
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = n.JoinCluster(jctx, c.addrs[0])
		cancel()
		if err != nil {
			c.close()
			return nil, err
		}
	}
	var err error
	if c.trust, err = audit.NewTrustFile(demoOrigin, pki.ca.CertPEM, certs, 2); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func waitLeader(ctx context.Context, n *cluster.Node) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for !n.IsLeader() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: audit node %s did not become leader: %w", n.ID(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

func (c *auditCluster) close() {
	for _, n := range c.nodes {
		n.Close()
	}
}
