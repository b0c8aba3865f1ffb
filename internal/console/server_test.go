package console

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// consortium is a CA with one identity per role, and an outsider from
// another CA.
type consortium struct {
	ca                                           *tlsutil.CA
	server, observer, admin, client, coordinator *tlsutil.Identity
	auditNode, outsider                          *tlsutil.Identity
}

func newConsortium(t *testing.T) *consortium {
	t.Helper()
	ca, err := tlsutil.NewCA("consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsutil.NewCA("someone else", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *tlsutil.CA, id string, role tlsutil.Role) *tlsutil.Identity {
		i, err := ca.Issue(id, role, []string{"127.0.0.1", "localhost"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	return &consortium{ca: ca, server: issue(ca, "coordinator", tlsutil.RoleCoordinator), observer: issue(ca, "regulator", tlsutil.RoleObserver),
		admin: issue(ca, "consortium-admin", tlsutil.RoleAdmin), client: issue(ca, "cleveland", tlsutil.RoleClient),
		coordinator: issue(ca, "coordinator-2", tlsutil.RoleCoordinator), auditNode: issue(ca, "audit-1", tlsutil.RoleAuditNode),
		outsider: issue(other, "regulator", tlsutil.RoleObserver)}
}

// hello is a page that names its reader.
var hello = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	v, _ := viewer(r)
	io.WriteString(w, "hello "+v.ID)
})

// fetch GETs url as id (nil: no certificate), trusting roots.
func fetch(t *testing.T, url string, id *tlsutil.Identity, roots *x509.CertPool) (int, string, http.Header) {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots}
	if id != nil {
		cfg.Certificates = []tls.Certificate{id.TLSCert}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestAccessByRole: over mutual TLS, observers and admins of the
// consortium read; anyone else gets 403 naming why.
func TestAccessByRole(t *testing.T) {
	c := newConsortium(t)
	srv, err := Start(ServerConfig{Addr: "127.0.0.1:0", Identity: c.server, Roots: c.ca.Pool()}, hello)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL(), "https://127.0.0.1:") {
		t.Fatalf("URL %s", srv.URL())
	}
	for _, tc := range []struct {
		name   string
		id     *tlsutil.Identity
		status int
		want   string
	}{
		{"observer", c.observer, 200, "hello regulator"},
		{"admin", c.admin, 200, "hello consortium-admin"},
		{"no certificate", nil, 403, "no client certificate: the console needs a consortium certificate with the observer or admin role"},
		{"another CA", c.outsider, 403, `not a valid consortium identity: "regulator"`},
		{"a hospital", c.client, 403, `"cleveland" has the client role; the console is for the observer or admin roles`},
		{"a coordinator", c.coordinator, 403, `"coordinator-2" has the coordinator role`},
		{"an audit node", c.auditNode, 403, `"audit-1" has the audit-node role`},
	} {
		status, body, hdr := fetch(t, srv.URL(), tc.id, c.ca.Pool())
		if status != tc.status || !strings.Contains(htmlText(body), tc.want) {
			t.Errorf("%s: %d, want %d with %q\n%s", tc.name, status, tc.status, tc.want, body)
		}
		if csp := hdr.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
			t.Errorf("%s: Content-Security-Policy %q", tc.name, csp)
		}
	}
}

func htmlText(s string) string { return strings.ReplaceAll(s, "&#34;", `"`) }

// TestReaderExpired: a certificate is judged at the request's time.
func TestReaderExpired(t *testing.T) {
	c := newConsortium(t)
	r := httptest.NewRequest("GET", "/", nil)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.observer.Cert}}
	if _, err := Reader(r, c.ca.Pool(), time.Now()); err != nil {
		t.Fatalf("now: %v", err)
	}
	_, err := Reader(r, c.ca.Pool(), time.Now().Add(2*time.Hour))
	if !errors.Is(err, ErrNotConsortium) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("in two hours: %v", err)
	}
	r.TLS = nil
	if _, err := Reader(r, c.ca.Pool(), time.Now()); !errors.Is(err, ErrNoCertificate) {
		t.Fatalf("plain request: %v", err)
	}
}

// TestPlainOnlyOnLoopback: without mutual TLS a console listens only on
// a loopback address and answers only to a loopback Host.
func TestPlainOnlyOnLoopback(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "[::]:0", "example.org:0"} {
		if s, err := Start(ServerConfig{Addr: addr}, hello); !errors.Is(err, ErrNotLoopback) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: %v, want ErrNotLoopback", addr, err)
		}
	}
	c := newConsortium(t)
	if _, err := Start(ServerConfig{Addr: "127.0.0.1:0", Identity: c.server}, hello); err == nil {
		t.Error("an identity without the CA was accepted")
	}
	if _, err := Start(ServerConfig{Addr: "127.0.0.1"}, hello); err == nil {
		t.Error("an address without a port was accepted")
	}
	srv, err := Start(ServerConfig{Addr: "localhost:0"}, hello)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if !strings.HasPrefix(srv.URL(), "http://127.0.0.1:") && !strings.HasPrefix(srv.URL(), "http://[::1]:") {
		t.Fatalf("URL %s", srv.URL())
	}
	resp, err := http.Get(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("loopback: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", srv.URL(), nil)
	req.Host = "attacker.example:80"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMisdirectedRequest || !strings.Contains(htmlText(string(b)), `not "attacker.example:80"`) {
		t.Errorf("another Host: %d\n%s", resp.StatusCode, b)
	}
}
