package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// federation is a coordinator on a loopback listener with mTLS and the
// consortium CA that issued its certificate.
type federation struct {
	t    testing.TB
	ca   *tlsutil.CA
	addr string
	co   *coordinator.Coordinator
	cfg  coordinator.Config
	done chan error

	mu         sync.Mutex
	clientDirs map[string]string
}

func studyConfig(t *testing.T, strategy string, rounds, k int) coordinator.Config {
	strat, err := aggregation.DefaultConfig(strategy)
	if err != nil {
		t.Fatal(err)
	}
	tc := model.DefaultTrainConfig()
	tc.Epochs, tc.LocalSteps = 0, 50
	cfg := coordinator.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.Study = coordinator.StudyConfig{
		ID: "heart-e2e", Model: model.Spec{Kind: model.KindLogReg, Inputs: 13}, Training: tc, Rounds: rounds,
		MinClients: k, Clients: train.Hospitals, RoundDeadline: 20 * time.Second, StartTimeout: 20 * time.Second,
		Strategy: strat, Seed: 1, Mode: coordinator.ModePlaintext,
	}
	return cfg
}

// secureStudyConfig is studyConfig in secure mode with threshold t.
func secureStudyConfig(t *testing.T, strategy string, rounds, k, threshold int) coordinator.Config {
	cfg := studyConfig(t, strategy, rounds, k)
	cfg.Study.Mode, cfg.Study.HEPreset, cfg.Study.Threshold = coordinator.ModeSecure, secure.Default.ID, threshold
	cfg.Study.KeySetupTimeout = time.Minute
	return cfg
}

func startFederation(t testing.TB, cfg coordinator.Config) *federation {
	t.Helper()
	ca, err := tlsutil.NewCA("e2e consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srvID, err := ca.Issue("coordinator", tlsutil.RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return startFederationWith(t, cfg, ca, srvID)
}

// startFederationWith starts the coordinator with a given CA and identity.
func startFederationWith(t testing.TB, cfg coordinator.Config, ca *tlsutil.CA, srvID *tlsutil.Identity) *federation {
	t.Helper()
	cfg.TLS = tlsutil.ServerConfig(srvID, ca.Pool())
	co, err := coordinator.New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &federation{t: t, ca: ca, addr: lis.Addr().String(), co: co, cfg: cfg, done: make(chan error, 1), clientDirs: map[string]string{}}
	go func() { f.done <- co.Run(context.Background(), lis) }()
	return f
}

func (f *federation) clientTLS(id string, role tlsutil.Role) *tls.Config {
	ident, err := f.ca.Issue(id, role, nil, time.Hour)
	if err != nil {
		f.t.Fatal(err)
	}
	return tlsutil.ClientConfig(ident, f.ca.Pool(), "127.0.0.1")
}

func (f *federation) newClient(hospital string, opts ...grpc.DialOption) *client.Client {
	return f.newClientWith(hospital, f.clientTLS(hospital, tlsutil.RoleClient), f.t.TempDir(), opts...)
}

// newClientWith makes a hospital client with the given identity whose
// state lives in dir.
func (f *federation) newClientWith(hospital string, id *tls.Config, dir string, opts ...grpc.DialOption) *client.Client {
	cfg := client.DefaultConfig()
	cfg.CoordinatorAddr = f.addr
	cfg.TLS = id
	cfg.Data.Heart = hospital
	cfg.DataDir = dir
	f.mu.Lock()
	f.clientDirs[hospital] = cfg.DataDir
	f.mu.Unlock()
	cfg.AllowPlaintext = !f.cfg.Study.Secure()
	cfg.DialOptions = opts
	c, err := client.New(cfg, quiet())
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *federation) wait() coordinator.StudyResult {
	select {
	case err := <-f.done:
		if err != nil {
			f.t.Fatalf("coordinator: %v", err)
		}
	case <-time.After(3 * time.Minute):
		f.t.Fatal("study did not finish")
	}
	return f.co.Result()
}

// TestFedAdamOverMTLS is the foundation's acceptance test: four hospital
// clients and a coordinator over real gRPC + mTLS on loopback; FedAdam on
// logistic regression reaches a mean per-hospital test accuracy >= 0.70
// within 20 rounds.
func TestFedAdamOverMTLS(t *testing.T) {
	f := startFederation(t, studyConfig(t, aggregation.FedAdam, 20, 4))
	var wg sync.WaitGroup
	for _, h := range train.Hospitals {
		c := f.newClient(h)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(context.Background()); err != nil {
				t.Errorf("client %s: %v", h, err)
			}
		}()
	}
	res := f.wait()
	wg.Wait()
	if len(res.Rounds) != 20 {
		t.Fatalf("%d rounds, want 20", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 4 {
			t.Fatalf("round %d: failed=%v contributors=%v", r.Round, r.Failed, r.Contributors)
		}
	}
	// Check the final model ourselves against every hospital's test split,
	// and against what the clients reported.
	spec, params, err := model.Decode(res.ModelBytes)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(res.ModelBytes) != res.Model {
		t.Fatal("final model bytes do not hash to the reported model")
	}
	var mean float64
	for _, h := range train.Hospitals {
		_, te, _ := train.LoadHeart(h, train.HeartSplitSeed)
		m, err := train.Evaluate(spec, params, te)
		if err != nil {
			t.Fatal(err)
		}
		if rep, ok := res.FinalTest[h]; !ok || rep.Accuracy != m.Accuracy || rep.N != m.N {
			t.Errorf("%s reported %+v, recomputed %+v", h, rep, m)
		}
		t.Logf("%-12s test accuracy %.3f (n=%d)", h, m.Accuracy, m.N)
		mean += m.Accuracy / float64(len(train.Hospitals))
	}
	t.Logf("mean per-hospital test accuracy after 20 FedAdam rounds: %.4f", mean)
	for name, want := range map[string]float64{
		`fedledger_coordinator_rounds_total{outcome="aggregated"}`: 20,
		`fedledger_coordinator_updates_total{result="accepted"}`:   80,
		`fedledger_coordinator_plaintext_mode`:                     1,
	} {
		if got := metricValue(t, f.co, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if mean < 0.70 {
		t.Fatalf("mean per-hospital accuracy %.4f < 0.70", mean)
	}
}

// metricValue reads one series from the coordinator's registry; name is
// the metric name with at most one {label="value"} selector.
func metricValue(t *testing.T, co *coordinator.Coordinator, name string) float64 {
	t.Helper()
	return registryValue(t, co.Metrics(), name)
}

// registryValue reads one series from a Prometheus registry.
func registryValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
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
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s", name)
	return 0
}

// TestClientDiesMidStudy: with K = 3, one hospital's client is killed after
// two rounds; every later round completes with the other three, and the
// dead client is listed as dropped, not as a contributor.
func TestClientDiesMidStudy(t *testing.T) {
	cfg := studyConfig(t, aggregation.FedAvg, 5, 3)
	cfg.Study.RoundDeadline = 3 * time.Second
	var (
		mu    sync.Mutex
		kill  context.CancelFunc
		after = 2
	)
	cfg.OnRound = func(r coordinator.RoundReport) {
		mu.Lock()
		defer mu.Unlock()
		if r.Round == after && kill != nil {
			kill()
		}
	}
	rec := &collectRecorder{}
	cfg.Recorder = rec
	f := startFederation(t, cfg)
	var wg sync.WaitGroup
	for _, h := range train.Hospitals {
		c := f.newClient(h)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if h == "switzerland" {
			mu.Lock()
			kill = cancel
			mu.Unlock()
		}
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
	}
	res := f.wait()
	wg.Wait()
	if len(res.Rounds) != 5 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed {
			t.Fatalf("round %d failed: %s", r.Round, r.Reason)
		}
		want := 4
		if r.Round > after {
			want = 3
		}
		if len(r.Contributors) != want {
			t.Errorf("round %d: contributors %v, want %d", r.Round, r.Contributors, want)
		}
	}
	if got := rec.rounds(); len(got) != 5 || got[4] != 5 {
		t.Fatalf("recorder saw rounds %v, want 1..5", got)
	}
}

// collectRecorder is a Recorder that remembers the rounds it was told
// about.
type collectRecorder struct {
	coordinator.LogRecorder
	mu   sync.Mutex
	seen []int
}

func (c *collectRecorder) RecordRound(_ context.Context, rep coordinator.RoundReport) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, rep.Round)
	return nil
}

func (c *collectRecorder) rounds() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.seen...)
}

// dial opens a raw Federation client with the given TLS identity.
func dial(t *testing.T, addr string, cfg *tls.Config) pb.FederationClient {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewFederationClient(conn)
}

// TestServerRefusesBadCallers: wrong roles, unapproved ids and certificates
// from another CA are refused on every RPC.
func TestServerRefusesBadCallers(t *testing.T) {
	cfg := studyConfig(t, aggregation.FedAvg, 1, 1)
	cfg.Study.Clients = []string{"va"}
	f := startFederation(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	other, _ := tlsutil.NewCA("another consortium", time.Hour)
	foreign, _ := other.Issue("cleveland", tlsutil.RoleClient, nil, time.Hour)
	cases := map[string]struct {
		tls  *tls.Config
		code codes.Code
	}{
		"observer role":     {f.clientTLS("regulator", tlsutil.RoleObserver), codes.PermissionDenied},
		"unapproved client": {f.clientTLS("mayo", tlsutil.RoleClient), codes.PermissionDenied},
		"another CA":        {tlsutil.ClientConfig(foreign, f.ca.Pool(), "127.0.0.1"), codes.Unavailable},
	}
	for name, tc := range cases {
		api := dial(t, f.addr, tc.tls)
		_, err := api.FetchModel(ctx, &pb.FetchModelRequest{StudyId: "heart-e2e", Sha256: make([]byte, 32)})
		if err == nil {
			var s pb.Federation_FetchModelClient
			s, err = api.FetchModel(ctx, &pb.FetchModelRequest{StudyId: "heart-e2e", Sha256: make([]byte, 32)})
			if err == nil {
				_, err = s.Recv()
			}
		}
		if status.Code(err) != tc.code {
			t.Errorf("%s: got %v, want %v", name, err, tc.code)
		}
	}
	// Health checking answers on the same mTLS port.
	conn, err := grpc.NewClient(f.addr, grpc.WithTransportCredentials(credentials.NewTLS(f.clientTLS("va", tlsutil.RoleClient))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: pb.Federation_ServiceDesc.ServiceName})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
	// Let the study end: one approved client runs it.
	c := f.newClient("va")
	go c.Run(ctx)
	f.wait()
}

// TestServerRejectsBadUpdatesOnTheWire sends hand-made updates over the
// real stream: a chunk whose data does not match the announced hash, an
// update for the wrong round and one for the wrong study, then a good one
// and its duplicate. Each bad one gets a clear status; the good one is
// accepted and completes the round.
func TestServerRejectsBadUpdatesOnTheWire(t *testing.T) {
	cfg := studyConfig(t, aggregation.FedAvg, 1, 1)
	cfg.Study.Clients = []string{"va"}
	f := startFederation(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	va := f.clientTLS("va", tlsutil.RoleClient)
	api := dial(t, f.addr, va)
	signer := va.Certificates[0].PrivateKey.(ed25519.PrivateKey)
	stream, err := api.Participate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Hello{Hello: &pb.Hello{}}})
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Accepted{Accepted: &pb.StudyAccepted{StudyId: "heart-e2e"}}})
	m, err := stream.Recv()
	if err != nil || m.GetTrain() == nil {
		t.Fatalf("train task: %v %v", m, err)
	}
	task := m.GetTrain()
	n := cfg.Study.Model.NumParams()
	payload, _ := aggregation.EncodeWeightedDelta(make([]float64, n), make([]float64, n), 1)
	payload[0] = 1 // a tiny, valid, non-zero delta

	send := func(study string, round uint64, mutate func([]*pb.Chunk)) error {
		chunks := chunk.Split(study, round, payload, 16)
		stmt := audit.Contribution{Site: "va", UpdateHash: sha256.Sum256(payload), Samples: 10}
		chunks[0].Header = &pb.UpdateHeader{ParentSha256: task.ParentSha256, NumSamples: 10, Encoding: aggregation.EncodingWeightedDelta,
			Signature: ed25519.Sign(signer, stmt.Message(study, round, audit.Hash(task.ParentSha256))), DataManifestSha256: make([]byte, 32)}
		if mutate != nil {
			mutate(chunks)
		}
		up, err := api.SubmitUpdate(ctx)
		if err != nil {
			return err
		}
		for _, c := range chunks {
			if up.Send(c) != nil {
				break
			}
		}
		_, err = up.CloseAndRecv()
		return err
	}
	checks := []struct {
		name   string
		study  string
		round  uint64
		mutate func([]*pb.Chunk)
		code   codes.Code
	}{
		{"hash mismatch", "heart-e2e", 1, func(c []*pb.Chunk) { c[2].Data = append([]byte{0xff}, c[2].Data[1:]...) }, codes.InvalidArgument},
		{"wrong round", "heart-e2e", 2, nil, codes.FailedPrecondition},
		{"wrong study", "other-study", 1, nil, codes.InvalidArgument},
		{"wrong size", "heart-e2e", 1, func(c []*pb.Chunk) { c[0].TotalSize = 9 }, codes.InvalidArgument},
		{"no header", "heart-e2e", 1, func(c []*pb.Chunk) { c[0].Header = nil }, codes.InvalidArgument},
		{"unsigned", "heart-e2e", 1, func(c []*pb.Chunk) { c[0].Header.Signature = nil }, codes.InvalidArgument},
		{"signed for other samples", "heart-e2e", 1, func(c []*pb.Chunk) { c[0].Header.NumSamples = 11 }, codes.InvalidArgument},
		{"no data manifest", "heart-e2e", 1, func(c []*pb.Chunk) { c[0].Header.DataManifestSha256 = nil }, codes.InvalidArgument},
	}
	for _, c := range checks {
		if err := send(c.study, c.round, c.mutate); status.Code(err) != c.code {
			t.Errorf("%s: got %v, want %v", c.name, err, c.code)
		} else {
			t.Logf("%s: %v", c.name, err)
		}
	}
	if err := send("heart-e2e", 1, nil); err != nil {
		t.Fatalf("good update rejected: %v", err)
	}
	// The round closed with the good update; the same update again is late.
	if err := send("heart-e2e", 1, nil); status.Code(err) != codes.FailedPrecondition && status.Code(err) != codes.AlreadyExists {
		t.Errorf("resubmission: got %v", err)
	}
	// Answer the final evaluation so the study ends promptly.
	for {
		m, err := stream.Recv()
		if err != nil {
			break
		}
		if e := m.GetEvaluate(); e != nil {
			stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{StudyId: e.StudyId, ModelSha256: e.ModelSha256, Test: &pb.Metrics{N: 1}}}})
		}
		if m.GetFinished() != nil {
			break
		}
	}
	res := f.wait()
	if len(res.Rounds) != 1 || res.Rounds[0].Failed || len(res.Rounds[0].Contributors) != 1 {
		t.Fatalf("round outcome %+v", res.Rounds)
	}
}
