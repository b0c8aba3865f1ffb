package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TestCommandsRunAStudyFromConfigFiles runs `fedledger coordinator` and four
// `fedledger client` commands from YAML files and certificates on disk, as
// an operator would, and checks the coordinator stored a final model. With
// no audit log the study must be plaintext (a hospital takes part in a
// secure study only if it can check its tasks on the log), and the
// hospitals must allow that.
func TestCommandsRunAStudyFromConfigFiles(t *testing.T) {
	dir := t.TempDir()
	issue := pemIssuer(t, dir)
	issue("coordinator", tlsutil.RoleCoordinator, "127.0.0.1")
	hospitals := []string{"cleveland", "hungary", "switzerland", "va"}
	for _, h := range hospitals {
		issue(h, tlsutil.RoleClient)
	}
	addr := freeAddr(t)
	write(t, filepath.Join(dir, "coordinator.yaml"), fmt.Sprintf(`
listen: %s
metrics_listen: ""
data_dir: coordinator-state
tls: {cert: coordinator.pem, key: coordinator-key.pem, ca: ca.pem}
study:
  id: cli-study
  rounds: 3
  min_clients: 3
  clients: [cleveland, hungary, switzerland, va]
  round_deadline: 30s
  start_timeout: 30s
  strategy: {name: fedavg}
  training: {optimizer: adam, learning_rate: 0.01, batch_size: 4, local_steps: 10}
  mode: plaintext
linger: 0s                              # exit when the study ends (the test waits for it)
`, addr))
	for _, h := range hospitals {
		write(t, filepath.Join(dir, h+".yaml"), fmt.Sprintf(`
coordinator: %s
tls: {cert: %s.pem, key: %s-key.pem, ca: ca.pem}
data: {heart: %s}
allow_plaintext: true
`, addr, h, h, h))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(hospitals)+1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := run(t, "coordinator", "--config", filepath.Join(dir, "coordinator.yaml"), "--log-level", "warn")
		errs <- err
	}()
	for _, h := range hospitals {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := newRootCmd()
			cmd.SetArgs([]string{"client", "--config", filepath.Join(dir, h+".yaml"), "--log-level", "warn"})
			cmd.SetOut(&strings.Builder{})
			cmd.SetErr(&strings.Builder{})
			if err := cmd.ExecuteContext(ctx); err != nil {
				errs <- fmt.Errorf("client %s: %w", h, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The store holds the initial model and one per round (besides the
	// server optimizer's states).
	stored, _ := filepath.Glob(filepath.Join(dir, "coordinator-state", "models", "*"))
	var models []string
	for _, m := range stored {
		if b, err := os.ReadFile(m); err == nil {
			if _, _, err := model.Decode(b); err == nil {
				models = append(models, m)
			}
		}
	}
	if len(models) != 4 {
		t.Fatalf("model store holds %d models, want 4 (initial + 3 rounds): %v", len(models), stored)
	}
}

var (
	addrsMu sync.Mutex
	given   = map[string]bool{}
)

// freeAddr returns a loopback address that was free just now and that it
// has not returned before in this test binary (the kernel may hand a
// just-closed port out again, and two servers of one test on the same
// port fail it).
func freeAddr(t *testing.T) string {
	t.Helper()
	addrsMu.Lock()
	defer addrsMu.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		l.Close()
		if !given[a] {
			given[a] = true
			return a
		}
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// pemIssuer writes a new test CA to dir/ca.pem and returns a function that
// issues an identity of role for hosts into dir/ID.pem and dir/ID-key.pem,
// as an operator's files on disk.
func pemIssuer(t *testing.T, dir string) func(id string, role tlsutil.Role, hosts ...string) {
	t.Helper()
	ca, err := tlsutil.NewCA("test consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(filepath.Join(dir, "ca.pem"), ""); err != nil {
		t.Fatal(err)
	}
	return func(id string, role tlsutil.Role, hosts ...string) {
		t.Helper()
		ident, err := ca.Issue(id, role, hosts, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := ident.WriteFiles(filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")); err != nil {
			t.Fatal(err)
		}
	}
}
