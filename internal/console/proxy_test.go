package console

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TestProxy: a browser on loopback reads a mutual-TLS console through
// the proxy, as the proxy's certificate; the console's refusals pass
// through, and a console that does not answer is a 502.
func TestProxy(t *testing.T) {
	c := newConsortium(t)
	console, err := Start(ServerConfig{Addr: "127.0.0.1:0", Identity: c.server, Roots: c.ca.Pool()}, hello)
	if err != nil {
		t.Fatal(err)
	}
	defer console.Close()
	target, _ := url.Parse(console.URL())
	open := func(id *tlsutil.Identity, target *url.URL) (int, string) {
		t.Helper()
		h, err := NewProxy(ProxyConfig{Target: target, TLS: tlsutil.ClientConfig(id, c.ca.Pool(), "")})
		if err != nil {
			t.Fatal(err)
		}
		p, err := Start(ServerConfig{Addr: "127.0.0.1:0"}, h)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		resp, err := http.Get(p.URL() + "some/page?x=1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, htmlText(string(b))
	}
	if status, body := open(c.observer, target); status != 200 || body != "hello regulator" {
		t.Errorf("as the regulator: %d %q", status, body)
	}
	if status, body := open(c.client, target); status != 403 || !strings.Contains(body, `"cleveland" has the client role`) {
		t.Errorf("as a hospital: %d %q", status, body)
	}
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead, _ := url.Parse("https://" + lis.Addr().String() + "/")
	lis.Close()
	if status, body := open(c.observer, dead); status != 502 || !strings.Contains(body, "could not be reached") {
		t.Errorf("nobody there: %d %q", status, body)
	}
	plain, _ := url.Parse("http://127.0.0.1:1/")
	for _, bad := range []ProxyConfig{{Target: plain, TLS: tlsutil.ClientConfig(c.observer, c.ca.Pool(), "")}, {Target: target},
		{Target: target, TLS: &tls.Config{RootCAs: c.ca.Pool()}}} {
		if _, err := NewProxy(bad); err == nil {
			t.Errorf("proxy config %+v accepted", bad)
		}
	}
}

// tlsNode is a TLS server presenting id, completing handshakes only.
func tlsNode(t *testing.T, id *tlsutil.Identity, c *consortium) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", tlsutil.ServerConfig(id, c.ca.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	return lis.Addr().String()
}

// TestHandshakeTrust: the checkpoint keys are the audit nodes' own
// certificates' keys, named by their ids; a server that is not an audit
// node, or too few answering, is no trust.
func TestHandshakeTrust(t *testing.T) {
	c := newConsortium(t)
	node := tlsNode(t, c.auditNode, c)
	clientTLS := tlsutil.ClientConfig(c.observer, c.ca.Pool(), "")
	tr, err := HandshakeTrust(func() []string { return []string{node} }, clientTLS, "test/log", 0)(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tr.Quorum != 1 || tr.Origin != "test/log" || tr.Roots != clientTLS.RootCAs {
		t.Fatalf("trust %+v", tr)
	}
	signer, err := audit.NoteSigner(c.auditNode)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := note.Sign(&note.Note{Text: audit.Checkpoint{Origin: "test/log", Size: 1}.String()}, signer)
	if err != nil {
		t.Fatal(err)
	}
	if _, names, err := audit.OpenCheckpoint(signed, tr.Keys, tr.Quorum); err != nil || len(names) != 1 || names[0] != "audit-1" {
		t.Fatalf("a checkpoint the node signed: %v %v", names, err)
	}
	// A coordinator is not an audit node.
	coord := tlsNode(t, c.server, c)
	if _, err := HandshakeTrust(func() []string { return []string{coord} }, clientTLS, "", 0)(context.Background()); !errors.Is(err, ErrTrust) || !strings.Contains(err.Error(), "not audit-node") {
		t.Errorf("a coordinator's key: %v", err)
	}
	// One of two answering: a majority needs both; a quorum of one does.
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	gone := lis.Addr().String()
	lis.Close()
	two := func() []string { return []string{node, gone} }
	if _, err := HandshakeTrust(two, clientTLS, "", 0)(context.Background()); !errors.Is(err, ErrTrust) || !strings.Contains(err.Error(), "1 of 2 nodes answered") {
		t.Errorf("majority of two with one down: %v", err)
	}
	if tr, err := HandshakeTrust(two, clientTLS, "", 1)(context.Background()); err != nil || tr.Quorum != 1 {
		t.Errorf("quorum one with one down: %+v %v", tr, err)
	}
	if _, err := HandshakeTrust(func() []string { return nil }, clientTLS, "", 0)(context.Background()); !errors.Is(err, ErrTrust) {
		t.Errorf("no addresses: %v", err)
	}
}
