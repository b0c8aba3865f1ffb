package coordinator

import (
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/grpcauth"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// maxMsg bounds every gRPC message: one chunk plus framing.
const maxMsg = 4 << 20

// ErrInterrupted: Run stopped (its context ended) before the study did; a
// restarted coordinator resumes it from the audit log.
var ErrInterrupted = errors.New("coordinator: interrupted; the study resumes from the audit log on restart")

// Coordinator runs one study. Create it with New and run it with Run.
type Coordinator struct {
	cfg      Config
	log      *slog.Logger
	models   *Store // models and server-optimiser states
	objects  *Store // updates, aggregates and decryption shares, served to hospitals
	recorder Recorder
	// robust: a plaintext study's robust aggregator (nil: the weighted
	// average).
	robust   *aggregation.Robust
	approved map[string]bool
	metrics  *metrics
	// initial is the study's round-0 model (set before the study runs).
	initial study.Object

	events  chan request
	results chan study.Event
	stopped chan struct{} // closed when the study goroutine stops taking events

	mu       sync.Mutex
	sessions map[string]*session
	finished *pb.StudyFinished
	status   study.Status
	result   StudyResult
	setup    *secure.Setup // secure mode: the study's public key material, once known
	pending  *secure.Setup // computed at key setup, not yet saved
}

// request is an event from a gRPC handler; reply, when set, gets the
// machine's verdict.
type request struct {
	ev    study.Event
	reply chan error
}

// New checks the configuration and opens the stores.
func New(cfg Config, logger *slog.Logger) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	models, err := OpenStore(filepath.Join(cfg.DataDir, "models"))
	if err != nil {
		return nil, err
	}
	objects, err := OpenStore(filepath.Join(cfg.DataDir, "ciphertexts"))
	if err != nil {
		return nil, err
	}
	c := &Coordinator{
		cfg: cfg, log: logger.With(slog.String("study", cfg.Study.ID)), models: models, objects: objects,
		approved: map[string]bool{}, events: make(chan request, 64), results: make(chan study.Event, 4), stopped: make(chan struct{}),
		sessions: map[string]*session{}, metrics: newMetrics(cfg.Study.ID),
		status: study.Status{Phase: study.PhaseWaiting, Rounds: cfg.Study.Rounds},
	}
	for _, id := range cfg.Study.Clients {
		c.approved[id] = true
	}
	if c.robust, err = aggregation.ParseRobust(cfg.Study.Robust); err != nil {
		return nil, err
	}
	c.recorder = cfg.Recorder
	if c.recorder == nil {
		c.recorder = LogRecorder{Logger: c.log}
	}
	if cfg.Study.Secure() {
		c.metrics.plaintextMode.Set(0)
		c.log.Info("secure mode: updates are encrypted under the study's collective key", slog.String("he_preset", cfg.Study.HEPreset),
			slog.Int("threshold", cfg.Study.Threshold))
	} else {
		c.metrics.plaintextMode.Set(1)
		c.log.Warn("PLAINTEXT MODE: model updates are NOT encrypted; the coordinator can read every hospital's update")
	}
	return c, nil
}

// Metrics is the coordinator's Prometheus registry, for an HTTP /metrics
// handler.
func (c *Coordinator) Metrics() *prometheus.Registry { return c.metrics.reg }

// Result returns the study's outcome; complete once Run has returned.
func (c *Coordinator) Result() StudyResult {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.result
}

// FinalModelPath is where the store keeps the study's final model, once
// the study has finished ("" before).
func (c *Coordinator) FinalModelPath() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.result.ModelBytes == nil {
		return ""
	}
	return c.models.path(c.result.Model)
}

// Run serves the Federation and StudyAdmin APIs on lis and runs the study
// to its end, or until ctx is cancelled (the study is then not finished:
// a restarted coordinator resumes it from the audit log). After the end it
// keeps answering StudyAdmin.Status and serving the final model for
// Config.Linger.
func (c *Coordinator) Run(ctx context.Context, lis net.Listener) error {
	// Refused handshakes (unknown CA, expired or missing certificates) are
	// logged and counted: the caller only sees a broken connection.
	refused := tlsutil.NewHandshakeLogger(c.log, func(reason string) { c.metrics.refusedTLS.WithLabelValues(reason).Inc() })
	srv := grpc.NewServer(
		grpc.Creds(grpcauth.LogRefusedHandshakes(credentials.NewTLS(c.cfg.TLS), refused)),
		grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg),
	)
	pb.RegisterFederationServer(srv, &server{c: c})
	pb.RegisterStudyAdminServer(srv, &adminServer{c: c})
	hs := health.NewServer()
	hs.SetServingStatus(pb.Federation_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	// Where the study stands is read (and its start recorded) before any
	// client is served, so a client checking the log never finds the study
	// missing.
	m, acts, err := c.prepare(ctx)
	if err != nil {
		lis.Close()
		close(c.stopped)
		c.finish(nil, err)
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()

	err = c.drive(ctx, m, acts)
	close(c.stopped)
	if errors.Is(err, ErrInterrupted) {
		// Shut down (SIGTERM, or the caller cancelled): not finished. The
		// hospitals are not told the study ended, only disconnected, so
		// they keep retrying and carry on with the restarted coordinator.
		hs.SetServingStatus(pb.Federation_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
		c.log.Warn("coordinator shutting down; the study is not finished and resumes from the audit log on restart")
		srv.Stop()
		<-serveErr
		return err
	}
	if c.cfg.OnFinish != nil {
		c.cfg.OnFinish(c.Result(), err)
	}
	if c.cfg.Linger != 0 {
		c.log.Info("study over; still answering status and serving the final model", slog.Duration("for", c.cfg.Linger))
		linger := make(<-chan time.Time)
		if c.cfg.Linger > 0 {
			linger = time.After(c.cfg.Linger)
		}
		select {
		case <-ctx.Done():
		case <-linger:
		}
	}
	hs.SetServingStatus(pb.Federation_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	// Let clients read StudyFinished and hang up, then stop.
	grace := time.NewTimer(5 * time.Second)
	defer grace.Stop()
	for c.sessionCount() > 0 {
		select {
		case <-grace.C:
			srv.Stop()
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
	done := make(chan struct{})
	go func() { srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-grace.C:
		srv.Stop()
	}
	if e := <-serveErr; e != nil && !errors.Is(e, grpc.ErrServerStopped) && err == nil {
		err = e
	}
	return err
}

// InitialModel is the study's round-0 model, its encoding and SHA-256:
// deterministic in the model spec and seed, so an admin can put the hash
// in the study record before the coordinator starts.
func InitialModel(st StudyConfig) ([]float64, []byte, [32]byte, error) {
	params, err := model.InitParams(st.Model, st.Seed)
	if err != nil {
		return nil, nil, [32]byte{}, err
	}
	b, err := model.Encode(st.Model, params)
	if err != nil {
		return nil, nil, [32]byte{}, err
	}
	return params, b, sha256.Sum256(b), nil
}

// finish records the study's end for late connections and StudyAdmin.
func (c *Coordinator) finish(res *study.Result, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	msg := &pb.StudyFinished{StudyId: c.cfg.Study.ID}
	if res != nil {
		msg.RoundsCompleted = uint64(c.status.Completed)
		if err == nil {
			msg.FinalModelSha256 = res.Model.Hash[:]
		}
	}
	if err != nil {
		msg.Failure = err.Error()
		c.status.Phase, c.status.Failure = study.PhaseFailed, err.Error()
	}
	c.finished = msg
}

// post hands a handler's event to the study goroutine and waits for the
// verdict, unless the study has stopped.
func (c *Coordinator) post(ev study.Event, wait bool) error {
	r := request{ev: ev}
	if wait {
		r.reply = make(chan error, 1)
	}
	select {
	case c.events <- r:
	case <-c.stopped:
		return study.ErrStudyOver
	}
	if !wait {
		return nil
	}
	select {
	case err := <-r.reply:
		return err
	case <-c.stopped:
		return study.ErrStudyOver
	}
}

func (c *Coordinator) keySetup() *secure.Setup {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.setup
}

func (c *Coordinator) statusSnapshot() study.Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.status
}
