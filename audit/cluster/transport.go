package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/credentials"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// One port per audit node: every connection is mutual TLS, and the ALPN
// protocol the client asks for decides where it goes. Raft peers ask for
// raftALPN and must hold an audit-node certificate; everything else is
// gRPC (ALPN "h2") and is authorised per RPC by certificate role.
const raftALPN = "fedledger-raft/1"

// handshakeTimeout bounds a TLS handshake on the shared port.
const handshakeTimeout = 10 * time.Second

// mux accepts connections and routes them by negotiated protocol.
type mux struct {
	lis     net.Listener
	cfg     *tls.Config
	log     *slog.Logger
	refused *tlsutil.HandshakeLogger
	raft    *chanListener
	grpc    *chanListener
}

// newMux routes lis's connections; refused handshakes go to refused, the
// same logger every fedledger server uses (grpcauth.LogRefusedHandshakes).
func newMux(lis net.Listener, serverTLS *tls.Config, log *slog.Logger, refused *tlsutil.HandshakeLogger) *mux {
	cfg := serverTLS.Clone()
	cfg.NextProtos = []string{"h2", raftALPN}
	return &mux{lis: lis, cfg: cfg, log: log, refused: refused, raft: newChanListener(lis.Addr()), grpc: newChanListener(lis.Addr())}
}

func (m *mux) serve() {
	for {
		c, err := m.lis.Accept()
		if err != nil {
			m.raft.Close()
			m.grpc.Close()
			return
		}
		go m.route(c)
	}
}

func (m *mux) route(c net.Conn) {
	tc := tls.Server(c, m.cfg)
	tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		// Unknown CAs, expired certificates and port scans end here; the
		// caller only sees a broken connection, so the reason is logged
		// (rate-limited) and counted.
		m.refused.Refused(c.RemoteAddr(), err)
		c.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	if st.NegotiatedProtocol == raftALPN {
		p, err := tlsutil.PeerFromTLS(st)
		if err == nil && p.Role != tlsutil.RoleAuditNode {
			err = fmt.Errorf("%q is %s, raft needs %s", p.ID, p.Role, tlsutil.RoleAuditNode)
		}
		if err != nil {
			m.log.Warn("refused raft connection", slog.String("remote", c.RemoteAddr().String()), slog.Any("err", err))
			tc.Close()
			return
		}
		m.raft.deliver(tc)
		return
	}
	m.grpc.deliver(tc)
}

func (m *mux) close() error { return m.lis.Close() }

// chanListener is a net.Listener fed by the mux.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) deliver(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// streamLayer is Raft's network: the mux's raft connections inbound, and
// mutual-TLS dials that require the far end to be an audit node outbound.
type streamLayer struct {
	*chanListener
	advertise net.Addr
	client    *tls.Config
}

var _ raft.StreamLayer = (*streamLayer)(nil)

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	host, _, err := net.SplitHostPort(string(address))
	if err != nil {
		return nil, err
	}
	cfg := s.client.Clone()
	cfg.ServerName, cfg.NextProtos = host, []string{raftALPN}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(address), cfg)
	if err != nil {
		return nil, err
	}
	st := c.ConnectionState()
	p, err := tlsutil.PeerFromTLS(st)
	switch {
	case err != nil:
	case p.Role != tlsutil.RoleAuditNode:
		err = fmt.Errorf("audit: %s is %q (%s), not an audit node", address, p.ID, p.Role)
	case st.NegotiatedProtocol != raftALPN:
		err = fmt.Errorf("audit: %s does not speak %s", address, raftALPN)
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// handshaken is gRPC transport credentials for connections the mux has
// already taken through the TLS handshake: it exposes their TLS state as
// the peer's AuthInfo, so handlers read the verified certificate as usual.
type handshaken struct{}

func (handshaken) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil, nil, errors.New("audit: connection did not come through the TLS mux")
	}
	return c, credentials.TLSInfo{State: tc.ConnectionState(), CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}}, nil
}

func (handshaken) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("audit: server-side credentials only")
}

func (handshaken) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (h handshaken) Clone() credentials.TransportCredentials { return h }

func (handshaken) OverrideServerName(string) error { return nil }
