package tlsutil

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// syncBuffer collects log lines written from server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

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
func grpcServer(t *testing.T, srv *tls.Config, h *HandshakeLogger) string {
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
	ca, _ := NewCA("ours", time.Hour)
	other, _ := NewCA("theirs", time.Hour)
	srvID, _ := ca.Issue("coordinator", RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	good, _ := ca.Issue("cleveland", RoleClient, nil, time.Hour)
	foreign, _ := other.Issue("cleveland", RoleClient, nil, time.Hour)
	expired, _ := ca.Issue("hungary", RoleClient, nil, -time.Minute)
	var out syncBuffer
	counts := &refusals{n: map[string]int{}}
	h := NewHandshakeLogger(slog.New(slog.NewJSONHandler(&out, nil)), counts.add)
	addr := grpcServer(t, ServerConfig(srvID, ca.Pool()), h)

	noCert := ClientConfig(good, ca.Pool(), "127.0.0.1")
	noCert.Certificates = nil
	// A Go client only sends a certificate from a CA the server names in
	// its request; other stacks send theirs anyway, as this one does.
	insistent := ClientConfig(foreign, ca.Pool(), "127.0.0.1")
	insistent.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &foreign.TLSCert, nil }
	cases := []struct {
		name, reason string
		connect      func()
	}{
		{"another CA", ReasonUnknownCA, func() { dial(addr, insistent) }},
		{"another CA, Go client", ReasonNoCertificate, func() { dial(addr, ClientConfig(foreign, ca.Pool(), "127.0.0.1")) }},
		{"expired certificate", ReasonExpired, func() { dial(addr, ClientConfig(expired, ca.Pool(), "127.0.0.1")) }},
		{"no certificate", ReasonNoCertificate, func() { dial(addr, noCert) }},
		{"client distrusts the server", ReasonPeerAlert, func() { dial(addr, ClientConfig(good, other.Pool(), "127.0.0.1")) }},
		{"plain text", ReasonNotTLS, func() {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				io.ReadAll(c)
				c.Close()
			}
		}},
		{"port scan", ReasonClosed, func() {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
			}
		}},
	}
	for i, tc := range cases {
		// A good client first: it must not be logged or counted.
		dial(addr, ClientConfig(good, ca.Pool(), "127.0.0.1"))
		tc.connect()
		waitFor(t, tc.name, func() bool { return counts.total() == i+1 && len(out.lines(t)) == i+1 })
		counts.mu.Lock()
		n := counts.n[tc.reason]
		counts.n = map[string]int{"earlier": i + 1}
		counts.mu.Unlock()
		if n != 1 {
			t.Errorf("%s: not counted as %q", tc.name, tc.reason)
		}
		lines := out.lines(t)
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

// TestRefusedHandshakeLogIsRateLimited: a burst of refused handshakes (a
// port scan, a misconfigured client in a loop) logs at most the burst per
// window but counts every one; the first line of the next window says how
// many were not logged. The clock is the test's, so this does not depend
// on how fast the machine is.
func TestRefusedHandshakeLogIsRateLimited(t *testing.T) {
	ca, _ := NewCA("ours", time.Hour)
	other, _ := NewCA("theirs", time.Hour)
	srvID, _ := ca.Issue("coordinator", RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	foreign, _ := other.Issue("mallory", RoleClient, nil, time.Hour)
	var out syncBuffer
	counts := &refusals{n: map[string]int{}}
	h := NewHandshakeLogger(slog.New(slog.NewJSONHandler(&out, nil)), counts.add)
	var clockMu sync.Mutex
	clock := time.Unix(1e9, 0)
	h.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	addr := grpcServer(t, ServerConfig(srvID, ca.Pool()), h)

	const attempts = 40
	for i := 0; i < attempts; i++ {
		dial(addr, ClientConfig(foreign, ca.Pool(), "127.0.0.1"))
	}
	waitFor(t, "every refusal counted", func() bool { return counts.total() == attempts && len(out.lines(t)) >= h.burst })
	if n := len(out.lines(t)); n != h.burst {
		t.Fatalf("%d log lines for %d refusals, want the burst of %d", n, attempts, h.burst)
	}
	clockMu.Lock()
	clock = clock.Add(h.every)
	clockMu.Unlock()
	dial(addr, ClientConfig(foreign, ca.Pool(), "127.0.0.1"))
	waitFor(t, "the next window's refusal", func() bool { return counts.total() == attempts+1 && len(out.lines(t)) > h.burst })
	lines := out.lines(t)
	last := lines[len(lines)-1]
	if len(lines) != h.burst+1 || last["not_logged_before"] != float64(attempts-h.burst) {
		t.Fatalf("after the window: %d lines, last %v; want %d lines and not_logged_before=%d", len(lines), last, h.burst+1, attempts-h.burst)
	}
}

func TestHandshakeReasonOfNil(t *testing.T) {
	if r := HandshakeReason(nil); r != "" {
		t.Fatalf("HandshakeReason(nil) = %q", r)
	}
}
