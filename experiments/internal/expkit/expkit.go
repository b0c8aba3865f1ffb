// Package expkit is what the experiments share: synthetic tabular
// hospitals, a runner for a real federation on loopback (coordinator and N
// hospital clients over gRPC with mutual TLS, optionally an audit node)
// that measures round times, phase times and bytes on the wire, and CSV,
// markdown and PNG output.
package expkit

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedledger/fedledger/internal/model"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

// LimitMemory sets the Go runtime's soft memory limit to three quarters of
// the machine's memory, unless GOMEMLIMIT is set. An experiment runs every
// hospital in one process (32 clients each holding a 10^6-parameter model,
// its ciphertexts and shares), where the default GC pacing lets the heap
// grow to twice what is live and the kernel's OOM killer ends the run; in
// a deployment each hospital is its own process.
func LimitMemory() {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return
	}
	var kb int64
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			fmt.Sscanf(strings.TrimSpace(rest), "%d", &kb)
		}
	}
	if kb > 0 {
		debug.SetMemoryLimit(kb * 1024 / 4 * 3)
	}
}

// Machine describes where the experiment ran.
func Machine() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s, %d CPUs, %s/%s, %s", host, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

// SyntheticCSV writes a hospital's synthetic tabular data: rows of 13
// standard-normal features and a label drawn from a logistic model whose
// weights are shared by all hospitals (so federating helps), with a
// site-specific shift in the feature means.
func SyntheticCSV(path string, site, rows int, seed int64) error {
	w := rand.New(rand.NewSource(seed))
	weights := make([]float64, 13)
	for i := range weights {
		weights[i] = w.NormFloat64()
	}
	r := rand.New(rand.NewSource(seed + int64(site)*7919))
	var b strings.Builder
	for i := 0; i < 13; i++ {
		fmt.Fprintf(&b, "f%d,", i)
	}
	b.WriteString("y\n")
	shift := r.NormFloat64() * 0.5
	for n := 0; n < rows; n++ {
		z := 0.0
		for i := 0; i < 13; i++ {
			x := r.NormFloat64() + shift
			z += weights[i] * x
			fmt.Fprintf(&b, "%.5f,", x)
		}
		y := 0
		if r.Float64() < 1/(1+math.Exp(-z)) {
			y = 1
		}
		fmt.Fprintf(&b, "%d\n", y)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// Features are the synthetic data's columns.
func Features() []string {
	fs := make([]string, 13)
	for i := range fs {
		fs[i] = fmt.Sprintf("f%d", i)
	}
	return fs
}

// MLP is a one-hidden-layer MLP on the 13 synthetic features with about
// params parameters (15h+1 for h hidden units).
func MLP(params int) model.Spec {
	h := max(1, (params-1)/15)
	return model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{h}}
}

// RunConfig is one study.
type RunConfig struct {
	Clients    int
	Mode       string
	Model      model.Spec
	Rounds     int
	MinClients int // K (0: all clients)
	Threshold  int // t (0: majority)
	LocalSteps int
	Seed       int64
	// Drop[r] lists client indexes that vanish right after uploading
	// their round-r update (the others upload a second later).
	Drop map[int][]int
	// Audit runs the study against a one-node audit log (Raft, bbolt with
	// fsync, mutual TLS); its per-round append time is measured.
	Audit bool
}

// RunResult is what a study measured.
type RunResult struct {
	Rounds []coordinator.RoundReport
	// RoundSeconds is the mean wall time of a round (announce to new
	// model, key setup excluded).
	RoundSeconds    float64
	KeySetupSeconds float64
	// WireBytesPerRound is every byte the coordinator's listener sent and
	// received (TLS records included) during the rounds, per round.
	WireBytesPerRound float64
	// Err is the study's error when it ended without a successful round
	// (its rounds are still reported).
	Err error
	// Phase means, seconds per round: coordinator side (aggregate,
	// decryption_shares, combine) and per client (train, encode, upload,
	// decryption_share), plus the audit append.
	Phases map[string]float64
}

// countingListener counts the bytes of every connection it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countingConn{c, l.n}, nil
}

type countingConn struct {
	net.Conn
	n *atomic.Int64
}

func (c countingConn) Read(b []byte) (int, error) {
	k, err := c.Conn.Read(b)
	c.n.Add(int64(k))
	return k, err
}

func (c countingConn) Write(b []byte) (int, error) {
	k, err := c.Conn.Write(b)
	c.n.Add(int64(k))
	return k, err
}

// timedRecorder measures RecordRound.
type timedRecorder struct {
	coordinator.Recorder
	mu    sync.Mutex
	total time.Duration
	n     int
}

func (r *timedRecorder) RecordRound(ctx context.Context, rep coordinator.RoundReport) error {
	t0 := time.Now()
	err := r.Recorder.RecordRound(ctx, rep)
	r.mu.Lock()
	r.total += time.Since(t0)
	r.n++
	r.mu.Unlock()
	return err
}

// histMean is the mean of a histogram series in a registry (by metric name
// and phase label), or 0.
func histMean(reg *prometheus.Registry, name, phase string) (sum float64, count uint64) {
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "phase" && l.GetValue() == phase {
					return m.GetHistogram().GetSampleSum(), m.GetHistogram().GetSampleCount()
				}
			}
		}
	}
	return 0, 0
}

func gauge(reg *prometheus.Registry, name string) float64 {
	fams, _ := reg.Gather()
	for _, f := range fams {
		if f.GetName() == name && len(f.GetMetric()) > 0 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// Run runs one study in this process: a coordinator and cfg.Clients
// hospital clients on synthetic data, over gRPC with mutual TLS on
// loopback.
func Run(ctx context.Context, cfg RunConfig) (*RunResult, error) {
	dir, err := os.MkdirTemp("", "fedledger-exp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ca, err := tlsutil.NewCA("experiment consortium", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	coordID, err := ca.Issue("coordinator", tlsutil.RoleCoordinator, []string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	k, t := cfg.MinClients, cfg.Threshold
	if k == 0 {
		k = cfg.Clients
	}
	if t == 0 {
		t = max(2, cfg.Clients/2+1)
	}
	var ids []string
	for i := 0; i < cfg.Clients; i++ {
		ids = append(ids, fmt.Sprintf("site-%02d", i))
	}
	strat, _ := aggregation.DefaultConfig(aggregation.FedAvg)
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps, tc.Seed = 0, max(1, cfg.LocalSteps), cfg.Seed
	cc := coordinator.DefaultConfig()
	cc.DataDir = filepath.Join(dir, "coordinator")
	cc.TLS = tlsutil.ServerConfig(coordID, ca.Pool())
	cc.Study = coordinator.StudyConfig{
		ID: "experiment", Model: cfg.Model, Training: tc, Rounds: cfg.Rounds, MinClients: k, Clients: ids,
		RoundDeadline: 10 * time.Minute, StartTimeout: 2 * time.Minute, Strategy: strat, Seed: cfg.Seed,
		Mode: cfg.Mode, HEPreset: secure.Default.ID, Threshold: t, KeySetupTimeout: 5 * time.Minute,
	}
	var rec *timedRecorder
	if cfg.Audit {
		r, closeLog, err := auditRecorder(ctx, ca, coordID, cc.Study, filepath.Join(dir, "audit"))
		if err != nil {
			return nil, err
		}
		defer closeLog()
		rec = &timedRecorder{Recorder: r}
		cc.Recorder = rec
	}
	co, err := coordinator.New(cc, Quiet())
	if err != nil {
		return nil, err
	}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	var wire, wireAtStart atomic.Int64
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx, countingListener{raw, &wire}) }()

	cctx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	var clients []*client.Client
	var uploadsMu sync.Mutex
	uploads := map[int]int{} // client -> uploads so far
	for i, id := range ids {
		path := filepath.Join(dir, id+".csv")
		if err := SyntheticCSV(path, i, 200, cfg.Seed); err != nil {
			return nil, err
		}
		kc := client.DefaultConfig()
		kc.CoordinatorAddr, kc.DataDir = raw.Addr().String(), filepath.Join(dir, "clients")
		ident, err := ca.Issue(id, tlsutil.RoleClient, nil, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		kc.TLS = tlsutil.ClientConfig(ident, ca.Pool(), "127.0.0.1")
		kc.Data.CSV = &train.CSVConfig{Path: path, LabelColumn: "y", PositiveLabels: []string{"1"}, Numeric: Features(),
			Missing: "drop", TestFraction: 0.25, Seed: cfg.Seed, Standardize: true}
		kc.AllowPlaintext = cfg.Mode == coordinator.ModePlaintext
		kc.MaxBackoff = time.Second
		ctxI, cancelI := context.WithCancel(cctx)
		defer cancelI()
		idx := i
		if len(cfg.Drop) > 0 {
			kc.DialOptions = []grpc.DialOption{dropHook(cfg.Drop, idx, &uploadsMu, uploads, cancelI)}
		}
		c, err := client.New(kc, Quiet())
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctxI) }()
	}
	// Key setup's bytes are not a round's: in secure mode the count
	// restarts when the key-setup gauge is set (within a millisecond).
	go func() {
		for cc.Study.Secure() && gauge(co.Metrics(), "fedledger_coordinator_key_setup_seconds") == 0 {
			select {
			case <-cctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
		wireAtStart.Store(wire.Load())
	}()
	err = <-done
	stop()
	wg.Wait()
	res := co.Result()
	if err != nil && len(res.Rounds) == 0 {
		return nil, err
	}
	// A study whose every round failed still measured its rounds.
	out := &RunResult{Rounds: res.Rounds, Phases: map[string]float64{}, Err: err}
	var total time.Duration
	for _, r := range res.Rounds {
		total += r.Duration
	}
	n := float64(len(res.Rounds))
	out.RoundSeconds = total.Seconds() / n
	out.KeySetupSeconds = gauge(co.Metrics(), "fedledger_coordinator_key_setup_seconds")
	out.WireBytesPerRound = float64(wire.Load()-wireAtStart.Load()) / n
	for _, ph := range []string{"aggregate", "decryption_shares", "combine"} {
		s, _ := histMean(co.Metrics(), "fedledger_coordinator_phase_duration_seconds", ph)
		out.Phases["coordinator_"+ph] = s / n
	}
	for _, ph := range []string{"train", "encode", "upload", "decryption_share"} {
		var sum float64
		var cnt uint64
		for _, c := range clients {
			s, k := histMean(c.Metrics(), "fedledger_client_phase_duration_seconds", ph)
			sum, cnt = sum+s, cnt+k
		}
		if cnt > 0 {
			out.Phases["client_"+ph] = sum / float64(cnt)
		}
	}
	if rec != nil && rec.n > 0 {
		out.Phases["audit_append"] = rec.total.Seconds() / float64(rec.n)
	}
	return out, nil
}

// dropHook makes client idx vanish right after its upload in the rounds
// listed for it, and delays the uploads of the others in those rounds by a
// second so the vanishing happens first.
func dropHook(drop map[int][]int, idx int, mu *sync.Mutex, uploads map[int]int, cancel context.CancelFunc) grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if method != "/fedledger.v1.Federation/SubmitUpdate" {
			return streamer(ctx, desc, cc, method, opts...)
		}
		mu.Lock()
		uploads[idx]++
		round := uploads[idx]
		mu.Unlock()
		dropping := false
		for _, i := range drop[round] {
			dropping = dropping || i == idx
		}
		if !dropping && len(drop[round]) > 0 {
			time.Sleep(time.Second)
		}
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || !dropping {
			return cs, err
		}
		return &afterRecv{ClientStream: cs, after: cancel}, nil
	})
}

type afterRecv struct {
	grpc.ClientStream
	after func()
}

func (s *afterRecv) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.after()
	}
	return err
}

// WriteCSV writes a header and rows.
func WriteCSV(path string, header []string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write(header)
	w.WriteAll(rows)
	if err := w.Error(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// WriteTable writes a markdown table.
func WriteTable(w io.Writer, header []string, rows [][]string) {
	fmt.Fprintf(w, "| %s |\n|%s\n", strings.Join(header, " | "), strings.Repeat("---|", len(header)))
	for _, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
}

// Percentile of sorted durations (p in [0,100]).
func Percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// auditRecorder starts a one-node audit log and returns the coordinator's
// recorder for it, with the study record signed by an admin.
func auditRecorder(ctx context.Context, ca *tlsutil.CA, coordID *tlsutil.Identity, st coordinator.StudyConfig, dir string) (coordinator.Recorder, func(), error) {
	nodeID, err := ca.Issue("audit-1", tlsutil.RoleAuditNode, []string{"127.0.0.1"}, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	admin, err := ca.Issue("admin", tlsutil.RoleAdmin, nil, 24*time.Hour)
	if err != nil {
		return nil, nil, err
	}
	nc := cluster.DefaultNodeConfig()
	nc.Listen, nc.DataDir, nc.Identity, nc.Roots, nc.Bootstrap = "127.0.0.1:0", dir, nodeID, ca.Pool(), true
	nc.HeartbeatTimeout, nc.ElectionTimeout, nc.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	node, err := cluster.StartNode(nc)
	if err != nil {
		return nil, nil, err
	}
	for deadline := time.Now().Add(10 * time.Second); !node.IsLeader(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			node.Close()
			return nil, nil, fmt.Errorf("expkit: audit node did not elect itself")
		}
	}
	_, _, initial, err := coordinator.InitialModel(st)
	if err != nil {
		node.Close()
		return nil, nil, err
	}
	env, err := audit.Sign(admin, coordinator.StudyRecord(st, initial, admin.ID, time.Time{}))
	if err != nil {
		node.Close()
		return nil, nil, err
	}
	cli, err := cluster.Dial([]string{node.Addr()}, tlsutil.ClientConfig(coordID, ca.Pool(), ""))
	if err != nil {
		node.Close()
		return nil, nil, err
	}
	return &coordinator.AuditRecorder{Log: cli, Identity: coordID, StudyRecord: env.Marshal()}, func() { cli.Close(); node.Close() }, nil
}
