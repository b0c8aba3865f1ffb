package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TestCommandsRunAnAuditedStudy drives a whole audited, secure study
// through the commands only: three `audit-node`s (one bootstraps, two
// join), `study create` by an admin, `study list` before and after,
// `trust`, the `coordinator` and four `client`s with audit sections, `study
// status` while the finished coordinator lingers (the final model's path
// and each site's accuracy), then `verify` against the live nodes and
// offline against the saved bundle, and a tampered bundle that must fail.
func TestCommandsRunAnAuditedStudy(t *testing.T) {
	dir := t.TempDir()
	issue := pemIssuer(t, dir)
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
linger: 10m
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
	// Before the study runs the log has its rules and its initial model,
	// and no key setup.
	_, _, initial, err := coordinatorInitialModel(filepath.Join(dir, "coordinator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := run(t, append([]string{"study", "list", "--audit", audits}, as("regulator")...)...)
	if err != nil {
		t.Fatalf("study list: %v\n%s", err, out)
	}
	if row := listRow(t, out, "audited-study"); row["ROUND"] != "0/2" || row["DONE"] != "0" || row["K"] != "3" ||
		row["MODE"] != "secure:ckks-n14-q2x60-seeded/v2,t=3" || row["KEY HOLDERS"] != "pending" ||
		row["LATEST MODEL"] != hex.EncodeToString(initial[:6]) || row["SITES"] != "cleveland,hungary,switzerland,va" {
		t.Fatalf("study list before the study: %v\n%s", row, out)
	}
	trust := filepath.Join(dir, "trust.json")
	if out, err := run(t, "trust", "--ca", filepath.Join(dir, "ca.pem"), "--origin", "test/audit-log", "--quorum", "2", "--out", trust,
		filepath.Join(dir, "audit-1.pem"), filepath.Join(dir, "audit-2.pem"), filepath.Join(dir, "audit-3.pem")); err != nil {
		t.Fatalf("trust: %v\n%s", err, out)
	}

	// The coordinator lingers after the study: it has its own context, to
	// stop it once its status has been read.
	coordCtx, stopCoord := context.WithCancel(ctx)
	defer stopCoord()
	var coord, study sync.WaitGroup
	coordErr := make(chan error, 1)
	start(coordCtx, &coord, coordErr, "coordinator", "--config", filepath.Join(dir, "coordinator.yaml"))
	errs := make(chan error, 4)
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
	// The hospitals exit when the study ends; the coordinator stays.
	study.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	select {
	case err := <-coordErr:
		t.Fatalf("the coordinator exited after the study instead of lingering: %v", err)
	default:
	}
	// It still answers study status: finished, the final model's path and
	// every site's accuracy of it, and no one connected once the
	// hospitals have hung up.
	var st statusJSON
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err = run(t, append([]string{"study", "status", "--coordinator", addr, "--json"}, as("regulator")...)...)
		if err != nil {
			t.Fatalf("study status after the study: %v\n%s", err, out)
		}
		st = statusJSON{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("study status --json: %v\n%s", err, out)
		}
		if len(st.Connected) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the hospitals have exited, yet study status says %v are connected", st.Connected)
		}
	}
	finalPath := filepath.Join(dir, "coordinator-state", "models", st.LatestModel)
	if st.Phase != "finished" || st.RoundsCompleted != 2 || st.WaitingFor != "" || st.Failure != "" || st.FinalModelPath != finalPath {
		t.Fatalf("status after the study: %+v; want finished, 2 rounds, final model %s", st, finalPath)
	}
	if b, err := os.ReadFile(st.FinalModelPath); err != nil || hex.EncodeToString(sha256Sum(b)) != st.LatestModel {
		t.Fatalf("final model %s: %v, or it does not hash to %s", st.FinalModelPath, err, st.LatestModel)
	}
	if len(st.FinalTest) != len(hospitals) {
		t.Fatalf("final test results of %d sites, want %d: %+v", len(st.FinalTest), len(hospitals), st.FinalTest)
	}
	for i, m := range st.FinalTest {
		if m.Site != hospitals[i] || m.N == 0 || m.Accuracy < 0 || m.Accuracy > 1 || m.AUC < 0 || m.AUC > 1 {
			t.Fatalf("final test result %d: %+v", i, m)
		}
	}
	text, err := run(t, append([]string{"study", "status", "--coordinator", addr}, as("regulator")...)...)
	if err != nil || !strings.Contains(text, `study "audited-study" (secure): finished, round 2 of 2`) ||
		!strings.Contains(text, "final model (on the coordinator's host): "+finalPath) {
		t.Fatalf("study status after the study: %v\n%s", err, text)
	}
	for _, m := range append(slices.Clone(st.FinalTest), st.LastRound...) {
		if want := fmt.Sprintf("%-20s test accuracy %.3f  AUC %.3f  loss %.4f  (%d examples)", m.Site, m.Accuracy, m.AUC, m.Loss, m.N); !strings.Contains(text, want) {
			t.Fatalf("study status does not show %q:\n%s", want, text)
		}
	}
	// The last round's evaluation at every site is in the status too.
	if len(st.LastRound) != len(hospitals) || !strings.Contains(text, "last round's start model on each site's own test split:") {
		t.Fatalf("last round's per-site evaluation: %+v\n%s", st.LastRound, text)
	}
	t.Logf("study status while the coordinator lingers:\n%s", text)
	stopCoord()
	coord.Wait()
	select {
	case err := <-coordErr:
		t.Fatalf("coordinator stopped while lingering: %v", err)
	default:
	}

	// The log: 2 rounds of 2, the key setup's holders, the final model.
	out, err = run(t, append([]string{"study", "list", "--audit", audits}, as("regulator")...)...)
	if err != nil {
		t.Fatalf("study list: %v\n%s", err, out)
	}
	if row := listRow(t, out, "audited-study"); row["ROUND"] != "2/2" || row["DONE"] != "2" || row["FAILED"] != "0" ||
		row["KEY HOLDERS"] != "cleveland,hungary,switzerland,va" || row["LATEST MODEL"] != st.LatestModel[:12] {
		t.Fatalf("study list after the study: %v\n%s", row, out)
	}
	t.Logf("study list after the study:\n%s", out)
	out, err = run(t, append([]string{"study", "list", "--audit", audits, "--json"}, as("regulator")...)...)
	var listed []studyJSON
	if err != nil || json.Unmarshal([]byte(out), &listed) != nil || len(listed) != 1 {
		t.Fatalf("study list --json: %v\n%s", err, out)
	}
	if l := listed[0]; l.Study != "audited-study" || l.CreatedBy != "admin" || l.RoundsAllowed != 2 || l.MinContributors != 3 ||
		l.Mode != "secure" || l.HEParams != "ckks-n14-q2x60-seeded/v2" || l.Threshold != 3 || !l.KeySetupDone ||
		strings.Join(l.KeyHolders, ",") != "cleveland,hungary,switzerland,va" || len(l.CollectiveKey) != 64 ||
		l.LastRound != 2 || l.RoundsCompleted != 2 || l.RoundsFailed != 0 || l.LatestModel != st.LatestModel || len(l.OptimizerState) != 64 {
		t.Fatalf("study list --json: %+v", l)
	}
	// The store keeps the models (and the server optimizer's states):
	// every model verifies against the live log, the initial one with no
	// round of lineage, the final one with 2.
	stored, _ := filepath.Glob(filepath.Join(dir, "coordinator-state", "models", "*"))
	saved := filepath.Join(dir, "bundle.bin")
	lineage := map[string]string{}
	for _, m := range stored {
		if b, err := os.ReadFile(m); err != nil {
			t.Fatal(err)
		} else if _, _, err := model.Decode(b); err != nil {
			continue // an optimizer state
		}
		out, err := run(t, "verify", m, "--trust", trust, "--audit", strings.Join(auditAddrs, ","), "--cert", filepath.Join(dir, "regulator.pem"),
			"--key", filepath.Join(dir, "regulator-key.pem"), "--ca", filepath.Join(dir, "ca.pem"), "--save-bundle", saved)
		if err != nil {
			t.Fatalf("verify --audit %s: %v", filepath.Base(m), err)
		}
		lineage[regexp.MustCompile(`[0-9]+ completed rounds`).FindString(out)] = m
	}
	if len(lineage) != 3 || lineage["2 completed rounds"] != finalPath || lineage["0 completed rounds"] != filepath.Join(filepath.Dir(finalPath), hex.EncodeToString(initial[:])) {
		t.Fatalf("stored models by lineage %v; want the initial model with 0 rounds, one with 1, the final model %s with 2", lineage, finalPath)
	}
	final := finalPath
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

// listRow returns the row of study in `study list`'s table, by column.
func listRow(t *testing.T, table, study string) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(table, "\n"), "\n")
	// Column names hold single spaces; columns are two or more apart.
	cols := regexp.MustCompile(`\s{2,}`).Split(strings.TrimSpace(lines[0]), -1)
	for _, l := range lines[1:] {
		f := strings.Fields(l)
		if len(f) == len(cols) && f[0] == study {
			row := map[string]string{}
			for i, c := range cols {
				row[c] = f[i]
			}
			return row
		}
	}
	t.Fatalf("study list has no row for %q:\n%s", study, table)
	return nil
}

func coordinatorInitialModel(path string) ([]float64, []byte, [32]byte, error) {
	st, err := config.LoadStudy(path)
	if err != nil {
		return nil, nil, [32]byte{}, err
	}
	return coordinator.InitialModel(st)
}

func sha256Sum(b []byte) []byte {
	h := sha256.Sum256(b)
	return h[:]
}
