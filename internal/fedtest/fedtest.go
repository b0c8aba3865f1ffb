// Package fedtest wires a whole federation on loopback, once, for
// everything that needs one: the demo, the experiments and the end-to-end
// tests. A development PKI (a consortium CA and one identity per
// participant), a real audit cluster (hashicorp/raft over mutual TLS,
// bbolt on disk), a coordinator and hospital clients over gRPC with
// mutual TLS, with hooks to drop or delay what a test needs, to stop and
// restart the coordinator or a client, and the regulator's offline
// verification at the end.
//
// # What it does not do
//
// It is not a deployment: certificates come from a throw-away CA, every
// process is a goroutine, and everything listens on 127.0.0.1. Process-level
// tests with the real binary and provisioned kits are cmd/fedledger's.
package fedtest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// PKI is a development consortium: a CA and the identities it issued,
// valid for a day.
type PKI struct {
	// Dir, when set, holds the certificates (not the CA key).
	Dir         string
	CA          *tlsutil.CA
	Coordinator *tlsutil.Identity
	Admin       *tlsutil.Identity // signs study records
	Regulator   *tlsutil.Identity // observer: reads the log, verifies
	AuditNodes  []*tlsutil.Identity
	sites       map[string]*tlsutil.Identity
}

// NewPKI makes a fresh CA with a coordinator, an admin ("consortium-admin"),
// a regulator (observer) and n audit nodes ("audit-1".."audit-n"); sites are
// issued on demand. With dir set, every certificate and key but the CA's
// key is written there for inspection.
func NewPKI(dir string, auditNodes int) (*PKI, error) {
	ca, err := tlsutil.NewCA("fedledger development CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CA: ca, sites: map[string]*tlsutil.Identity{}}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("fedtest: pki directory: %w", err)
		}
		if err := ca.WriteFiles(filepath.Join(dir, "ca.pem"), ""); err != nil {
			return nil, err
		}
	}
	if p.Coordinator, err = p.Issue("coordinator", tlsutil.RoleCoordinator); err != nil {
		return nil, err
	}
	if p.Admin, err = p.Issue("consortium-admin", tlsutil.RoleAdmin); err != nil {
		return nil, err
	}
	if p.Regulator, err = p.Issue("regulator", tlsutil.RoleObserver); err != nil {
		return nil, err
	}
	for i := 1; i <= auditNodes; i++ {
		id, err := p.Issue(fmt.Sprintf("audit-%d", i), tlsutil.RoleAuditNode)
		if err != nil {
			return nil, err
		}
		p.AuditNodes = append(p.AuditNodes, id)
	}
	return p, nil
}

// Issue makes an identity for loopback use (127.0.0.1, localhost), written
// to Dir when set.
func (p *PKI) Issue(id string, role tlsutil.Role) (*tlsutil.Identity, error) {
	ident, err := p.CA.Issue(id, role, []string{"127.0.0.1", "localhost"}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	if p.Dir != "" {
		if err := ident.WriteFiles(filepath.Join(p.Dir, id+".pem"), filepath.Join(p.Dir, id+"-key.pem")); err != nil {
			return nil, err
		}
	}
	return ident, nil
}

// Site is the hospital's client identity, issued on first use.
func (p *PKI) Site(id string) (*tlsutil.Identity, error) {
	if s, ok := p.sites[id]; ok {
		return s, nil
	}
	s, err := p.Issue(id, tlsutil.RoleClient)
	if err == nil {
		p.sites[id] = s
	}
	return s, err
}

// AuditCluster is a real audit log on loopback.
type AuditCluster struct {
	// Nodes are the running nodes (nil for one stopped with StopNode).
	Nodes []*cluster.Node
	Addrs []string
	// Trust is what a regulator needs to verify offline (CA, the nodes'
	// checkpoint keys, a quorum of them).
	Trust  *audit.TrustFile
	Origin string
	pki    *PKI
	cfgs   []cluster.NodeConfig // to restart a stopped node as it was
}

// AuditOptions tune an audit cluster.
type AuditOptions struct {
	// Fast uses short Raft timeouts (tests, experiments).
	Fast   bool
	Origin string
	Logger *slog.Logger
}

// StartAuditCluster starts one node per audit identity of pki, with their
// bbolt stores under dir: the first bootstraps, the others join. A trust
// file with a majority quorum describes it.
func StartAuditCluster(ctx context.Context, pki *PKI, dir string, o AuditOptions) (*AuditCluster, error) {
	if len(pki.AuditNodes) == 0 {
		return nil, errors.New("fedtest: the PKI has no audit-node identities")
	}
	if o.Origin == "" {
		o.Origin = "fedledger-dev/audit-log"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	c := &AuditCluster{Origin: o.Origin, pki: pki}
	var certs []*x509.Certificate
	for i, id := range pki.AuditNodes {
		cfg := cluster.DefaultNodeConfig()
		cfg.Listen, cfg.DataDir, cfg.Identity, cfg.Roots = "127.0.0.1:0", filepath.Join(dir, id.ID), id, pki.CA.Pool()
		cfg.Origin, cfg.Bootstrap, cfg.Logger = o.Origin, i == 0, o.Logger.With(slog.String("component", "audit"))
		if o.Fast {
			cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
		}
		n, err := cluster.StartNode(cfg)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.Nodes, c.Addrs, certs = append(c.Nodes, n), append(c.Addrs, n.Addr()), append(certs, id.Cert)
		// A restart listens where the others know the node to be, and
		// never bootstraps again.
		cfg.Listen, cfg.Bootstrap = n.Addr(), false
		c.cfgs = append(c.cfgs, cfg)
		if i == 0 {
			if err := waitLeader(ctx, n); err != nil {
				c.Close()
				return nil, err
			}
			continue
		}
		jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = n.JoinCluster(jctx, c.Addrs[0])
		cancel()
		if err != nil {
			c.Close()
			return nil, err
		}
	}
	var err error
	if c.Trust, err = audit.NewTrustFile(o.Origin, pki.CA.CertPEM, certs, len(certs)/2+1); err != nil {
		c.Close()
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
			return fmt.Errorf("fedtest: audit node %s did not become leader: %w", n.ID(), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// Client dials the cluster as id.
func (c *AuditCluster) Client(id *tlsutil.Identity) (*cluster.Client, error) {
	return cluster.Dial(c.Addrs, tlsutil.ClientConfig(id, c.pki.CA.Pool(), ""))
}

// StopNode stops node i as a crash of its process would (its store stays
// on disk); StartNode brings it back.
func (c *AuditCluster) StopNode(i int) {
	if n := c.Nodes[i]; n != nil {
		n.Close()
		c.Nodes[i] = nil
	}
}

// StartNode restarts node i, stopped with StopNode, from its store on the
// same address; it rejoins the cluster on its own.
func (c *AuditCluster) StartNode(i int) error {
	if c.Nodes[i] != nil {
		return fmt.Errorf("fedtest: audit node %s is running", c.cfgs[i].Identity.ID)
	}
	var n *cluster.Node
	var err error
	// The address may take a moment to be free again after the stop.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if n, err = cluster.StartNode(c.cfgs[i]); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("fedtest: restarting audit node %s: %w", c.cfgs[i].Identity.ID, err)
	}
	c.Nodes[i] = n
	return nil
}

// Close stops every node (their stores stay on disk).
func (c *AuditCluster) Close() {
	for _, n := range c.Nodes {
		if n != nil {
			n.Close()
		}
	}
}
