package grpcauth

import (
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/fedledger/fedledger/internal/logtest"
	"github.com/fedledger/fedledger/internal/tlsutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// refusals counts the hook's calls by reason.
type refusals struct {
	mu sync.Mutex
	n  map[string]int
}

func (r *refusals) add(reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[reason]++
}

func (r *refusals) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	t := 0
	for _, v := range r.n {
		t += v
	}
	return t
}

// grpcServer serves gRPC with the wrapped TLS credentials on loopback.
func grpcServer(t *testing.T, srv *tls.Config, h *tlsutil.HandshakeLogger) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(LogRefusedHandshakes(credentials.NewTLS(srv), h)))
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// dial makes one real TLS handshake against addr and reads until the
// server answers or closes (in TLS 1.3 a refused client certificate
// surfaces on the first read).
func dial(addr string, cfg *tls.Config) {
	cfg = cfg.Clone()
	cfg.NextProtos = []string{"h2"}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return
	}
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.ReadFull(c, make([]byte, 1))
	c.Close()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestRefusedHandshakesAreLoggedWithTheReason: real handshakes against a
// gRPC server with the wrapped credentials; each refusal is logged at warn
// with the client's address and the right reason, and counted; a good
// client is neither.
func TestRefusedHandshakesAreLoggedWithTheReason(t *testing.T) {
	ca, _ := tlsutil.NewCA("ours", time.Hour)
	other, _ := tlsutil.NewCA("theirs", time.Hour)
	srvID, _ := ca.Issue("coordinator", tlsutil.RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	good, _ := ca.Issue("cleveland", tlsutil.RoleClient, nil, time.Hour)
	foreign, _ := other.Issue("cleveland", tlsutil.RoleClient, nil, time.Hour)
	expired, _ := ca.Issue("hungary", tlsutil.RoleClient, nil, -time.Minute)
	var out logtest.Buffer
	counts := &refusals{n: map[string]int{}}
	h := tlsutil.NewHandshakeLogger(slog.New(slog.NewJSONHandler(&out, nil)), counts.add)
	addr := grpcServer(t, tlsutil.ServerConfig(srvID, ca.Pool()), h)

	noCert := tlsutil.ClientConfig(good, ca.Pool(), "127.0.0.1")
	noCert.Certificates = nil
	// A Go client only sends a certificate from a CA the server names in
	// its request; other stacks send theirs anyway, as this one does.
	insistent := tlsutil.ClientConfig(foreign, ca.Pool(), "127.0.0.1")
	insistent.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign.TLSCert, nil }
	cases := []struct {
		name, reason string
		connect      func()
	}{
		{"another CA", tlsutil.ReasonUnknownCA, func() { dial(addr, insistent) }},
		{"another CA, Go client", tlsutil.ReasonNoCertificate, func() { dial(addr, tlsutil.ClientConfig(foreign, ca.Pool(), "127.0.0.1")) }},
		{"expired certificate", tlsutil.ReasonExpired, func() { dial(addr, tlsutil.ClientConfig(expired, ca.Pool(), "127.0.0.1")) }},
		{"no certificate", tlsutil.ReasonNoCertificate, func() { dial(addr, noCert) }},
		{"client distrusts the server", tlsutil.ReasonPeerAlert, func() { dial(addr, tlsutil.ClientConfig(good, other.Pool(), "127.0.0.1")) }},
		{"plain text", tlsutil.ReasonNotTLS, func() {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				io.ReadAll(c)
				c.Close()
			}
		}},
		{"port scan", tlsutil.ReasonClosed, func() {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
			}
		}},
	}
	for i, tc := range cases {
		// A good client first: it must not be logged or counted.
		dial(addr, tlsutil.ClientConfig(good, ca.Pool(), "127.0.0.1"))
		tc.connect()
		waitFor(t, tc.name, func() bool { return counts.total() == i+1 && len(mustLines(t, &out)) == i+1 })
		counts.mu.Lock()
		n := counts.n[tc.reason]
		counts.n = map[string]int{"earlier": i + 1}
		counts.mu.Unlock()
		if n != 1 {
			t.Errorf("%s: not counted as %q", tc.name, tc.reason)
		}
		lines := mustLines(t, &out)
		if len(lines) != i+1 {
			t.Fatalf("%s: %d log lines, want %d", tc.name, len(lines), i+1)
		}
		l := lines[i]
		if l["level"] != "WARN" || l["msg"] != "refused TLS handshake" || l["reason"] != tc.reason || l["err"] == "" {
			t.Errorf("%s: log line %v", tc.name, l)
		}
		if host, _, err := net.SplitHostPort(l["remote"].(string)); err != nil || host != "127.0.0.1" {
			t.Errorf("%s: remote %v", tc.name, l["remote"])
		}
	}
}

func TestHandshakeReasonOfNil(t *testing.T) {
	if r := tlsutil.HandshakeReason(nil); r != "" {
		t.Fatalf("HandshakeReason(nil) = %q", r)
	}
}

func mustLines(t *testing.T, b *logtest.Buffer) []map[string]any {
	t.Helper()
	lines, err := b.Lines()
	if err != nil {
		t.Fatal(err)
	}
	return lines
}
