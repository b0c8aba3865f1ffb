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
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
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
	// CheckBytesPerDecryption is what a decryptor received, on average per
	// decryption share it gave, to check that the aggregate is the sum of
	// the contributions (the contributors' sketches, and the contributions
	// it downloaded whole); ContributionBytes is the mean size of one
	// contribution. Secure mode only.
	CheckBytesPerDecryption, ContributionBytes float64
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

// counter sums a counter's series in a registry, those whose label is
// value (every series when label is empty).
func counter(reg *prometheus.Registry, name, label, value string) float64 {
	fams, _ := reg.Gather()
	var sum float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := label == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == label && l.GetValue() == value
			}
			if match {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
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
// loopback, every round recorded, with the hospitals' signatures, on a
// one-node audit log (Raft, bbolt with fsync, mutual TLS).
func Run(ctx context.Context, cfg RunConfig) (*RunResult, error) {
	dir, err := os.MkdirTemp("", "fedledger-exp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
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
		if err := SyntheticCSV(filepath.Join(dir, ids[i]+".csv"), i, 200, cfg.Seed); err != nil {
			return nil, err
		}
	}
	strat, _ := aggregation.DefaultConfig(aggregation.FedAvg)
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps, tc.Seed = 0, max(1, cfg.LocalSteps), cfg.Seed
	st := coordinator.StudyConfig{
		ID: "experiment", Model: cfg.Model, Training: tc, Rounds: cfg.Rounds, MinClients: k, Clients: ids,
		RoundDeadline: 10 * time.Minute, StartTimeout: 2 * time.Minute, Strategy: strat, Seed: cfg.Seed,
		Mode: cfg.Mode, HEPreset: secure.Default.ID, Threshold: t, KeySetupTimeout: 5 * time.Minute,
	}
	var wire, wireAtStart atomic.Int64
	var uploadsMu sync.Mutex
	uploads := map[int]int{} // client -> uploads so far
	fed, err := fedtest.Start(ctx, fedtest.Config{Dir: dir, Study: st, AuditNodes: 1, Logger: Quiet(),
		Listener: func(l net.Listener) net.Listener { return countingListener{l, &wire} },
		Data: func(site string) client.DataConfig {
			return client.DataConfig{CSV: &train.CSVConfig{Path: filepath.Join(dir, site+".csv"), LabelColumn: "y", PositiveLabels: []string{"1"},
				Numeric: Features(), Missing: "drop", TestFraction: 0.25, Seed: cfg.Seed, Standardize: true}}
		},
	})
	if err != nil {
		return nil, err
	}
	defer fed.Close()
	var clients []*client.Client
	for i, id := range ids {
		var opts []grpc.DialOption
		if len(cfg.Drop) > 0 {
			idx := i
			opts = append(opts, dropHook(cfg.Drop, idx, &uploadsMu, uploads, func() { go fed.StopClient(ids[idx]) }))
		}
		c, err := fed.StartClient(id, opts)
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
	}
	co := fed.Coordinator()
	// Key setup's bytes are not a round's: in secure mode the count
	// restarts when the key-setup gauge is set (within a millisecond).
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for st.Secure() && gauge(co.Metrics(), "fedledger_coordinator_key_setup_seconds") == 0 {
			select {
			case <-cctx.Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
		wireAtStart.Store(wire.Load())
	}()
	res, err := fed.Wait(time.Hour)
	stop()
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
	for _, ph := range []string{"aggregate", "sketch", "decryption_shares", "combine", "countersign", "record"} {
		s, _ := histMean(co.Metrics(), "fedledger_coordinator_phase_duration_seconds", ph)
		out.Phases["coordinator_"+ph] = s / n
	}
	// Client phases: the mean over every client's observations.
	for _, ph := range []string{"train", "encode", "upload", "sketch", "decryption_share", "countersign"} {
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
	out.Phases["audit_append"] = out.Phases["coordinator_record"]
	if updates := counter(co.Metrics(), "fedledger_coordinator_updates_total", "result", "accepted"); updates > 0 {
		out.ContributionBytes = counter(co.Metrics(), "fedledger_coordinator_update_bytes_total", "", "") / updates
	}
	var checked, given float64
	for _, c := range clients {
		checked += counter(c.Metrics(), "fedledger_client_aggregate_check_bytes_total", "", "")
		given += counter(c.Metrics(), "fedledger_client_decryption_shares_total", "result", "given")
	}
	if given > 0 {
		out.CheckBytesPerDecryption = checked / given
	}
	return out, nil
}

// dropHook makes client idx vanish right after its upload in the rounds
// listed for it, and delays the uploads of the others in those rounds by a
// second so the vanishing happens first.
func dropHook(drop map[int][]int, idx int, mu *sync.Mutex, uploads map[int]int, vanish func()) grpc.DialOption {
	dropping := false // this client's uploads are sequential
	return fedtest.Hook(fedtest.SubmitUpdate, func() error {
		mu.Lock()
		uploads[idx]++
		round := uploads[idx]
		mu.Unlock()
		dropping = slices.Contains(drop[round], idx)
		if !dropping && len(drop[round]) > 0 {
			time.Sleep(time.Second)
		}
		return nil
	}, func() {
		if dropping {
			vanish()
		}
	})
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

// MeanSD is the mean and the sample standard deviation (n − 1) of xs.
func MeanSD(xs []float64) (mean, sd float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		sd += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(sd / float64(max(1, len(xs)-1)))
}

// ReadCSV reads a whole CSV file, header included (for the experiments'
// short-run tests).
func ReadCSV(path string) ([][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return csv.NewReader(f).ReadAll()
}
