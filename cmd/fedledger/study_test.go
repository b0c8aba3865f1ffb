package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TestCommandsRunAnAuditedStudy drives a whole audited, secure study
// through the commands only: three `audit-node`s (one bootstraps, two
// join), `study sign` by an admin, `trust`, the `coordinator` and four
// `client`s with audit sections, then `verify` against the live nodes and
// offline against the saved bundle, and a tampered bundle that must fail.
func TestCommandsRunAnAuditedStudy(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsutil.NewCA("test consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ca.WriteFiles(filepath.Join(dir, "ca.pem"), "")
	issue := func(id string, role tlsutil.Role, hosts ...string) {
		ident, err := ca.Issue(id, role, hosts, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		ident.WriteFiles(filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem"))
	}
	issue("coordinator", tlsutil.RoleCoordinator, "127.0.0.1")
	issue("admin", tlsutil.RoleAdmin)
	issue("regulator", tlsutil.RoleObserver)
	hospitals := []string{"cleveland", "hungary", "switzerland", "va"}
	for _, h := range hospitals {
		issue(h, tlsutil.RoleClient)
	}
	var auditAddrs []string
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("audit-%d", i)
		issue(id, tlsutil.RoleAuditNode, "127.0.0.1")
		addr := freeAddr(t)
		auditAddrs = append(auditAddrs, addr)
		join := "bootstrap: true"
		if i > 1 {
			join = "join: " + auditAddrs[0]
		}
		write(t, filepath.Join(dir, id+".yaml"), fmt.Sprintf(`
listen: %s
metrics_listen: ""
data_dir: %s-state
tls: {cert: %s.pem, key: %s-key.pem, ca: ca.pem}
origin: test/audit-log
%s
`, addr, id, id, id, join))
	}
	addr := freeAddr(t)
	write(t, filepath.Join(dir, "coordinator.yaml"), fmt.Sprintf(`
listen: %s
metrics_listen: ""
data_dir: coordinator-state
tls: {cert: coordinator.pem, key: coordinator-key.pem, ca: ca.pem}
study:
  id: audited-study
  rounds: 2
  min_clients: 3
  clients: [cleveland, hungary, switzerland, va]
  round_deadline: 30s
  start_timeout: 30s
  training: {optimizer: adam, learning_rate: 0.01, batch_size: 4, local_steps: 10}
  start: manual
  purpose: cardiac risk model, CLI test
audit:
  nodes: [%s]
`, addr, strings.Join(auditAddrs, ", ")))
	for _, h := range hospitals {
		write(t, filepath.Join(dir, h+".yaml"), fmt.Sprintf(`
coordinator: %s
tls: {cert: %s.pem, key: %s-key.pem, ca: ca.pem}
data: {heart: %s}
audit_nodes: [%s]
`, addr, h, h, h, strings.Join(auditAddrs, ", ")))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nodesCtx, stopNodes := context.WithCancel(ctx)
	var nodes sync.WaitGroup
	start := func(ctx context.Context, wg *sync.WaitGroup, errs chan<- error, args ...string) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := newRootCmd()
			cmd.SetArgs(append(args, "--log-level", "warn"))
			cmd.SetOut(&strings.Builder{})
			cmd.SetErr(&strings.Builder{})
			if err := cmd.ExecuteContext(ctx); err != nil && errs != nil {
				errs <- fmt.Errorf("%s: %w", strings.Join(args, " "), err)
			}
		}()
	}
	nodeErrs := make(chan error, 3)
	for i := 1; i <= 3; i++ {
		start(nodesCtx, &nodes, nodeErrs, "audit-node", "--config", filepath.Join(dir, fmt.Sprintf("audit-%d.yaml", i)))
	}
	defer func() { stopNodes(); nodes.Wait() }()

	as := func(id string) []string {
		return []string{"--cert", filepath.Join(dir, id+".pem"), "--key", filepath.Join(dir, id+"-key.pem"), "--ca", filepath.Join(dir, "ca.pem")}
	}
	audits := strings.Join(auditAddrs, ",")
	if out, err := run(t, append([]string{"study", "create", "--config", filepath.Join(dir, "coordinator.yaml"), "--audit", audits}, as("admin")...)...); err != nil ||
		!strings.Contains(out, `study "audited-study" created by admin at log index 0`) {
		t.Fatalf("study create: %v\n%s", err, out)
	}
	if _, err := run(t, append([]string{"study", "create", "--config", filepath.Join(dir, "coordinator.yaml"), "--audit", audits}, as("cleveland")...)...); err == nil ||
		!strings.Contains(err.Error(), `"cleveland" has role client; study records are signed by an admin`) {
		t.Fatalf("study create by a hospital: %v", err)
	}
	trust := filepath.Join(dir, "trust.json")
	if out, err := run(t, "trust", "--ca", filepath.Join(dir, "ca.pem"), "--origin", "test/audit-log", "--quorum", "2", "--out", trust,
		filepath.Join(dir, "audit-1.pem"), filepath.Join(dir, "audit-2.pem"), filepath.Join(dir, "audit-3.pem")); err != nil {
		t.Fatalf("trust: %v\n%s", err, out)
	}

	var study sync.WaitGroup
	errs := make(chan error, 5)
	start(ctx, &study, errs, "coordinator", "--config", filepath.Join(dir, "coordinator.yaml"))
	for _, h := range hospitals {
		start(ctx, &study, errs, "client", "--config", filepath.Join(dir, h+".yaml"))
	}
	// The coordinator waits for an admin; observers may look, hospitals
	// may not start it.
	// (The coordinator may not be listening yet: poll.)
	var last string
	var lastErr error
	for deadline := time.Now().Add(time.Minute); !strings.Contains(last, ": created,"); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("study never reported phase created: %v\n%s", lastErr, last)
		}
		last, lastErr = run(t, append([]string{"study", "status", "--coordinator", addr}, as("regulator")...)...)
	}
	if _, err := run(t, append([]string{"study", "start", "audited-study", "--coordinator", addr}, as("cleveland")...)...); err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("study start by a hospital: %v", err)
	}
	if out, err := run(t, append([]string{"study", "start", "audited-study", "--coordinator", addr}, as("admin")...)...); err != nil {
		t.Fatalf("study start: %v\n%s", err, out)
	}
	study.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	out, err := run(t, append([]string{"study", "list", "--audit", audits}, as("regulator")...)...)
	if err != nil || !strings.Contains(out, "audited-study") || !strings.Contains(out, "cleveland,hungary,switzerland,va") {
		t.Fatalf("study list: %v\n%s", err, out)
	}
	if f := strings.Fields(strings.Split(out, "\n")[1]); len(f) < 5 || f[2] != "2" || f[3] != "2" {
		t.Fatalf("study list row %v, want round 2 with 2 completed", f)
	}
	models, _ := filepath.Glob(filepath.Join(dir, "coordinator-state", "models", "*"))
	if len(models) != 3 {
		t.Fatalf("%d models, want 3 (initial + 2 rounds)", len(models))
	}
	// The final model is the one verify accepts with 2 rounds of lineage.
	saved := filepath.Join(dir, "bundle.bin")
	var final string
	for _, m := range models {
		out, err := run(t, "verify", m, "--trust", trust, "--audit", strings.Join(auditAddrs, ","), "--cert", filepath.Join(dir, "regulator.pem"),
			"--key", filepath.Join(dir, "regulator-key.pem"), "--ca", filepath.Join(dir, "ca.pem"), "--save-bundle", saved)
		if err != nil {
			t.Fatalf("verify --audit %s: %v", filepath.Base(m), err)
		}
		if strings.Contains(out, "2 completed rounds") {
			final = m
		}
	}
	if final == "" {
		t.Fatal("no model has a 2-round lineage")
	}
	out, err = run(t, "verify", final, "--trust", trust, "--bundle", saved, "--json")
	if err != nil || !strings.Contains(out, `"verified": true`) || !strings.Contains(out, "audited-study") {
		t.Fatalf("offline verify: %v\n%s", err, out)
	}
	b, _ := os.ReadFile(saved)
	b[len(b)-40] ^= 1
	os.WriteFile(saved, b, 0o644)
	if _, err := run(t, "verify", final, "--trust", trust, "--bundle", saved); !errors.Is(err, errVerify) {
		t.Fatalf("tampered bundle: %v", err)
	} else {
		t.Logf("tampered bundle: %v", err)
	}
	select {
	case err := <-nodeErrs:
		t.Fatalf("audit node: %v", err)
	default:
	}
}
