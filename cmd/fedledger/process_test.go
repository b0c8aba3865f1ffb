package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// Process-level tests: the built binary, started as separate processes on
// loopback, configured only by the kits `fedledger provision` writes. They
// build the binary and run whole studies, so -short skips them (make test
// runs them in its full pass).

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func binary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("process-level test: builds the binary and runs a consortium of processes; runs without -short (make test's first pass)")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fedledger-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "fedledger")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// logBuffer collects a process's JSON log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) add(l string) {
	b.mu.Lock()
	b.lines = append(b.lines, l)
	b.mu.Unlock()
}

// count returns how many lines have msg and, if round > 0, that round.
func (b *logBuffer) count(msg string, round int) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, l := range b.lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) != nil || rec["msg"] != msg {
			continue
		}
		if r, _ := rec["round"].(float64); round > 0 && int(r) != round {
			continue
		}
		n++
	}
	return n
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines[max(0, len(b.lines)-n):], "\n")
}

type process struct {
	name string
	cmd  *exec.Cmd
	log  *logBuffer
	done chan error
}

func startProcess(t *testing.T, name, dir string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(binary(t), append(args, "--log-format", "json")...)
	cmd.Dir = dir
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = cmd.Stdout
	p := &process{name: name, cmd: cmd, log: &logBuffer{}, done: make(chan error, 1)}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.log.add(sc.Text())
		}
		p.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// kill sends SIGKILL: no shutdown path runs.
func (p *process) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

// waitLog waits until the process has logged msg (for round) n times.
func (p *process) waitLog(t *testing.T, msg string, round, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for p.log.count(msg, round) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q (round %d) %d times in %v; last lines:\n%s", p.name, msg, round, n, timeout, p.log.tail(20))
		}
		select {
		case err := <-p.done:
			p.done <- err
			t.Fatalf("%s exited (%v) before logging %q; last lines:\n%s", p.name, err, msg, p.log.tail(30))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func runBinary(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(binary(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// consortium provisions a consortium on loopback and starts its three
// audit nodes; it returns the kits directory.
type testConsortium struct {
	kits     string
	audit    []string
	nodes    []*process
	coordDir string
}

func newConsortium(t *testing.T, rounds int) *testConsortium {
	t.Helper()
	dir := t.TempDir()
	tc := &testConsortium{}
	coord := freeAddr(t)
	var nodes []string
	for i := 1; i <= 3; i++ {
		a := freeAddr(t)
		tc.audit = append(tc.audit, a)
		nodes = append(nodes, fmt.Sprintf("  - {id: audit-%d, address: %s}", i, a))
	}
	write(t, filepath.Join(dir, "consortium.yaml"), fmt.Sprintf(`name: loopback
coordinator: {id: coordinator, address: %s}
audit_nodes:
%s
hospitals:
  - {id: cleveland, heart: cleveland}
  - {id: hungary, heart: hungary}
  - {id: switzerland, heart: switzerland}
  - {id: va, heart: va}
admins: [consortium-admin]
observers: [regulator]
`, coord, strings.Join(nodes, "\n")))
	if out, err := runBinary(t, dir, "provision", "consortium.yaml", "--out", "consortium"); err != nil {
		t.Fatalf("provision: %v\n%s", err, out)
	}
	tc.kits = filepath.Join(dir, "consortium", "kits")
	tc.coordDir = filepath.Join(tc.kits, "coordinator")
	// The study: the consortium edits the generated coordinator.yaml.
	cy := filepath.Join(tc.coordDir, "coordinator.yaml")
	b, err := os.ReadFile(cy)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("rounds: 20", fmt.Sprintf("rounds: %d\n  round_deadline: 1m", rounds), "metrics_listen: 127.0.0.1:9464", `metrics_listen: ""`).Replace(string(b))
	write(t, cy, text)
	for i := 1; i <= 3; i++ {
		kit := filepath.Join(tc.kits, fmt.Sprintf("audit-%d", i))
		ay := filepath.Join(kit, "audit.yaml")
		b, _ := os.ReadFile(ay)
		// Each kit has its own metrics port (9465, 9466, ...): turn it off.
		write(t, ay, regexp.MustCompile(`(?m)^metrics_listen: .*$`).ReplaceAllString(string(b), `metrics_listen: ""`))
		tc.nodes = append(tc.nodes, startProcess(t, fmt.Sprintf("audit-%d", i), kit, "audit-node", "--config", "audit.yaml"))
	}
	for i, n := range tc.nodes {
		if i > 0 {
			n.waitLog(t, "joined the audit cluster", 0, 1, time.Minute)
		}
	}
	admin := filepath.Join(tc.kits, "consortium-admin")
	if out, err := runBinary(t, admin, "study", "sign", "--config", filepath.Join(tc.coordDir, "coordinator.yaml"),
		"--cert", "consortium-admin.pem", "--key", "consortium-admin-key.pem", "--out", filepath.Join(tc.coordDir, "study.rec")); err != nil {
		t.Fatalf("study sign: %v\n%s", err, out)
	}
	return tc
}

func (tc *testConsortium) startCoordinator(t *testing.T) *process {
	return startProcess(t, "coordinator", tc.coordDir, "coordinator", "--config", "coordinator.yaml")
}

func (tc *testConsortium) startClients(t *testing.T) []*process {
	var ps []*process
	for _, h := range []string{"cleveland", "hungary", "switzerland", "va"} {
		ps = append(ps, startProcess(t, h, filepath.Join(tc.kits, h), "client", "--config", "client.yaml"))
	}
	return ps
}

// verifyFinal runs the regulator's verify against the live nodes on every
// stored model and returns the report of the one with the longest lineage.
func (tc *testConsortium) verifyFinal(t *testing.T, rounds int) string {
	t.Helper()
	models, _ := filepath.Glob(filepath.Join(tc.coordDir, "coordinator-data", "models", "*"))
	reg := filepath.Join(tc.kits, "regulator")
	want := fmt.Sprintf("%d completed rounds", rounds)
	for _, m := range models {
		out, err := runBinary(t, reg, "verify", m, "--trust", "trust.json", "--audit", strings.Join(tc.audit, ","),
			"--cert", "regulator.pem", "--key", "regulator-key.pem", "--ca", "ca.pem")
		if err == nil && strings.Contains(out, "VERIFIED") && strings.Contains(out, want) {
			return out
		}
	}
	t.Fatalf("no stored model verifies with %s", want)
	return ""
}

// TestProcessesRunAProvisionedSecureStudy: provision a consortium from
// YAML, start 3 audit nodes, the coordinator and 4 hospital clients as
// processes of the built binary using only their kits, run a secure study
// to completion, and verify the final model as the regulator.
func TestProcessesRunAProvisionedSecureStudy(t *testing.T) {
	const rounds = 3
	tc := newConsortium(t, rounds)
	co := tc.startCoordinator(t)
	clients := tc.startClients(t)
	select {
	case err := <-co.done:
		if err != nil {
			t.Fatalf("coordinator: %v\n%s", err, co.log.tail(30))
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("study did not finish:\n%s", co.log.tail(30))
	}
	for _, c := range clients {
		select {
		case err := <-c.done:
			if err != nil {
				t.Errorf("%s: %v\n%s", c.name, err, c.log.tail(10))
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not exit after the study", c.name)
		}
	}
	if n := co.log.count("round committed to the audit log", 0); n != rounds {
		t.Fatalf("%d rounds committed, want %d", n, rounds)
	}
	out := tc.verifyFinal(t, rounds)
	if !strings.Contains(out, "secure aggregation") {
		t.Fatalf("lineage does not show a secure study:\n%s", out)
	}
}

// TestCoordinatorKilledAtEveryPhase kills the coordinator process (SIGKILL)
// at one phase of each round: just announced, half the uploads in,
// aggregated (decryption requested), half the decryption shares in, and
// right after the round's record was committed, restarting it each time.
// The hospitals' processes keep running and reconnect. Each time the study
// must complete, every round must appear exactly once on the log, and the
// final model must verify. (The kill is sent when the phase's log line is
// seen, so the process may have moved a little further.)
func TestCoordinatorKilledAtEveryPhase(t *testing.T) {
	const rounds = 6
	tc := newConsortium(t, rounds)
	co := tc.startCoordinator(t)
	tc.startClients(t)
	phases := []struct {
		name  string
		msg   string
		round int
		n     int
	}{
		{"round announced", "round announced", 1, 1},
		{"uploads half in", "update accepted", 2, 2},
		{"aggregated", "decryption requested", 3, 1},
		{"decryption shares half in", "decryption share accepted", 4, 2},
		{"record appended", "round committed to the audit log", 5, 1},
	}
	for _, ph := range phases {
		co.waitLog(t, ph.msg, ph.round, ph.n, 2*time.Minute)
		co.kill()
		t.Logf("killed the coordinator at round %d, %s", ph.round, ph.name)
		co = tc.startCoordinator(t)
	}
	select {
	case err := <-co.done:
		if err != nil {
			t.Fatalf("coordinator: %v\n%s", err, co.log.tail(30))
		}
	case <-time.After(3 * time.Minute):
		t.Fatalf("study did not finish after the kills:\n%s", co.log.tail(30))
	}
	// The log: the study record, one key setup, and rounds 1..6 each
	// exactly once (completed or, when a restart hit hospitals that had
	// already given a decryption share, failed); the ledger rejects a
	// second record for a round, so verify replaying it proves it.
	reg := filepath.Join(tc.kits, "regulator")
	bundle := filepath.Join(t.TempDir(), "bundle.bin")
	models, _ := filepath.Glob(filepath.Join(tc.coordDir, "coordinator-data", "models", "*"))
	var report string
	for _, m := range models {
		o, err := runBinary(t, reg, "verify", m, "--trust", "trust.json", "--audit", strings.Join(tc.audit, ","),
			"--cert", "regulator.pem", "--key", "regulator-key.pem", "--ca", "ca.pem", "--save-bundle", bundle, "--json")
		if err == nil && len(o) > len(report) {
			report = o
		}
	}
	var rep struct {
		Verified bool  `json:"verified"`
		TreeSize int64 `json:"tree_size"`
		Rounds   []struct {
			Round uint64 `json:"round"`
		} `json:"rounds"`
	}
	if err := json.Unmarshal([]byte(report), &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, report)
	}
	// 1 study record + 1 key setup + one record per round.
	if rep.TreeSize != 2+rounds {
		t.Fatalf("log has %d entries, want %d (study, key setup, %d rounds)", rep.TreeSize, 2+rounds, rounds)
	}
	if !rep.Verified || len(rep.Rounds) == 0 {
		t.Fatalf("final lineage %s", report)
	}
	t.Logf("final model's lineage: %d completed rounds of %d (the others recorded as failed)", len(rep.Rounds), rounds)
}
