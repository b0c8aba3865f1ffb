package tlsutil

import (
	"crypto/tls"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// handshake runs a real TLS handshake over loopback TCP and returns what each
// side saw of the other.
func handshake(t *testing.T, srv, cli *tls.Config) (serverSaw Peer, clientErr, serverErr error) {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := lis.Accept()
		if err != nil {
			serverErr = err
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if serverErr = tc.Handshake(); serverErr != nil {
			return
		}
		serverSaw, serverErr = PeerFromTLS(tc.ConnectionState())
		_, _ = io.WriteString(tc, "ok")
	}()
	c, err := tls.Dial("tcp", lis.Addr().String(), cli)
	if err == nil {
		// TLS 1.3: a refused client certificate surfaces on the first read.
		buf := make([]byte, 2)
		_, err = io.ReadFull(c, buf)
		c.Close()
	}
	<-done
	return serverSaw, err, serverErr
}

func TestMutualTLSIdentity(t *testing.T) {
	ca, err := NewCA("test consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvID, err := ca.Issue("coordinator", RoleCoordinator, []string{"127.0.0.1", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cliID, err := ca.Issue("cleveland", RoleClient, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	saw, cerr, serr := handshake(t, ServerConfig(srvID, ca.Pool()), ClientConfig(cliID, ca.Pool(), "127.0.0.1"))
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if saw.ID != "cleveland" || saw.Role != RoleClient {
		t.Fatalf("server saw %q/%q, want cleveland/client", saw.ID, saw.Role)
	}
	if !saw.PublicKey().Equal(cliID.Key.Public()) {
		t.Fatal("peer public key does not match the client's key")
	}
}

func TestForeignAndExpiredCertificatesRefused(t *testing.T) {
	ca, _ := NewCA("ours", time.Hour)
	other, _ := NewCA("theirs", time.Hour)
	srvID, _ := ca.Issue("coordinator", RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	foreign, _ := other.Issue("cleveland", RoleClient, nil, time.Hour)
	expired, err := ca.Issue("hungary", RoleClient, nil, -time.Minute) // NotAfter already past
	if err != nil {
		t.Fatal(err)
	}
	for name, id := range map[string]*Identity{"other CA": foreign, "expired": expired} {
		t.Run(name, func(t *testing.T) {
			_, cerr, serr := handshake(t, ServerConfig(srvID, ca.Pool()), ClientConfig(id, ca.Pool(), "127.0.0.1"))
			if serr == nil {
				t.Fatalf("server accepted a client certificate from %s", name)
			}
			if cerr == nil {
				t.Fatal("client saw no error")
			}
		})
	}
	// And the client refuses a server from another CA.
	otherSrv, _ := other.Issue("coordinator", RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	cli, _ := ca.Issue("va", RoleClient, nil, time.Hour)
	if _, cerr, _ := handshake(t, ServerConfig(otherSrv, other.Pool()), ClientConfig(cli, ca.Pool(), "127.0.0.1")); cerr == nil {
		t.Fatal("client accepted a server certificate from another CA")
	}
}

func TestIssueRejectsBadIdentity(t *testing.T) {
	ca, _ := NewCA("c", time.Hour)
	if _, err := ca.Issue("Bad Name", RoleClient, nil, time.Hour); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("bad id: got %v", err)
	}
	if _, err := ca.Issue("ok", Role("root"), nil, time.Hour); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("bad role: got %v", err)
	}
}

func TestLoadIdentityRoundTripAndErrors(t *testing.T) {
	dir := t.TempDir()
	ca, _ := NewCA("c", time.Hour)
	id, _ := ca.Issue("switzerland", RoleClient, nil, time.Hour)
	cert, key := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := id.WriteFiles(cert, key); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", fi.Mode().Perm())
	}
	got, err := LoadIdentity(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "switzerland" || got.Role != RoleClient {
		t.Fatalf("loaded %s/%s", got.ID, got.Role)
	}
	if _, err := LoadIdentity(filepath.Join(dir, "missing.pem"), key); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("missing file: error %v does not name the file", err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a certificate"), 0o644)
	if _, err := LoadIdentity(garbage, key); err == nil || !strings.Contains(err.Error(), "garbage.pem") {
		t.Fatalf("garbage cert: error %v does not name the file", err)
	}
	if _, err := LoadCAPool(garbage); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("garbage CA bundle: %v", err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteFiles(caFile, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCAPool(caFile); err != nil {
		t.Fatal(err)
	}
}
