// Package grpcauth reads who is calling a gRPC handler from its mutual-TLS
// connection and checks the caller's role, and reports refused handshakes
// of a gRPC server. The identities themselves (CA, certificates, roles,
// peers) are internal/tlsutil's, which does not depend on gRPC, so the
// audit log's pure core can use them.
package grpcauth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/fedledger/fedledger/internal/tlsutil"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerFromContext reads the peer's identity in a gRPC handler.
func PeerFromContext(ctx context.Context) (tlsutil.Peer, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return tlsutil.Peer{}, fmt.Errorf("%w: no peer in context", tlsutil.ErrNoPeerCertificate)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return tlsutil.Peer{}, fmt.Errorf("%w: connection is not TLS", tlsutil.ErrNoPeerCertificate)
	}
	return tlsutil.PeerFromTLS(info.State)
}

// ErrRole: the caller's certificate role may not call this RPC.
var ErrRole = errors.New("grpcauth: caller's role may not call this")

// RequireRole reads the verified caller of a gRPC handler and checks its
// role is one of roles; the error names the caller, its role and rpc.
func RequireRole(ctx context.Context, rpc string, roles ...tlsutil.Role) (tlsutil.Peer, error) {
	p, err := PeerFromContext(ctx)
	if err != nil {
		return p, err
	}
	if !slices.Contains(roles, p.Role) {
		return p, fmt.Errorf("%w: %q (%s) may not call %s", ErrRole, p.ID, p.Role, rpc)
	}
	return p, nil
}

// LogRefusedHandshakes wraps a gRPC server's transport credentials (e.g.
// credentials.NewTLS(ServerConfig(...))) so that every handshake they
// refuse is reported to h; the caller only ever sees a broken connection,
// so without this the reason is lost.
func LogRefusedHandshakes(creds credentials.TransportCredentials, h *tlsutil.HandshakeLogger) credentials.TransportCredentials {
	return loggedCreds{TransportCredentials: creds, h: h}
}

type loggedCreds struct {
	credentials.TransportCredentials
	h *tlsutil.HandshakeLogger
}

func (c loggedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.h.Refused(conn.RemoteAddr(), err)
	}
	return out, info, err
}

func (c loggedCreds) Clone() credentials.TransportCredentials {
	return loggedCreds{TransportCredentials: c.TransportCredentials.Clone(), h: c.h}
}
