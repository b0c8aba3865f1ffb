package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
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
	added chan struct{} // closed (and replaced) when a line is added
}

func newLogBuffer() *logBuffer { return &logBuffer{added: make(chan struct{})} }

func (b *logBuffer) add(l string) {
	b.mu.Lock()
	b.lines = append(b.lines, l)
	close(b.added)
	b.added = make(chan struct{})
	b.mu.Unlock()
}

// next is closed when the next line is added.
func (b *logBuffer) next() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.added
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

// find returns the attributes of the lines with msg.
func (b *logBuffer) find(msg string) []map[string]any {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range b.lines {
		var rec map[string]any
		if json.Unmarshal([]byte(l), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
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
	p := &process{name: name, cmd: cmd, log: newLogBuffer(), done: make(chan error, 1)}
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

func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: %v: %v", p.name, sig, err)
	}
}

// terminate sends SIGTERM and returns how the process exited.
func (p *process) terminate(t *testing.T, timeout time.Duration) error {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v of SIGTERM; last lines:\n%s", p.name, timeout, p.log.tail(20))
		return nil
	}
}

// wait waits for the process to exit by itself and returns how it did.
func (p *process) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %v; last lines:\n%s", p.name, timeout, p.log.tail(30))
		return nil
	}
}

// waitLog waits until the process has logged msg (for round) n times. It
// wakes on every line the process logs, so a kill that follows is sent as
// soon as the line is read.
func (p *process) waitLog(t *testing.T, msg string, round, n int, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		next := p.log.next()
		if p.log.count(msg, round) >= n {
			return
		}
		select {
		case <-next:
		case err := <-p.done:
			p.done <- err
			if p.log.count(msg, round) >= n { // its last lines were read before it exited
				return
			}
			t.Fatalf("%s exited (%v) before logging %q; last lines:\n%s", p.name, err, msg, p.log.tail(30))
		case <-timer.C:
			t.Fatalf("%s did not log %q (round %d) %d times in %v; last lines:\n%s", p.name, msg, round, n, timeout, p.log.tail(20))
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
	kits      string
	audit     []string
	nodes     []*process
	coordDir  string
	coordAddr string
}

func newConsortium(t *testing.T, rounds int) *testConsortium {
	t.Helper()
	dir := t.TempDir()
	coord := freeAddr(t)
	tc := &testConsortium{coordAddr: coord}
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
		tc.nodes = append(tc.nodes, nil)
		tc.startNode(t, i-1)
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

// startNode starts (or restarts, on its data) audit node i (0-based) from
// its kit.
func (tc *testConsortium) startNode(t *testing.T, i int) {
	name := fmt.Sprintf("audit-%d", i+1)
	tc.nodes[i] = startProcess(t, name, filepath.Join(tc.kits, name), "audit-node", "--config", "audit.yaml")
}

// startCoordinator starts the coordinator from its kit; flags are added to
// the command line (e.g. --linger 0s).
func (tc *testConsortium) startCoordinator(t *testing.T, flags ...string) *process {
	return startProcess(t, "coordinator", tc.coordDir, append([]string{"coordinator", "--config", "coordinator.yaml"}, flags...)...)
}

// status runs `study status` against the coordinator as the regulator.
func (tc *testConsortium) status(t *testing.T, flags ...string) (string, error) {
	t.Helper()
	return runBinary(t, filepath.Join(tc.kits, "regulator"), append([]string{"study", "status", "--coordinator", tc.coordAddr,
		"--cert", "regulator.pem", "--key", "regulator-key.pem", "--ca", "ca.pem"}, flags...)...)
}

// verify runs the regulator's `verify` of a model file against the live
// audit nodes, with more flags (--json, --save-bundle ...).
func (tc *testConsortium) verify(t *testing.T, model string, flags ...string) (string, error) {
	t.Helper()
	return runBinary(t, filepath.Join(tc.kits, "regulator"), append([]string{"verify", model, "--trust", "trust.json", "--audit", strings.Join(tc.audit, ","),
		"--cert", "regulator.pem", "--key", "regulator-key.pem", "--ca", "ca.pem"}, flags...)...)
}

// dialAs connects to the audit nodes with a participant's kit identity.
func (tc *testConsortium) dialAs(t *testing.T, id string) (*tlsutil.Identity, *cluster.Client) {
	t.Helper()
	kit := filepath.Join(tc.kits, id)
	ident, err := tlsutil.LoadIdentity(filepath.Join(kit, id+".pem"), filepath.Join(kit, id+"-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsutil.LoadCAPool(filepath.Join(kit, "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := cluster.Dial(tc.audit, tlsutil.ClientConfig(ident, pool, ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return ident, cli
}

// exportRecords exports the log from the live nodes and decodes every
// record of it.
func (tc *testConsortium) exportRecords(t *testing.T, cli *cluster.Client) []*audit.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := cli.Export(ctx, "first-study", 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return bundleRecords(t, b)
}

func bundleRecords(t *testing.T, b *audit.Bundle) []*audit.Record {
	t.Helper()
	var out []*audit.Record
	for i, leaf := range b.Leaves {
		e, err := audit.UnmarshalEnvelope(leaf)
		if err != nil {
			t.Fatalf("log entry %d: %v", i, err)
		}
		rec, err := audit.UnmarshalRecord(e.Body)
		if err != nil {
			t.Fatalf("log entry %d: %v", i, err)
		}
		out = append(out, rec)
	}
	return out
}

// statusJSON reads `study status --json`.
func (tc *testConsortium) statusJSON(t *testing.T) (statusJSON, error) {
	t.Helper()
	out, err := tc.status(t, "--json")
	if err != nil {
		return statusJSON{}, fmt.Errorf("%v: %s", err, out)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return statusJSON{}, fmt.Errorf("%v: %s", err, out)
	}
	return st, nil
}

func (tc *testConsortium) startClients(t *testing.T) []*process {
	var ps []*process
	for _, h := range []string{"cleveland", "hungary", "switzerland", "va"} {
		ps = append(ps, startProcess(t, h, filepath.Join(tc.kits, h), "client", "--config", "client.yaml"))
	}
	return ps
}

// models returns the model files in the coordinator's store (not the
// server optimizer's states kept beside them).
func (tc *testConsortium) models(t *testing.T) []string {
	t.Helper()
	stored, _ := filepath.Glob(filepath.Join(tc.coordDir, "coordinator-data", "models", "*"))
	var out []string
	for _, m := range stored {
		b, err := os.ReadFile(m)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := model.Decode(b); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// report is the part of `verify --json` the process tests read.
type report struct {
	Verified      bool     `json:"verified"`
	Study         string   `json:"study"`
	Model         string   `json:"model_sha256"`
	TreeSize      int64    `json:"tree_size"`
	Mode          string   `json:"mode"`
	HEParams      string   `json:"he_params"`
	Threshold     uint32   `json:"threshold"`
	KeyHolders    []string `json:"key_holders"`
	CollectiveKey string   `json:"collective_key_sha256"`
	Rounds        []struct {
		Round          uint64   `json:"round"`
		Output         string   `json:"output_sha256"`
		Decryptors     []string `json:"decryptors"`
		Countersigners []string `json:"countersigners"`
	} `json:"rounds"`
}

// verifyLongest verifies every stored model as the regulator (saving the
// bundle to bundle) and returns the report of the one with the longest
// lineage: the final model. Every stored model must verify, except models
// the coordinator computed in a round it never recorded (a killed
// coordinator's): those must fail as not on the log; it returns how many.
func (tc *testConsortium) verifyLongest(t *testing.T, bundle string) (report, int) {
	t.Helper()
	var best report
	orphans := 0
	for _, m := range tc.models(t) {
		out, err := tc.verify(t, m, "--json", "--save-bundle", bundle)
		if err != nil && strings.Contains(out, "verification FAILED") && strings.Contains(out, "is not the output of any record in the bundle") {
			orphans++
			continue
		}
		if err != nil {
			t.Fatalf("verify %s: %v\n%s", filepath.Base(m), err, out)
		}
		var r report
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("verify --json: %v\n%s", err, out)
		}
		if !r.Verified {
			t.Fatalf("verify %s: not verified\n%s", filepath.Base(m), out)
		}
		if len(r.Rounds) >= len(best.Rounds) {
			best = r
		}
	}
	return best, orphans
}

// TestProcessesRunAProvisionedSecureStudy: provision a consortium from
// YAML, start 3 audit nodes, the coordinator and 4 hospital clients as
// processes of the built binary using only their kits, and run a secure
// study to completion. In round 2, as the countersignatures come in, two
// of the three audit nodes are killed: the log has no quorum, so the
// coordinator cannot record the round, and `study status` says it is
// waiting for the audit log (and answers meanwhile); the nodes are
// restarted from their kits and the study carries on. After the study the
// coordinator lingers and `study status` gives the final model's path and
// every site's accuracy of it; the regulator verifies that model. SIGTERM
// then stops the lingering coordinator cleanly.
func TestProcessesRunAProvisionedSecureStudy(t *testing.T) {
	const rounds = 3
	tc := newConsortium(t, rounds)
	co := tc.startCoordinator(t) // lingers (the kit's default)
	clients := tc.startClients(t)

	// Take the log's quorum away while a round is being countersigned, after
	// the countersigners have checked the round on the log: the
	// coordinator is frozen (SIGSTOP) at its first countersignature, so
	// nothing it would record reaches the log while the others check theirs;
	// if the round's record had already gone out, try the next round.
	_, cli := tc.dialAs(t, "regulator")
	for r := 2; ; r++ {
		if r > rounds {
			t.Fatal("every round was recorded before the coordinator could be frozen")
		}
		co.waitLog(t, "countersignature accepted", r, 1, 2*time.Minute)
		co.signal(t, syscall.SIGSTOP)
		time.Sleep(time.Second)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, last, err := cli.LatestOutput(ctx, "first-study")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if last >= uint64(r) {
			co.signal(t, syscall.SIGCONT)
			t.Logf("round %d was recorded before the coordinator was frozen", r)
			continue
		}
		tc.nodes[1].kill()
		tc.nodes[2].kill()
		co.signal(t, syscall.SIGCONT)
		t.Logf("killed audit-2 and audit-3 during round %d's countersigning", r)
		break
	}
	var waiting statusJSON
	for deadline := time.Now().Add(90 * time.Second); waiting.WaitingFor == ""; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("study status never said what the coordinator waits for (last: %+v); coordinator:\n%s", waiting, co.log.tail(20))
		}
		st, err := tc.statusJSON(t)
		if err != nil {
			t.Fatalf("study status: %v", err)
		}
		waiting = st
	}
	if waiting.Phase != "recording" || !strings.HasPrefix(waiting.WaitingFor, "the audit log: ") || waiting.FinalModelPath != "" {
		t.Fatalf("status while the log has no quorum: %+v", waiting)
	}
	text, err := tc.status(t)
	if err != nil || !strings.Contains(text, "  waiting for the audit log: ") {
		t.Fatalf("study status (text) while the log has no quorum: %v\n%s", err, text)
	}
	t.Logf("study status while the audit log has no quorum:\n%s", text)
	tc.startNode(t, 1)
	tc.startNode(t, 2)

	for _, c := range clients {
		if err := c.wait(t, 3*time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, c.log.tail(10))
		}
	}
	if n := co.log.count("round committed to the audit log", 0); n != rounds {
		t.Fatalf("%d rounds committed, want %d", n, rounds)
	}
	// The study is over; the coordinator still answers.
	select {
	case err := <-co.done:
		t.Fatalf("coordinator exited (%v) instead of lingering; last lines:\n%s", err, co.log.tail(20))
	default:
	}
	st, err := tc.statusJSON(t)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != "finished" || st.WaitingFor != "" || st.RoundsCompleted+st.RoundsFailed != rounds || st.RoundsCompleted == 0 ||
		st.FinalModelPath != filepath.Join(tc.coordDir, "coordinator-data", "models", st.LatestModel) || len(st.FinalTest) != 4 {
		t.Fatalf("status after the study: %+v", st)
	}
	for _, m := range st.FinalTest {
		if m.N == 0 || m.Accuracy < 0 || m.Accuracy > 1 {
			t.Fatalf("final test result %+v", m)
		}
	}
	if st.RoundsFailed > 0 {
		t.Logf("%d of the %d rounds failed (a countersigner could not check the log while it had no quorum)", st.RoundsFailed, rounds)
	}
	// The coordinator printed the same final model and accuracies.
	if got := co.log.find("final model"); len(got) != 1 || got[0]["path"] != st.FinalModelPath {
		t.Fatalf("coordinator logged the final model as %v, status says %s", got, st.FinalModelPath)
	}
	out, err := tc.verify(t, st.FinalModelPath)
	if err != nil || !strings.Contains(out, "VERIFIED") || !strings.Contains(out, fmt.Sprintf("%d completed rounds", st.RoundsCompleted)) ||
		!strings.Contains(out, "secure aggregation") {
		t.Fatalf("verify the final model: %v\n%s", err, out)
	}
	if err := co.terminate(t, 20*time.Second); err != nil {
		t.Fatalf("lingering coordinator on SIGTERM: %v\n%s", err, co.log.tail(10))
	}
	if out := co.log.tail(100); !strings.Contains(out, "study over; still answering status") {
		t.Fatalf("the coordinator never said it lingers:\n%s", out)
	}
}

// TestCoordinatorKilledAtEveryPhase kills the coordinator process (SIGKILL)
// at one phase of each round, restarting it each time: right after the
// key setup was saved but before its record is on the log, then in rounds
// 1 to 6: just announced, half the uploads in, aggregated (decryption
// requested), half the decryption shares in, right after the round's
// record was committed, and countersignatures requested. The hospitals'
// processes keep running and reconnect. The study must complete, every
// round must appear exactly once on the log, under the study's HE
// parameters and collective key, and the final model must verify. (The
// kill is sent as soon as the phase's log line is read, so the process may
// have moved a little further. No kill follows the last round's record:
// the hospitals may have been told the study is over by then.)
func TestCoordinatorKilledAtEveryPhase(t *testing.T) {
	const rounds = 6
	tc := newConsortium(t, rounds)
	noLinger := []string{"--linger", "0s"}
	co := tc.startCoordinator(t, noLinger...)
	tc.startClients(t)
	keySetupFile := filepath.Join(tc.coordDir, "coordinator-data", "state", "keysetup.json")
	phases := []struct {
		name  string
		msg   string
		round int
		n     int
	}{
		{"key setup saved, not yet recorded", "key setup done", 0, 1},
		{"round announced", "round announced", 1, 1},
		{"uploads half in", "update accepted", 2, 2},
		{"aggregated", "decryption requested", 3, 1},
		{"decryption shares half in", "decryption share accepted", 4, 2},
		{"record appended", "round committed to the audit log", 5, 1},
		{"countersigning", "countersignatures requested", 6, 1},
		// Every round on the log: the restarted coordinator finishes at
		// once instead of waiting for hospitals that were told it ended.
		{"last round recorded", "round committed to the audit log", 6, 1},
	}
	for i, ph := range phases {
		co.waitLog(t, ph.msg, ph.round, ph.n, 2*time.Minute)
		if i == 0 {
			// The coordinator logs the key setup, then saves it, then
			// appends its record: kill as soon as the saved file is there.
			for deadline := time.Now().Add(30 * time.Second); ; {
				if _, err := os.Stat(keySetupFile); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the coordinator logged its key setup but never saved it; last lines:\n%s", co.log.tail(20))
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
		co.kill()
		t.Logf("killed the coordinator at round %d, %s", ph.round, ph.name)
		co = tc.startCoordinator(t, noLinger...)
		if i == 0 {
			// The restarted coordinator has the saved key setup: it records
			// it (or finds it on the log) and never runs a new one.
			co.waitLog(t, "round announced", 1, 1, 2*time.Minute)
			switch saved, logged := co.log.count("key setup saved but not on the audit log yet; recording it", 0), co.log.count("key setup already done; reusing its collective key", 0); {
			case saved == 1 && co.log.count("key setup committed to the audit log", 0) == 1:
				t.Log("the kill hit between saving the key setup and recording it; the restarted coordinator recorded it")
			case logged == 1:
				t.Log("the key setup's record was committed before the kill; the restarted coordinator reused it")
			default:
				t.Fatalf("restarted coordinator after the key setup: neither recorded the saved key setup nor reused the logged one; last lines:\n%s", co.log.tail(30))
			}
			if n := co.log.count("key setup done", 0); n != 0 {
				t.Fatalf("the restarted coordinator ran a second key setup")
			}
		}
	}
	if err := co.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("coordinator: %v\n%s", err, co.log.tail(30))
	}
	// The log: the study record, one key setup, and rounds 1..6 each
	// exactly once (completed or, when a restart hit hospitals that had
	// already given a decryption share, failed); the ledger rejects a
	// second record for a round, so verify replaying it proves it.
	bundle := filepath.Join(t.TempDir(), "bundle.bin")
	rep, orphans := tc.verifyLongest(t, bundle)
	// 1 study record + 1 key setup + one record per round.
	if rep.TreeSize != 2+rounds {
		t.Fatalf("log has %d entries, want %d (study, key setup, %d rounds)", rep.TreeSize, 2+rounds, rounds)
	}
	if got := co.log.find("final model"); len(got) != 1 || got[0]["sha256"] != rep.Model {
		t.Fatalf("the coordinator's final model %v is not the one with the longest verified lineage, %s", got, rep.Model)
	}
	if !rep.Verified || len(rep.Rounds) == 0 || rep.Mode != "secure" || rep.Threshold != 3 || len(rep.KeyHolders) != 4 {
		t.Fatalf("final lineage %+v", rep)
	}
	// The report names the study's HE parameter set and collective key...
	if rep.HEParams != "ckks-n14-q2x60-seeded/v2" || len(rep.CollectiveKey) != 64 {
		t.Fatalf("report: HE parameters %q, collective key %q", rep.HEParams, rep.CollectiveKey)
	}
	// ...and every round record on the log carries both, as the key setup
	// record has them.
	b, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	bun, err := audit.UnmarshalBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	var keySetup *audit.Record
	seen := map[uint64]int{}
	var failed []uint64
	for i, rec := range bundleRecords(t, bun) {
		switch rec.Kind {
		case audit.KindKeySetupDone:
			if keySetup != nil {
				t.Fatalf("entry %d: a second key setup", i)
			}
			keySetup = rec
		case audit.KindRoundCompleted, audit.KindRoundFailed:
			if keySetup == nil {
				t.Fatalf("entry %d: round %d before the key setup", i, rec.Round)
			}
			if rec.HEParamsID != keySetup.HEParamsID || rec.CollectiveKeyHash != keySetup.CollectiveKeyHash {
				t.Fatalf("entry %d (%s round %d): HE parameters %q, collective key %x; the key setup's are %q, %x", i, rec.Kind, rec.Round,
					rec.HEParamsID, rec.CollectiveKeyHash[:8], keySetup.HEParamsID, keySetup.CollectiveKeyHash[:8])
			}
			seen[rec.Round]++
			if rec.Kind == audit.KindRoundFailed {
				failed = append(failed, rec.Round)
			}
		}
	}
	if keySetup == nil || keySetup.HEParamsID != rep.HEParams || hex.EncodeToString(keySetup.CollectiveKeyHash[:]) != rep.CollectiveKey {
		t.Fatalf("key setup record %+v does not match the report (%s, %s)", keySetup, rep.HEParams, rep.CollectiveKey)
	}
	for r := uint64(1); r <= rounds; r++ {
		if seen[r] != 1 {
			t.Fatalf("round %d has %d records on the log, want 1 (%v)", r, seen[r], seen)
		}
	}
	if len(rep.Rounds)+len(failed) != rounds {
		t.Fatalf("final lineage has %d rounds and %d failed (%v), want %d in all", len(rep.Rounds), len(failed), failed, rounds)
	}
	t.Logf("final model's lineage: %d completed rounds of %d (failed: %v), all under %s, collective key %s; "+
		"%d stored models of rounds the killed coordinators never recorded do not verify", len(rep.Rounds), rounds, failed, rep.HEParams, rep.CollectiveKey[:12], orphans)
}

// TestProcessesRefuseAForgedRound: a coordinator that fabricates a round
// with its own key, without the hospitals, gets nothing onto the log, and
// a model it claims from such a round does not verify. Against real
// processes (3 audit nodes, the coordinator and 4 hospitals, provisioned
// kits), with the coordinator's kit identity:
//
//   - while the coordinator is down after round 1, round 2 (the next round,
//     within the limit, on the right parent and optimizer state) forged
//     three ways: with no HE parameters; with the study's HE parameters and
//     collective key and invented decryption shares but no
//     countersignatures; complete with every hospital signature random.
//     Each is refused by its rule, and the restarted coordinator finishes
//     the study;
//   - after the study, round N+1 (beyond the study's rounds) and a second
//     record of round N: both refused.
//
// Nothing forged reaches the log (its size is the study's), `verify` of
// each forged round's claimed output model (a real model file hashing to
// it) exits 1 with "verification FAILED", and the genuine final model
// still verifies.
func TestProcessesRefuseAForgedRound(t *testing.T) {
	const rounds = 3
	tc := newConsortium(t, rounds)
	noLinger := []string{"--linger", "0s"}
	co := tc.startCoordinator(t, noLinger...)
	clients := tc.startClients(t)
	co.waitLog(t, "round committed to the audit log", 1, 1, 2*time.Minute)
	co.kill()

	coordID, cli := tc.dialAs(t, "coordinator")
	recs := tc.exportRecords(t, cli)
	if len(recs) != 3 || recs[1].Kind != audit.KindKeySetupDone || recs[2].Kind != audit.KindRoundCompleted || recs[2].Round != 1 {
		t.Fatalf("log after round 1: %d records", len(recs))
	}
	keySetup, round1 := recs[1], recs[2]
	modelDir := t.TempDir()
	// forge writes a model file that is not on the log and returns a round
	// record claiming it as its output: contributions from every hospital
	// with invented sample counts and random signatures.
	forge := func(name string, round uint64, parent, optBefore audit.Hash) (*audit.Record, string) {
		spec, params, err := model.Decode(mustRead(t, filepath.Join(tc.coordDir, "coordinator-data", "models", hex.EncodeToString(parent[:]))))
		if err != nil {
			t.Fatal(err)
		}
		for i := range params {
			params[i] += 0.25
		}
		file, err := model.Encode(spec, params)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(modelDir, name+".flm")
		if err := os.WriteFile(path, file, 0o644); err != nil {
			t.Fatal(err)
		}
		rec := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: "first-study", Round: round, ParentModel: parent,
			OutputModel: audit.Hash(sha256.Sum256(file)), AggregateHash: randomHash(t), OptimizerBefore: optBefore, OptimizerAfter: randomHash(t),
			Strategy: "fedavg", TimestampUnixNs: time.Now().UnixNano(), SubmitterID: coordID.ID,
			Metrics: []audit.Metric{{Name: "train_loss", Value: 0.1}}}
		for i, site := range []string{"cleveland", "hungary", "switzerland", "va"} {
			rec.Contributions = append(rec.Contributions, audit.Contribution{Site: site, UpdateHash: randomHash(t),
				Samples: uint64(500 + 100*i), DataManifest: randomHash(t), Signature: randomBytes(t, 64)})
		}
		return rec, path
	}
	var forged []string

	// Round 2 while the coordinator is down: the next round, within the
	// study's limit.
	noHE, path := forge("no-he-params", 2, round1.OutputModel, round1.OptimizerAfter)
	appendRule(t, cli, coordID, "round 2 without HE parameters or countersignatures", noHE, audit.ErrHEParams)
	forged = append(forged, path)

	noCS, path := forge("no-countersignatures", 2, round1.OutputModel, round1.OptimizerAfter)
	noCS.HEParamsID, noCS.CollectiveKeyHash = keySetup.HEParamsID, keySetup.CollectiveKeyHash
	for _, site := range []string{"cleveland", "hungary", "switzerland"} {
		noCS.DecryptionShares = append(noCS.DecryptionShares, audit.DecryptionShare{Site: site, ShareHash: randomHash(t), Signature: randomBytes(t, 64)})
	}
	appendRule(t, cli, coordID, "round 2 with invented decryption shares and no countersignatures", noCS, audit.ErrTooFewCountersignatures)
	forged = append(forged, path)

	allSigs, path := forge("random-signatures", 2, round1.OutputModel, round1.OptimizerAfter)
	allSigs.HEParamsID, allSigs.CollectiveKeyHash, allSigs.DecryptionShares = keySetup.HEParamsID, keySetup.CollectiveKeyHash, noCS.DecryptionShares
	for _, site := range []string{"cleveland", "hungary", "switzerland"} {
		allSigs.Countersignatures = append(allSigs.Countersignatures, audit.Countersignature{Site: site, Signature: randomBytes(t, 64)})
	}
	appendRule(t, cli, coordID, "round 2 with every hospital signature random", allSigs, audit.ErrHospitalSignature)
	forged = append(forged, path)

	// The genuine coordinator carries on from round 2.
	co = tc.startCoordinator(t, noLinger...)
	if err := co.wait(t, 3*time.Minute); err != nil {
		t.Fatalf("coordinator: %v\n%s", err, co.log.tail(30))
	}
	for _, c := range clients {
		if err := c.wait(t, time.Minute); err != nil {
			t.Fatalf("%s: %v\n%s", c.name, err, c.log.tail(10))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	final, last, err := cli.LatestOutput(ctx, "first-study")
	if err != nil || last != rounds {
		t.Fatalf("latest output after the study: round %d, %v", last, err)
	}
	recs = tc.exportRecords(t, cli)
	lastRec := recs[len(recs)-1]
	if lastRec.Kind != audit.KindRoundCompleted || lastRec.OutputModel != final {
		t.Fatalf("the last record is %s round %d, want the completed round %d that output the latest model", lastRec.Kind, lastRec.Round, rounds)
	}

	// After the study: round N+1, and a second round N.
	beyond, path := forge("beyond-the-limit", rounds+1, final, lastRec.OptimizerAfter)
	beyond.HEParamsID, beyond.CollectiveKeyHash = keySetup.HEParamsID, keySetup.CollectiveKeyHash
	appendRule(t, cli, coordID, fmt.Sprintf("round %d of a %d-round study", rounds+1, rounds), beyond, audit.ErrRoundLimit)
	forged = append(forged, path)

	again, path := forge("second-record", rounds, lastRec.ParentModel, lastRec.OptimizerBefore)
	again.HEParamsID, again.CollectiveKeyHash = keySetup.HEParamsID, keySetup.CollectiveKeyHash
	env, err := audit.Sign(coordID, again)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Append(ctx, env.Marshal()); !errors.Is(err, audit.ErrConflict) {
		t.Fatalf("a second record of round %d: append returned %v, want %v", rounds, err, audit.ErrConflict)
	} else {
		t.Logf("a second record of round %d: refused: %v", rounds, err)
	}
	forged = append(forged, path)

	// Nothing forged is on the log; the model stands.
	if n := len(tc.exportRecords(t, cli)); n != 2+rounds {
		t.Fatalf("log has %d entries, want %d", n, 2+rounds)
	}
	if h, r, err := cli.LatestOutput(ctx, "first-study"); err != nil || h != final || r != rounds {
		t.Fatalf("latest output moved: %x round %d, %v", h[:8], r, err)
	}
	for _, f := range forged {
		out, err := tc.verify(t, f)
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "verification FAILED") {
			t.Fatalf("verify %s: %v\n%s", filepath.Base(f), err, out)
		}
	}
	out, err := tc.verify(t, filepath.Join(tc.coordDir, "coordinator-data", "models", hex.EncodeToString(final[:])))
	if err != nil || !strings.Contains(out, "VERIFIED  model "+hex.EncodeToString(final[:])) {
		t.Fatalf("the genuine final model: %v\n%s", err, out)
	}
}

// appendRule appends rec signed by id and requires the log to refuse it
// for rule.
func appendRule(t *testing.T, cli *cluster.Client, id *tlsutil.Identity, what string, rec *audit.Record, rule error) {
	t.Helper()
	env, err := audit.Sign(id, rec)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = cli.Append(ctx, env.Marshal())
	if !errors.Is(err, cluster.ErrRejected) || !strings.Contains(err.Error(), rule.Error()) {
		t.Fatalf("%s: append returned %v; want it refused with %q", what, err, rule)
	}
	t.Logf("%s: refused: %v", what, err)
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randomHash(t *testing.T) audit.Hash { return audit.Hash(randomBytes(t, 32)) }

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
