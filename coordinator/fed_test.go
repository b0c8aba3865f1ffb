package coordinator_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// The end-to-end tests run on internal/fedtest, the one loopback
// federation: a development PKI, a real audit cluster (Raft over mutual
// TLS, bbolt), the coordinator and the four heart-disease hospitals as
// clients over gRPC with mutual TLS. Nothing here wires its own.

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// plainStudy is a plaintext study of the four hospitals: logistic
// regression, 50 local steps a round, K = k.
func plainStudy(t testing.TB, strategy string, rounds, k int) coordinator.StudyConfig {
	t.Helper()
	strat, err := aggregation.DefaultConfig(strategy)
	if err != nil {
		t.Fatal(err)
	}
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps = 0, 50
	return coordinator.StudyConfig{
		ID: "heart-e2e", Model: model.Spec{Kind: model.KindLogReg, Inputs: 13}, Training: tc, Rounds: rounds,
		MinClients: k, Clients: train.Hospitals, RoundDeadline: 20 * time.Second, StartTimeout: 20 * time.Second,
		Strategy: strat, Seed: 1, Mode: coordinator.ModePlaintext,
	}
}

// secureStudy is plainStudy in secure mode with threshold t.
func secureStudy(t testing.TB, strategy string, rounds, k, threshold int) coordinator.StudyConfig {
	st := plainStudy(t, strategy, rounds, k)
	st.Mode, st.HEPreset, st.Threshold, st.KeySetupTimeout = coordinator.ModeSecure, secure.Default.ID, threshold, time.Minute
	return st
}

// startFed starts a federation in a test directory (the hospitals' own
// heart data unless cfg says otherwise) and stops it when the test ends.
// Clients are started by the test.
func startFed(t testing.TB, cfg fedtest.Config) *fedtest.Federation {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Data == nil {
		cfg.Data = func(site string) client.DataConfig { return client.DataConfig{Heart: site} }
	}
	if cfg.Logger == nil {
		cfg.Logger = quiet()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	fed, err := fedtest.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fed.Close)
	return fed
}

// startClient starts site's client with the given hooks.
func startClient(t testing.TB, fed *fedtest.Federation, site string, opts ...grpc.DialOption) *client.Client {
	t.Helper()
	c, err := fed.StartClient(site, opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startClients starts every hospital's client, with hooks per site.
func startClients(t testing.TB, fed *fedtest.Federation, hooks map[string][]grpc.DialOption) map[string]*client.Client {
	t.Helper()
	out := map[string]*client.Client{}
	for _, h := range fed.Sites() {
		out[h] = startClient(t, fed, h, hooks[h]...)
	}
	return out
}

// fedRef hands the federation to callbacks the coordinator runs (OnRound,
// a recorder), which are configured before fedtest.Start returns it: an
// atomic pointer orders the handover for the race detector.
type fedRef = atomic.Pointer[fedtest.Federation]

// wait waits for the study to finish successfully.
func wait(t testing.TB, fed *fedtest.Federation) coordinator.StudyResult {
	t.Helper()
	res, err := fed.Wait(4 * time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// metricValue reads one series from the coordinator's registry; name is
// the metric name with at most one {label="value"} selector.
func metricValue(t testing.TB, co *coordinator.Coordinator, name string) float64 {
	t.Helper()
	return registryValue(t, co.Metrics(), name)
}

// registryValue reads one series from a Prometheus registry.
func registryValue(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	v, ok := lookupValue(t, reg, name)
	if !ok {
		t.Fatalf("no series %s", name)
	}
	return v
}

// lookupValue is registryValue that says whether the series exists.
func lookupValue(t testing.TB, reg *prometheus.Registry, name string) (float64, bool) {
	t.Helper()
	metric, label, _ := strings.Cut(strings.TrimSuffix(name, "}"), "{")
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, lp := range m.GetLabel() {
				ok = ok || fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()) == label
			}
			if !ok {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

// sumSeries sums every series of a counter or gauge.
func sumSeries(t testing.TB, reg *prometheus.Registry, metric string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range families {
		if mf.GetName() == metric {
			for _, m := range mf.GetMetric() {
				n += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return n
}

// auditRejections sums the appends the audit nodes refused under their
// rules, over the running nodes.
func auditRejections(t testing.TB, fed *fedtest.Federation) float64 {
	t.Helper()
	var n float64
	for _, node := range fed.Audit.Nodes {
		if node != nil {
			v, _ := lookupValue(t, node.Metrics(), `fedledger_audit_appends_total{result="rejected"}`)
			n += v
		}
	}
	return n
}

// studyRecords are the records of the study in an exported bundle, in log
// order.
func studyRecords(t testing.TB, b *audit.Bundle, study string) []*audit.Record {
	t.Helper()
	var out []*audit.Record
	for i, leaf := range b.Leaves {
		e, err := audit.UnmarshalEnvelope(leaf)
		if err != nil {
			t.Fatalf("bundle entry %d: %v", i, err)
		}
		rec, err := audit.UnmarshalRecord(e.Body)
		if err != nil {
			t.Fatalf("bundle entry %d: %v", i, err)
		}
		if rec.StudyID == study {
			out = append(out, rec)
		}
	}
	return out
}

// rawAPI is a Federation client speaking for id over its own connection.
func rawAPI(t testing.TB, fed *fedtest.Federation, id *tlsutil.Identity) pb.FederationClient {
	t.Helper()
	conn, err := fed.Dial(id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewFederationClient(conn)
}

// waitStatus polls StudyAdmin.Status (as the regulator) until ok says so,
// and returns that status; the coordinator may be restarting meanwhile.
func waitStatus(t testing.TB, fed *fedtest.Federation, timeout time.Duration, what string, ok func(*pb.StudyStatus) bool) *pb.StudyStatus {
	t.Helper()
	var last *pb.StudyStatus
	var lastErr error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := fed.Status(ctx)
		cancel()
		if err == nil && ok(st) {
			return st
		}
		if err == nil {
			last = st
		}
		lastErr = err
	}
	t.Fatalf("status never showed %s within %v; last status %v (last error %v)", what, timeout, last, lastErr)
	return nil
}

// gate blocks calls while it is closed: a hook's before func that waits.
type gate struct {
	mu      sync.Mutex
	closed  bool
	open    chan struct{}
	blocked int
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

// close makes later calls wait until reopen.
func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.closed, g.open = true, make(chan struct{})
	}
}

// reopen lets every waiting and later call through.
func (g *gate) reopen() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.closed = false
		close(g.open)
	}
}

// pass is the hook: it waits while the gate is closed.
func (g *gate) pass() error {
	g.mu.Lock()
	if !g.closed {
		g.mu.Unlock()
		return nil
	}
	ch := g.open
	g.blocked++
	g.mu.Unlock()
	<-ch
	return nil
}

// waiting is how many calls the gate has held back so far.
func (g *gate) waiting() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.blocked
}

func hexOf(h [32]byte) string { return fmt.Sprintf("%x", h) }

// recordHold holds back the first record of one round: its Record call
// waits until the coordinator stops (its context ends), then lets the
// real recorder see the cancelled context, as an append cut short by a
// shutdown would. held is closed when the round's record is held.
type recordHold struct {
	round int
	once  sync.Once
	held  chan struct{}
}

func newRecordHold(round int) *recordHold {
	return &recordHold{round: round, held: make(chan struct{})}
}

// wrap is a fedtest.Config.Recorder.
func (h *recordHold) wrap(r coordinator.Recorder) coordinator.Recorder { return heldRecorder{r, h} }

type heldRecorder struct {
	coordinator.Recorder
	h *recordHold
}

func (r heldRecorder) Record(ctx context.Context, rec study.Record) error {
	hold := false
	if rec.Round != nil && rec.Round.Round == r.h.round {
		r.h.once.Do(func() { hold = true })
	}
	if hold {
		close(r.h.held)
		<-ctx.Done()
	}
	return r.Recorder.Record(ctx, rec)
}

// slowUnderRace skips a test of several secure rounds in -short mode: the
// race detector makes Lattigo's arithmetic about ten times slower, and
// `make test` runs this package with -race -short on two cores. The full
// run (without -short) always runs it.
func slowUnderRace(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("several secure rounds (key setup, decryption and countersigning recompute the model): runs without -short")
	}
}
