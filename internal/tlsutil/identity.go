package tlsutil

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"regexp"
	"time"
)

// Role is what a certificate's holder is to the consortium.
type Role string

// The roles. A certificate carries exactly one.
const (
	RoleAdmin       Role = "admin"
	RoleCoordinator Role = "coordinator"
	RoleClient      Role = "client"
	RoleAuditNode   Role = "audit-node"
	RoleObserver    Role = "observer"
)

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAdmin, RoleCoordinator, RoleClient, RoleAuditNode, RoleObserver:
		return true
	}
	return false
}

// Errors callers can test with errors.Is.
var (
	ErrNoPeerCertificate = errors.New("tlsutil: peer presented no verified certificate")
	ErrBadIdentity       = errors.New("tlsutil: certificate does not carry a valid fedledger identity")
)

var idPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidID reports whether id can name a participant: lower-case letters,
// digits, '.', '_' and '-', at most 63 characters, starting alphanumeric.
func ValidID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: id %q must match %s", ErrBadIdentity, id, idPattern)
	}
	return nil
}

// CA is a consortium certificate authority.
type CA struct {
	Cert    *x509.Certificate
	Key     ed25519.PrivateKey
	CertPEM []byte
}

// Identity is one participant's certificate and private key.
type Identity struct {
	ID      string
	Role    Role
	Cert    *x509.Certificate
	Key     ed25519.PrivateKey
	CertPEM []byte
	KeyPEM  []byte
	TLSCert tls.Certificate
}

// NewCA makes a self-signed consortium CA valid for validity from now.
func NewCA(name string, validity time.Duration) (*CA, error) {
	if name == "" {
		return nil, errors.New("tlsutil: CA name is empty")
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name, Organization: []string{"fedledger consortium"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: self-sign CA: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: parse CA certificate: %w", err)
	}
	return &CA{Cert: cert, Key: priv, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Issue makes a certificate for participant id with role. hosts are the DNS
// names and IP addresses a server identity answers on (empty for a
// client-only identity). Every certificate may act as TLS client and server:
// audit nodes are both.
func (ca *CA) Issue(id string, role Role, hosts []string, validity time.Duration) (*Identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: generate key for %s: %w", id, err)
	}
	certPEM, err := ca.IssueKey(id, role, hosts, validity, pub)
	if err != nil {
		return nil, err
	}
	keyPEM, err := marshalKey(priv)
	if err != nil {
		return nil, err
	}
	return parseIdentity(certPEM, keyPEM, "issued certificate")
}

// IssueKey certifies a public key the participant generated itself (see
// NewCSR and SignCSR) and returns the PEM certificate.
func (ca *CA) IssueKey(id string, role Role, hosts []string, validity time.Duration, pub ed25519.PublicKey) ([]byte, error) {
	if err := ValidID(id); err != nil {
		return nil, err
	}
	if !role.Valid() {
		return nil, fmt.Errorf("%w: unknown role %q", ErrBadIdentity, role)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	// A certificate never outlives its CA: it would fail verification
	// from that day on anyway.
	notAfter := now.Add(validity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         id,
			OrganizationalUnit: []string{string(role)},
			Organization:       ca.Cert.Subject.Organization,
		},
		NotBefore:   now.Add(-5 * time.Minute),
		NotAfter:    notAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	tmpl.IPAddresses, tmpl.DNSNames = splitHosts(hosts)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: sign certificate for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// NewCSR makes a fresh Ed25519 key and a certificate signing request for
// participant id with role (CN = id, OU = role, hosts as SANs), for a site
// that keeps its private key and sends only the request to the consortium.
func NewCSR(id string, role Role, hosts []string) (csrPEM, keyPEM []byte, err error) {
	if err := ValidID(id); err != nil {
		return nil, nil, err
	}
	if !role.Valid() {
		return nil, nil, fmt.Errorf("%w: unknown role %q", ErrBadIdentity, role)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: id, OrganizationalUnit: []string{string(role)}}}
	tmpl.IPAddresses, tmpl.DNSNames = splitHosts(hosts)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, priv)
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = marshalKey(priv); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), keyPEM, nil
}

// CSR is a parsed, signature-checked signing request.
type CSR struct {
	ID    string
	Role  Role
	Hosts []string
	Key   ed25519.PublicKey
}

// ParseCSR decodes a PEM signing request and checks its self-signature,
// its identity and that its key is Ed25519.
func ParseCSR(csrPEM []byte) (*CSR, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("%w: not a PEM certificate request", ErrBadIdentity)
	}
	r, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if err := r.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: request signature: %v", ErrBadIdentity, err)
	}
	pub, ok := r.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: request key is %T, want Ed25519", ErrBadIdentity, r.PublicKey)
	}
	if len(r.Subject.OrganizationalUnit) != 1 {
		return nil, fmt.Errorf("%w: request names %d roles, want 1", ErrBadIdentity, len(r.Subject.OrganizationalUnit))
	}
	c := &CSR{ID: r.Subject.CommonName, Role: Role(r.Subject.OrganizationalUnit[0]), Key: pub, Hosts: r.DNSNames}
	for _, ip := range r.IPAddresses {
		c.Hosts = append(c.Hosts, ip.String())
	}
	if err := ValidID(c.ID); err != nil {
		return nil, err
	}
	if !c.Role.Valid() {
		return nil, fmt.Errorf("%w: unknown role %q", ErrBadIdentity, c.Role)
	}
	return c, nil
}

// LoadCA reads a CA certificate and its key (for provisioning only; the CA
// key never goes into a kit).
func LoadCA(certFile, keyFile string) (*CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read CA certificate %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read CA key %s: %w", keyFile, err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, fmt.Errorf("tlsutil: %s holds no PEM certificate", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w", certFile, err)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("tlsutil: %s holds no PEM key", keyFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w", keyFile, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok || !cert.IsCA || !priv.Public().(ed25519.PublicKey).Equal(cert.PublicKey) {
		return nil, fmt.Errorf("tlsutil: %s is not the key of CA certificate %s", keyFile, certFile)
	}
	return &CA{Cert: cert, Key: priv, CertPEM: certPEM}, nil
}

// WriteFiles writes the identity's certificate (0644) and key (0600).
func (id *Identity) WriteFiles(certFile, keyFile string) error {
	if err := os.WriteFile(certFile, id.CertPEM, 0o644); err != nil {
		return fmt.Errorf("tlsutil: write certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, id.KeyPEM, 0o600); err != nil {
		return fmt.Errorf("tlsutil: write key: %w", err)
	}
	return nil
}

// WriteFiles writes the CA certificate (0644) and, when keyFile is not empty,
// its key (0600).
func (ca *CA) WriteFiles(certFile, keyFile string) error {
	if err := os.WriteFile(certFile, ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("tlsutil: write CA certificate: %w", err)
	}
	if keyFile == "" {
		return nil
	}
	keyPEM, err := marshalKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return fmt.Errorf("tlsutil: write CA key: %w", err)
	}
	return nil
}

// LoadIdentity reads a PEM certificate and its PEM PKCS#8 Ed25519 key.
// Errors name the file at fault.
func LoadIdentity(certFile, keyFile string) (*Identity, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read certificate %s: %w", certFile, err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read key %s: %w", keyFile, err)
	}
	return parseIdentity(certPEM, keyPEM, certFile)
}

// LoadCertificate reads a participant's PEM certificate (no key) and its
// identity.
func LoadCertificate(file string) (Peer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Peer{}, fmt.Errorf("tlsutil: read certificate %s: %w", file, err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return Peer{}, fmt.Errorf("tlsutil: %s holds no PEM certificate", file)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return Peer{}, fmt.Errorf("tlsutil: %s: %w", file, err)
	}
	p, err := peerFromCert(c)
	if err != nil {
		return Peer{}, fmt.Errorf("tlsutil: %s: %w", file, err)
	}
	return p, nil
}

// LoadCAPool reads a PEM bundle of CA certificates.
func LoadCAPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: read CA bundle %s: %w", file, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tlsutil: CA bundle %s holds no PEM certificate", file)
	}
	return pool, nil
}

func parseIdentity(certPEM, keyPEM []byte, what string) (*Identity, error) {
	tc, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w", what, err)
	}
	cert, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tlsutil: %s: %w", what, err)
	}
	key, ok := tc.PrivateKey.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: %s: key is %T, want Ed25519", ErrBadIdentity, what, tc.PrivateKey)
	}
	p, err := peerFromCert(cert)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	tc.Leaf = cert
	return &Identity{ID: p.ID, Role: p.Role, Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM, TLSCert: tc}, nil
}

func marshalKey(k ed25519.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("tlsutil: marshal key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func randomSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("tlsutil: serial: %w", err)
	}
	return s, nil
}

// splitHosts sorts certificate hosts into IP addresses and DNS names.
func splitHosts(hosts []string) (ips []net.IP, names []string) {
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, h)
		}
	}
	return ips, names
}
