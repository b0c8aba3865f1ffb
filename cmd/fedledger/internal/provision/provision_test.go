package provision

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

const consortiumYAML = `
name: test-consortium
coordinator: {id: coordinator, address: 127.0.0.1:17443}
audit_nodes:
  - {id: audit-1, address: 127.0.0.1:17601}
  - {id: audit-2, address: 127.0.0.1:17602}
  - {id: audit-3, address: 127.0.0.1:17603}
hospitals:
  - {id: cleveland, heart: cleveland}
  - {id: hungary, heart: hungary}
admins: [consortium-admin]
observers: [regulator]
`

func writeConsortium(t *testing.T, dir, text string) *Consortium {
	t.Helper()
	p := filepath.Join(dir, "consortium.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestProvisionKitsLoadAndRerunKeepsThem: every kit's configuration loads
// with the real loaders; a re-run with a hospital added keeps the CA and
// the existing kits byte for byte and issues only the new one; --rotate
// reissues one; the trust file lists the three audit nodes with quorum 2.
func TestProvisionKitsLoadAndRerunKeepsThem(t *testing.T) {
	dir := t.TempDir()
	c := writeConsortium(t, dir, consortiumYAML)
	out := filepath.Join(dir, "out")
	res, err := Run(c, Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if !res.NewCA || len(res.Issued) != 8 || len(res.Kept) != 0 {
		t.Fatalf("first run: %+v", res)
	}
	kit := func(id, f string) string { return filepath.Join(out, "kits", id, f) }
	if _, err := config.LoadCoordinator(kit("coordinator", "coordinator.yaml"), nil); err != nil {
		t.Fatalf("coordinator kit: %v", err)
	}
	for _, h := range []string{"cleveland", "hungary"} {
		cl, err := config.LoadClient(kit(h, "client.yaml"), nil)
		if err != nil {
			t.Fatalf("%s kit: %v", h, err)
		}
		if len(cl.Config.AuditNodes) != 3 || len(cl.Config.Policy.Admins) != 1 {
			t.Fatalf("%s kit: audit %v, policy %+v", h, cl.Config.AuditNodes, cl.Config.Policy)
		}
	}
	for i, id := range []string{"audit-1", "audit-2", "audit-3"} {
		an, err := config.LoadAuditNode(kit(id, "audit.yaml"), nil)
		if err != nil {
			t.Fatalf("%s kit: %v", id, err)
		}
		if an.Config.Bootstrap != (i == 0) || (i > 0) != (an.File.Join == "127.0.0.1:17601") {
			t.Fatalf("%s: bootstrap %v join %q", id, an.Config.Bootstrap, an.File.Join)
		}
	}
	for _, id := range []string{"consortium-admin", "regulator"} {
		if b, err := os.ReadFile(kit(id, "README.txt")); err != nil || !strings.Contains(string(b), "fedledger verify") {
			t.Fatalf("%s README: %v", id, err)
		}
	}
	if fi, _ := os.Stat(kit("cleveland", "cleveland-key.pem")); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	trust, err := audit.LoadTrust(kit("regulator", "trust.json"))
	if err != nil || trust.Quorum != 2 {
		t.Fatalf("trust: %+v %v", trust, err)
	}

	caBefore, _ := os.ReadFile(filepath.Join(out, "ca", "ca.pem"))
	certBefore, _ := os.ReadFile(kit("cleveland", "cleveland.pem"))
	coordBefore, _ := os.ReadFile(kit("coordinator", "coordinator.yaml"))
	c = writeConsortium(t, dir, strings.Replace(consortiumYAML, "admins:", "  - {id: mayo}\nadmins:", 1))
	res, err = Run(c, Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if res.NewCA || len(res.Issued) != 1 || res.Issued[0] != "mayo" || len(res.Kept) != 8 {
		t.Fatalf("re-run: %+v", res)
	}
	caAfter, _ := os.ReadFile(filepath.Join(out, "ca", "ca.pem"))
	certAfter, _ := os.ReadFile(kit("cleveland", "cleveland.pem"))
	coordAfter, _ := os.ReadFile(kit("coordinator", "coordinator.yaml"))
	if !bytes.Equal(caBefore, caAfter) || !bytes.Equal(certBefore, certAfter) || !bytes.Equal(coordBefore, coordAfter) {
		t.Fatal("re-run changed the CA, an existing certificate or an existing configuration")
	}
	if _, err := os.Stat(kit("mayo", "client.yaml")); err != nil {
		t.Fatalf("new hospital's kit: %v", err)
	}

	if res, err = Run(c, Options{Out: out, Rotate: []string{"cleveland"}}); err != nil || len(res.Issued) != 1 {
		t.Fatalf("rotate: %+v %v", res, err)
	}
	if rotated, _ := os.ReadFile(kit("cleveland", "cleveland.pem")); bytes.Equal(rotated, certBefore) {
		t.Fatal("--rotate kept the old certificate")
	}
	if _, err := Run(c, Options{Out: out, Rotate: []string{"nobody"}}); !errors.Is(err, ErrConsortium) {
		t.Fatalf("rotating an unknown id: %v", err)
	}
}

// TestSignRequest: a site keeps its key and sends a request; the
// consortium signs it only for a listed id with the listed role.
func TestSignRequest(t *testing.T) {
	dir := t.TempDir()
	c := writeConsortium(t, dir, consortiumYAML)
	if _, err := Run(c, Options{Out: dir}); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.LoadCA(filepath.Join(dir, "ca", "ca.pem"), filepath.Join(dir, "ca", "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	req, key, err := tlsutil.NewCSR("hungary", tlsutil.RoleClient, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := SignRequest(c, ca, req)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "h.pem"), cert, 0o644)
	os.WriteFile(filepath.Join(dir, "h-key.pem"), key, 0o600)
	id, err := tlsutil.LoadIdentity(filepath.Join(dir, "h.pem"), filepath.Join(dir, "h-key.pem"))
	if err != nil || id.ID != "hungary" || id.Role != tlsutil.RoleClient {
		t.Fatalf("signed identity %+v: %v", id, err)
	}
	for name, tc := range map[string]struct {
		id   string
		role tlsutil.Role
		want string
	}{
		"unknown id": {"mallory", tlsutil.RoleClient, "not in the consortium file"},
		"wrong role": {"hungary", tlsutil.RoleAdmin, "makes it a client"},
	} {
		req, _, _ := tlsutil.NewCSR(tc.id, tc.role, nil)
		if _, err := SignRequest(c, ca, req); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", name, err)
		}
	}
	bad := bytes.Replace(req, []byte("REQUEST-----\nMI"), []byte("REQUEST-----\nMJ"), 1)
	if _, err := SignRequest(c, ca, bad); err == nil {
		t.Error("a corrupted request was signed")
	}
}

// TestKitsOnOneHostDoNotCollide: a consortium whose servers all live on
// 127.0.0.1 (a trial, or members sharing a machine) gets kits whose listen
// and metrics ports are all distinct, as loaded by the real loaders; a
// metrics port never takes a port a server listens on.
func TestKitsOnOneHostDoNotCollide(t *testing.T) {
	dir := t.TempDir()
	// audit-2 listens on 9466, where metrics ports are handed out.
	c := writeConsortium(t, dir, strings.Replace(consortiumYAML, "127.0.0.1:17602", "127.0.0.1:9466", 1))
	out := filepath.Join(dir, "out")
	if _, err := Run(c, Options{Out: out}); err != nil {
		t.Fatal(err)
	}
	kit := func(id, f string) string { return filepath.Join(out, "kits", id, f) }
	owner := map[string]string{} // port -> what listens there
	claim := func(what, addr string) {
		t.Helper()
		_, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if prev, dup := owner[p]; dup {
			t.Errorf("port %s: %s and %s", p, prev, what)
		}
		owner[p] = what
	}
	co, err := config.LoadCoordinator(kit("coordinator", "coordinator.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	claim("coordinator", co.File.Listen)
	claim("coordinator metrics", co.File.MetricsListen)
	for _, id := range []string{"audit-1", "audit-2", "audit-3"} {
		an, err := config.LoadAuditNode(kit(id, "audit.yaml"), nil)
		if err != nil {
			t.Fatal(err)
		}
		claim(id, an.File.Listen)
		claim(id+" metrics", an.File.MetricsListen)
	}
	commented := regexp.MustCompile(`(?m)^# metrics_listen: (\S+)`)
	for _, h := range []string{"cleveland", "hungary"} {
		b, err := os.ReadFile(kit(h, "client.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		m := commented.FindSubmatch(b)
		if m == nil {
			t.Fatalf("%s: no metrics_listen line", h)
		}
		claim(h+" metrics", string(m[1]))
	}
	if len(owner) != 1+1+3+3+2 {
		t.Fatalf("ports %v", owner)
	}
	if owner["9466"] != "audit-2" || owner["9464"] != "coordinator metrics" {
		t.Fatalf("ports %v: audit-2 keeps 9466, the coordinator's metrics keep the default 9464", owner)
	}
}

func TestBadConsortiumFiles(t *testing.T) {
	for name, tc := range map[string]struct{ text, want string }{
		"unknown key":             {consortiumYAML + "colour: blue\n", "colour"},
		"duplicate id":            {strings.Replace(consortiumYAML, "{id: hungary, heart: hungary}", "{id: cleveland}", 1), "already"},
		"bad address":             {strings.Replace(consortiumYAML, "127.0.0.1:17443", "nowhere", 1), "address"},
		"no admins":               {strings.Replace(consortiumYAML, "admins: [consortium-admin]", "admins: []", 1), "admins"},
		"unknown heart":           {strings.Replace(consortiumYAML, "heart: hungary", "heart: mayo", 1), "mayo"},
		"no audit nodes":          {strings.SplitN(consortiumYAML, "audit_nodes:", 2)[0] + "hospitals: [{id: x}]\nadmins: [a]\n", "audit_nodes"},
		"validity over CA":        {consortiumYAML + "validity: 100000h\nca_validity: 1000h\n", "ca_validity"},
		"shared address":          {strings.Replace(consortiumYAML, "127.0.0.1:17603", "127.0.0.1:17601", 1), "audit node audit-3: address 127.0.0.1:17601 is also audit-1's"},
		"node at the coordinator": {strings.Replace(consortiumYAML, "127.0.0.1:17601", "127.0.0.1:17443", 1), "address 127.0.0.1:17443 is also coordinator's"},
	} {
		dir := t.TempDir()
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(tc.text), 0o600)
		if _, err := Load(p); !errors.Is(err, ErrConsortium) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error mentioning %q", name, err, tc.want)
		}
	}
}
