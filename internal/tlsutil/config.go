package tlsutil

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"
)

// ServerConfig is the TLS 1.3 configuration of a server that accepts only
// clients holding a certificate from clientCAs.
func ServerConfig(id *Identity, clientCAs *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    clientCAs,
	}
}

// ClientConfig is the TLS 1.3 configuration of a client that presents id and
// trusts only servers holding a certificate from rootCAs for serverName.
func ClientConfig(id *Identity, rootCAs *x509.CertPool, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.TLSCert},
		RootCAs:      rootCAs,
		ServerName:   serverName,
	}
}

// Peer is the verified identity at the other end of a connection.
type Peer struct {
	ID   string
	Role Role
	Cert *x509.Certificate
}

// PublicKey is the peer's Ed25519 signing key.
func (p Peer) PublicKey() ed25519.PublicKey {
	k, _ := p.Cert.PublicKey.(ed25519.PublicKey)
	return k
}

// PeerFromTLS reads the peer's identity from a completed handshake. It uses
// only verified chains, so it never trusts a certificate the handshake did
// not check.
func PeerFromTLS(cs tls.ConnectionState) (Peer, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Peer{}, ErrNoPeerCertificate
	}
	return peerFromCert(cs.VerifiedChains[0][0])
}

func peerFromCert(c *x509.Certificate) (Peer, error) {
	if err := ValidID(c.Subject.CommonName); err != nil {
		return Peer{}, err
	}
	if len(c.Subject.OrganizationalUnit) != 1 {
		return Peer{}, fmt.Errorf("%w: %q has %d roles, want 1", ErrBadIdentity, c.Subject.CommonName, len(c.Subject.OrganizationalUnit))
	}
	role := Role(c.Subject.OrganizationalUnit[0])
	if !role.Valid() {
		return Peer{}, fmt.Errorf("%w: %q has unknown role %q", ErrBadIdentity, c.Subject.CommonName, role)
	}
	if _, ok := c.PublicKey.(ed25519.PublicKey); !ok {
		return Peer{}, fmt.Errorf("%w: %q key is %T, want Ed25519", ErrBadIdentity, c.Subject.CommonName, c.PublicKey)
	}
	return Peer{ID: c.Subject.CommonName, Role: role, Cert: c}, nil
}

// VerifyPeerCertificate checks a DER certificate relayed by a third party
// (not presented in a handshake): it must chain to roots, be valid at the
// given time for client authentication, and carry a well-formed identity.
func VerifyPeerCertificate(der []byte, roots *x509.CertPool, at time.Time) (Peer, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return Peer{}, fmt.Errorf("%w: %v", ErrBadIdentity, err)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: at, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return Peer{}, fmt.Errorf("%w: %q: %v", ErrBadIdentity, c.Subject.CommonName, err)
	}
	return peerFromCert(c)
}
