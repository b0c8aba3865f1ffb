// Package provision turns one consortium file into a consortium CA and a
// kit per participant: its certificate and key, the CA bundle, a ready
// configuration file for its role, and the trust file `fedledger verify`
// uses. Re-running it with an added participant keeps the CA and every
// existing kit; only new participants (and those named for rotation) get
// new certificates. A site that keeps its own key sends a signing request
// instead (tlsutil.NewCSR, SignRequest).
package provision

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// ErrConsortium marks a bad consortium file.
var ErrConsortium = errors.New("provision: bad consortium file")

// Server is a participant others dial.
type Server struct {
	ID      string   `mapstructure:"id"`
	Address string   `mapstructure:"address"` // host:port others dial
	Hosts   []string `mapstructure:"hosts"`   // extra names for its certificate
}

// Hospital is a client site.
type Hospital struct {
	ID string `mapstructure:"id"`
	// Heart selects one of the shipped heart-disease sites as its data
	// (for trials); otherwise its config has a CSV section to fill in.
	Heart string `mapstructure:"heart"`
}

// Consortium is the consortium file.
type Consortium struct {
	Name        string        `mapstructure:"name"`
	Origin      string        `mapstructure:"origin"`
	CAValidity  time.Duration `mapstructure:"ca_validity"`
	Validity    time.Duration `mapstructure:"validity"`
	Coordinator Server        `mapstructure:"coordinator"`
	AuditNodes  []Server      `mapstructure:"audit_nodes"`
	Hospitals   []Hospital    `mapstructure:"hospitals"`
	Admins      []string      `mapstructure:"admins"`
	Observers   []string      `mapstructure:"observers"`
}

// Load reads and checks a consortium file; unknown keys are errors.
func Load(path string) (*Consortium, error) {
	v := viper.New()
	v.SetConfigFile(path)
	v.SetConfigType("yaml")
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConsortium, path, err)
	}
	c := &Consortium{CAValidity: 5 * 365 * 24 * time.Hour, Validity: 365 * 24 * time.Hour}
	if err := v.UnmarshalExact(c, func(dc *mapstructure.DecoderConfig) {
		dc.DecodeHook = mapstructure.StringToTimeDurationHookFunc()
	}); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConsortium, path, err)
	}
	if c.Origin == "" {
		c.Origin = c.Name + "/audit-log"
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConsortium, path, err)
	}
	return c, nil
}

// Validate checks the consortium: ids valid and unique, addresses parse,
// at least one audit node and one hospital.
func (c *Consortium) Validate() error {
	var errs []error
	if c.Name == "" || strings.ContainsAny(c.Origin, " \t\n") {
		errs = append(errs, errors.New("name is required (and origin has no spaces)"))
	}
	seen := map[string]string{}
	id := func(what, v string) {
		if err := tlsutil.ValidID(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		} else if prev, dup := seen[v]; dup {
			errs = append(errs, fmt.Errorf("%s: id %q is already the %s", what, v, prev))
		}
		seen[v] = what
	}
	addr := func(what, v string) {
		if _, _, err := net.SplitHostPort(v); err != nil {
			errs = append(errs, fmt.Errorf("%s: address %q: %v", what, v, err))
		}
	}
	id("coordinator", c.Coordinator.ID)
	addr("coordinator", c.Coordinator.Address)
	// Two servers at one address could not both listen.
	at := map[string]string{c.Coordinator.Address: c.Coordinator.ID}
	for _, n := range c.AuditNodes {
		if other, dup := at[n.Address]; dup {
			errs = append(errs, fmt.Errorf("audit node %s: address %s is also %s's", n.ID, n.Address, other))
		}
		at[n.Address] = n.ID
	}
	if len(c.AuditNodes) == 0 {
		errs = append(errs, errors.New("audit_nodes: at least one (three at three members tolerate one loss)"))
	}
	for _, n := range c.AuditNodes {
		id("audit node", n.ID)
		addr("audit node "+n.ID, n.Address)
	}
	if len(c.Hospitals) == 0 {
		errs = append(errs, errors.New("hospitals: none listed"))
	}
	for _, h := range c.Hospitals {
		id("hospital", h.ID)
		if h.Heart != "" && !slices.Contains(train.Hospitals, h.Heart) {
			errs = append(errs, fmt.Errorf("hospital %s: heart %q is not one of %v", h.ID, h.Heart, train.Hospitals))
		}
	}
	if len(c.Admins) == 0 {
		errs = append(errs, errors.New("admins: at least one (they sign studies)"))
	}
	for _, a := range c.Admins {
		id("admin", a)
	}
	for _, o := range c.Observers {
		id("observer", o)
	}
	if c.Validity <= 0 || c.CAValidity < c.Validity {
		errs = append(errs, fmt.Errorf("validity %v must be > 0 and not exceed ca_validity %v", c.Validity, c.CAValidity))
	}
	return errors.Join(errs...)
}

// Options of a provisioning run.
type Options struct {
	// Out is the consortium directory: ca/ and kits/<id>/.
	Out string
	// Rotate names participants whose certificate and key are reissued.
	Rotate []string
	// Now is the provisioning time (tests); zero means time.Now.
}

// Result says what a run did.
type Result struct {
	NewCA   bool
	Issued  []string // new or rotated kits
	Kept    []string // existing kits left as they were
	KitsDir string
}

type participant struct {
	id    string
	role  tlsutil.Role
	hosts []string
}

func hostOf(addr string) []string {
	h, _, _ := net.SplitHostPort(addr)
	return []string{h}
}

func (c *Consortium) participants() []participant {
	ps := []participant{{c.Coordinator.ID, tlsutil.RoleCoordinator, append(hostOf(c.Coordinator.Address), c.Coordinator.Hosts...)}}
	for _, n := range c.AuditNodes {
		ps = append(ps, participant{n.ID, tlsutil.RoleAuditNode, append(hostOf(n.Address), n.Hosts...)})
	}
	for _, h := range c.Hospitals {
		ps = append(ps, participant{h.ID, tlsutil.RoleClient, nil})
	}
	for _, a := range c.Admins {
		ps = append(ps, participant{a, tlsutil.RoleAdmin, nil})
	}
	for _, o := range c.Observers {
		ps = append(ps, participant{o, tlsutil.RoleObserver, nil})
	}
	return ps
}

// Run provisions the consortium into opts.Out.
func Run(c *Consortium, opts Options) (*Result, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConsortium, err)
	}
	caDir, kits := filepath.Join(opts.Out, "ca"), filepath.Join(opts.Out, "kits")
	for _, d := range []string{caDir, kits} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	res := &Result{KitsDir: kits}
	caCert, caKey := filepath.Join(caDir, "ca.pem"), filepath.Join(caDir, "ca-key.pem")
	ca, err := tlsutil.LoadCA(caCert, caKey)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if ca, err = tlsutil.NewCA(c.Name+" consortium CA", c.CAValidity); err != nil {
			return nil, err
		}
		if err := ca.WriteFiles(caCert, caKey); err != nil {
			return nil, err
		}
		res.NewCA = true
	case err != nil:
		return nil, fmt.Errorf("provision: existing CA in %s: %w", caDir, err)
	}
	for _, r := range opts.Rotate {
		if !slices.ContainsFunc(c.participants(), func(p participant) bool { return p.id == r }) {
			return nil, fmt.Errorf("%w: --rotate %q: no such participant", ErrConsortium, r)
		}
	}
	// Certificates first: the trust file needs the audit nodes'.
	var nodeCerts []*x509.Certificate
	for _, p := range c.participants() {
		dir := filepath.Join(kits, p.id)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		certFile, keyFile := filepath.Join(dir, p.id+".pem"), filepath.Join(dir, p.id+"-key.pem")
		existing, err := tlsutil.LoadCertificate(certFile)
		keep := err == nil && !slices.Contains(opts.Rotate, p.id)
		if keep {
			if existing.Role != p.role {
				return nil, fmt.Errorf("provision: %s holds a %s certificate, the consortium file makes %q a %s; rotate it", certFile, existing.Role, p.id, p.role)
			}
			if _, err := existing.Cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				return nil, fmt.Errorf("provision: %s no longer verifies against the CA (%v); rotate it", certFile, err)
			}
			res.Kept = append(res.Kept, p.id)
			if p.role == tlsutil.RoleAuditNode {
				nodeCerts = append(nodeCerts, existing.Cert)
			}
			continue
		}
		id, err := ca.Issue(p.id, p.role, p.hosts, c.Validity)
		if err != nil {
			return nil, err
		}
		if err := id.WriteFiles(certFile, keyFile); err != nil {
			return nil, err
		}
		res.Issued = append(res.Issued, p.id)
		if p.role == tlsutil.RoleAuditNode {
			nodeCerts = append(nodeCerts, id.Cert)
		}
	}
	quorum := len(c.AuditNodes)/2 + 1
	trust, err := audit.NewTrustFile(c.Origin, ca.CertPEM, nodeCerts, quorum)
	if err != nil {
		return nil, err
	}
	metrics := c.metricsAddrs()
	for _, p := range c.participants() {
		dir := filepath.Join(kits, p.id)
		if err := os.WriteFile(filepath.Join(dir, "ca.pem"), ca.CertPEM, 0o644); err != nil {
			return nil, err
		}
		if err := trust.Write(filepath.Join(dir, "trust.json")); err != nil {
			return nil, err
		}
		name, text := c.configFor(p, metrics[p.id])
		if name == "" {
			continue
		}
		// A site may have edited its config: write it only if absent.
		path := filepath.Join(dir, name)
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
				return nil, err
			}
		}
	}
	return res, nil
}

// SignRequest signs a site's certificate request for the consortium: the
// requested id must be a participant of the consortium file, with the role
// the file gives it. It returns the PEM certificate.
func SignRequest(c *Consortium, ca *tlsutil.CA, csrPEM []byte) ([]byte, error) {
	r, err := tlsutil.ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	for _, p := range c.participants() {
		if p.id != r.ID {
			continue
		}
		if p.role != r.Role {
			return nil, fmt.Errorf("%w: %q asks for role %s, the consortium file makes it a %s", ErrConsortium, r.ID, r.Role, p.role)
		}
		return ca.IssueKey(p.id, p.role, p.hosts, c.Validity, r.Key)
	}
	return nil, fmt.Errorf("%w: %q is not in the consortium file", ErrConsortium, r.ID)
}
