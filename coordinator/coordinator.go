package coordinator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fedledger/fedledger/aggregation"
	pb "github.com/fedledger/fedledger/proto"
)

// maxMsg bounds every gRPC message: one chunk plus framing.
const maxMsg = 4 << 20

var errStudyOver = errors.New("coordinator: the study has finished")

// errInterrupted stops the coordinator without ending the study: a
// restarted coordinator resumes it from the audit log.
var errInterrupted = errors.New("coordinator: interrupted; the study resumes from the audit log on restart")

// Coordinator runs one study. Create it with New and run it with Run.
type Coordinator struct {
	cfg      Config
	log      *slog.Logger
	store    *Store                       // models
	cts      *Store                       // secure mode: contributions and aggregates, served to decryptors
	agg      Aggregator                   // plaintext mode
	opt      *aggregation.ServerOptimizer // secure mode
	recorder Recorder
	approved map[string]bool
	metrics  *metrics

	events  chan any
	stopped chan struct{} // closed when the study goroutine stops taking events

	mu       sync.Mutex
	sessions map[string]*session
	finished *pb.StudyFinished
	result   StudyResult
	keys     *keyState // secure mode, once key setup is done
	decrypt  *openDecryption
	status   *pb.StudyStatus
}

// Driver events posted by the gRPC handlers.
type (
	evJoined  struct{ s *session }
	evLeft    struct{ s *session }
	evRefusal struct {
		client string
		m      *pb.TaskRefusal
	}
	evEval struct {
		client string
		m      *pb.EvalReport
	}
	evUpdate struct {
		u     Update
		hdr   *pb.UpdateHeader
		reply chan error
	}
)

// New checks the configuration and opens the model store.
func New(cfg Config, logger *slog.Logger) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	store, err := OpenStore(filepath.Join(cfg.DataDir, "models"))
	if err != nil {
		return nil, err
	}
	cts, err := OpenStore(filepath.Join(cfg.DataDir, "ciphertexts"))
	if err != nil {
		return nil, err
	}
	agg := cfg.Aggregator
	var opt *aggregation.ServerOptimizer
	if cfg.Study.Secure() {
		if opt, err = aggregation.NewServerOptimizer(cfg.Study.Strategy); err != nil {
			return nil, err
		}
	} else if agg == nil {
		p, err := NewPlaintextAggregator(cfg.Study.Strategy)
		if err != nil {
			return nil, err
		}
		agg = p
	}
	c := &Coordinator{
		cfg: cfg, log: logger.With(slog.String("study", cfg.Study.ID)), store: store, cts: cts, agg: agg, opt: opt,
		approved: map[string]bool{}, events: make(chan any, 64), stopped: make(chan struct{}),
		sessions: map[string]*session{}, metrics: newMetrics(cfg.Study.ID),
		status: &pb.StudyStatus{StudyId: cfg.Study.ID, Mode: cfg.Study.Mode, Phase: PhaseWaiting, Rounds: uint32(cfg.Study.Rounds)},
	}
	for _, id := range cfg.Study.Clients {
		c.approved[id] = true
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

// Run serves the Federation API on lis and runs the study to its end (or
// until ctx is cancelled), then tells every client the study finished and
// stops the server.
func (c *Coordinator) Run(ctx context.Context, lis net.Listener) error {
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(c.cfg.TLS)),
		grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg),
	)
	pb.RegisterFederationServer(srv, &server{c: c})
	pb.RegisterStudyAdminServer(srv, &adminServer{c: c})
	hs := health.NewServer()
	hs.SetServingStatus(pb.Federation_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	// The initial model is stored and the study's start recorded (on the
	// audit log, if there is one) before any client is served, so a client
	// checking the log never finds the study missing.
	d, err := c.prepare(ctx)
	if err != nil {
		lis.Close()
		close(c.stopped)
		c.finish(err)
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(lis) }()

	err = c.runStudy(ctx, d)
	hs.SetServingStatus(pb.Federation_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_NOT_SERVING)
	close(c.stopped)
	if ctx.Err() != nil || errors.Is(err, errInterrupted) {
		// Shut down (SIGTERM, or the caller cancelled), or the audit log
		// could not record a round: not finished. The
		// hospitals are not told the study ended, only disconnected, so
		// they keep retrying and carry on with the restarted coordinator,
		// which resumes from the audit log.
		c.log.Warn("coordinator shutting down; the study is not finished and resumes from the audit log on restart")
		srv.Stop()
		<-serveErr
		return err
	}
	c.finish(err)

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

// driver is the study goroutine's state.
type driver struct {
	*Coordinator
	live    map[string]*session
	spec    model.Spec
	params  []float64
	parent  [32]byte
	size    uint64
	headers map[string]*pb.UpdateHeader
	final   map[string]model.Metrics
	// decrypting is set while a secure round collects decryption shares;
	// at any other time next() refuses them.
	decrypting bool
	// firstRound is the round the study starts (or resumes) at.
	firstRound uint64
	// awaitingStart is set while a manually started study waits for an
	// admin.
	awaitingStart bool
}

// prepare stores the initial model and records the study's start.
func (c *Coordinator) prepare(ctx context.Context) (*driver, error) {
	st := c.cfg.Study
	d := &driver{Coordinator: c, live: map[string]*session{}, spec: st.Model, final: map[string]model.Metrics{}}
	params, _, _, err := InitialModel(st)
	if err != nil {
		return nil, err
	}
	if err := d.publish(params); err != nil {
		return nil, err
	}
	res, err := c.recorder.StudyStarted(ctx, StudyStart{Study: st, InitialModel: d.parent})
	if err != nil {
		return nil, fmt.Errorf("coordinator: recording the study start: %w", err)
	}
	d.firstRound = 1
	if res.Round > 0 {
		if err := d.resume(res); err != nil {
			return nil, err
		}
		c.log.Warn("resuming after a restart", slog.Uint64("last_committed_round", res.Round), slog.String("model", hex.EncodeToString(d.parent[:8])))
	}
	return d, nil
}

func (c *Coordinator) runStudy(ctx context.Context, d *driver) error {
	st := c.cfg.Study
	c.log.Info("study ready", slog.String("initial_model", hex.EncodeToString(d.parent[:])), slog.Int("rounds", st.Rounds),
		slog.Int("min_clients", st.MinClients), slog.Any("clients", st.Clients), slog.String("strategy", st.Strategy.Name))

	ticker := time.NewTicker(c.cfg.TickInterval)
	defer ticker.Stop()
	// next waits for one event or tick and applies the bookkeeping every
	// phase shares; it returns the event for the phase to handle.
	next := func() (any, error) {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case now := <-ticker.C:
			return Tick{Now: now}, nil
		case ev := <-c.events:
			switch e := ev.(type) {
			case evJoined:
				d.live[e.s.client] = e.s
				c.metrics.connected.Set(float64(len(d.live)))
				c.setStatus(func(s *pb.StudyStatus) { s.Connected = sortedKeys(d.live) })
				c.log.Info("client connected", slog.String("client", e.s.client), slog.Int("connected", len(d.live)))
			case evLeft:
				if d.live[e.s.client] == e.s {
					delete(d.live, e.s.client)
					c.metrics.connected.Set(float64(len(d.live)))
					c.setStatus(func(s *pb.StudyStatus) { s.Connected = sortedKeys(d.live) })
					c.log.Warn("client disconnected", slog.String("client", e.s.client), slog.Int("connected", len(d.live)))
				}
			case evEval:
				if hex.EncodeToString(e.m.ModelSha256) == hex.EncodeToString(d.parent[:]) && e.m.Test != nil {
					d.final[e.client] = metricsFrom(e.m.Test)
				}
			case evStart:
				if !d.awaitingStart {
					e.reply <- fmt.Errorf("%w: study %q has already started", ErrRoundClosed, st.ID)
				}
			case evDecShare:
				if !d.decrypting {
					e.reply <- fmt.Errorf("%w: no decryption is open", ErrRoundClosed)
				}
			case evRefusal:
				c.metrics.refusals.Inc()
				c.log.Warn("client refused a task", slog.String("client", e.client), slog.Uint64("round", e.m.Round), slog.String("reason", e.m.Reason))
			}
			return ev, nil
		}
	}

	if st.ManualStart {
		c.setStatus(func(s *pb.StudyStatus) { s.Phase = PhaseCreated })
		c.log.Info("study created; waiting for an admin to start it (fedledger study start)")
		d.awaitingStart = true
		for d.awaitingStart {
			ev, err := next()
			if err != nil {
				return err
			}
			switch e := ev.(type) {
			case evStart:
				d.awaitingStart = false
				e.reply <- nil
				c.log.Info("study started", slog.String("by", e.by))
			case evUpdate:
				e.reply <- fmt.Errorf("%w: the study has not started", ErrRoundClosed)
			}
		}
		c.setStatus(func(s *pb.StudyStatus) { s.Phase = PhaseWaiting })
	}

	// Wait for the clients.
	startBy := time.Now().Add(st.StartTimeout)
	for len(d.live) < len(c.approved) {
		ev, err := next()
		if err != nil {
			return err
		}
		if u, ok := ev.(evUpdate); ok {
			u.reply <- fmt.Errorf("%w: no round is open yet", ErrRoundClosed)
		}
		if t, ok := ev.(Tick); ok && !t.Now.Before(startBy) {
			if len(d.live) >= st.MinClients {
				break
			}
			return fmt.Errorf("coordinator: start timeout: %d of the %d clients needed connected", len(d.live), st.MinClients)
		}
	}

	if st.Secure() {
		ks, err := d.loadKeys()
		switch {
		case err != nil:
			return err
		case ks == nil && d.firstRound > 1:
			return fmt.Errorf("%w: round %d is committed but this coordinator has no key state (%s)", ErrResume, d.firstRound-1, filepath.Join(c.stateDir(), "keys.json"))
		case ks == nil:
			c.setStatus(func(s *pb.StudyStatus) { s.Phase = PhaseKeySetup })
			if err := d.keySetup(next); err != nil {
				return err
			}
			if err := d.saveKeys(d.keys); err != nil {
				return err
			}
		default:
			d.mu.Lock()
			d.keys = ks
			d.mu.Unlock()
			c.log.Info("key setup already done; reusing its collective key", slog.String("collective_key", hex.EncodeToString(ks.pkHash[:8])))
		}
		if d.firstRound == 1 {
			ks := d.keys
			if err := c.recorder.KeySetupDone(ctx, KeySetup{Study: st.ID, HEPreset: ks.preset.ID, Threshold: st.Threshold,
				Participants: ks.order, CollectiveKey: ks.pkHash}); err != nil {
				return fmt.Errorf("coordinator: recording key setup: %w", err)
			}
		}
	}

	succeeded := 0
	for r := int(d.firstRound); r <= st.Rounds; r++ {
		rep, err := d.runRound(ctx, uint64(r), next)
		if err != nil {
			return err
		}
		if !rep.Failed {
			succeeded++
		}
		c.mu.Lock()
		c.result.Rounds = append(c.result.Rounds, rep)
		if rep.Failed {
			c.status.RoundsFailed++
		} else {
			c.status.RoundsCompleted++
			c.status.LastTrainLoss, c.status.LastParentTestAccuracy = rep.TrainLoss, meanAccuracy(rep.ParentTest)
		}
		c.status.LatestModelSha256 = rep.Model[:]
		c.mu.Unlock()
		// What is needed to resume after round r is on disk before the log
		// says round r happened.
		if err := d.saveRound(uint64(r)); err != nil {
			return err
		}
		if err := c.recorder.RecordRound(ctx, rep); err != nil {
			return fmt.Errorf("%w: recording round %d: %w", errInterrupted, r, err)
		}
		if c.cfg.OnRound != nil {
			c.cfg.OnRound(rep)
		}
	}
	if succeeded == 0 && d.firstRound == 1 {
		return fmt.Errorf("coordinator: all %d rounds failed", st.Rounds)
	}
	d.evaluateFinal(next)
	model, err := c.store.Get(d.parent)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.result.Study, c.result.Model, c.result.ModelBytes, c.result.FinalTest = st.ID, d.parent, model, d.final
	c.mu.Unlock()
	return nil
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

// publish stores params as the current global model.
func (d *driver) publish(params []float64) error {
	b, err := model.Encode(d.spec, params)
	if err != nil {
		return err
	}
	sum, err := d.store.Put(b)
	if err != nil {
		return err
	}
	d.params, d.parent, d.size = params, sum, uint64(len(b))
	return nil
}

func (d *driver) runRound(ctx context.Context, r uint64, next func() (any, error)) (RoundReport, error) {
	st := d.cfg.Study
	start := time.Now()
	deadline := start.Add(st.RoundDeadline)
	d.headers = map[string]*pb.UpdateHeader{}
	approved := st.Clients
	if d.keys != nil {
		approved = d.keys.order // only key holders can encrypt under the study key
	}
	round, acts := NewRound(RoundConfig{
		Study: st.ID, Round: r, Parent: d.parent, Approved: approved, MinClients: st.MinClients, Deadline: deadline,
	}, sortedKeys(d.live))
	log := d.log.With(slog.Uint64("round", r))
	d.setStatus(func(s *pb.StudyStatus) { s.Phase, s.Round, s.Reported = PhaseRoundOpen, r, nil })
	log.Info("round announced", slog.String("parent", hex.EncodeToString(d.parent[:8])), slog.Int("clients", len(d.live)))
	rep := RoundReport{Round: int(r), Model: d.parent, Parent: d.parent}
	for {
		for _, a := range acts {
			switch a := a.(type) {
			case SendTask:
				d.sendTask(a.Client, r, deadline)
			case Aggregate:
				rep = d.roundMetrics(a, rep)
				if d.keys != nil {
					return d.secureAggregate(ctx, round, a, rep, start, log, next)
				}
				return d.aggregate(ctx, round, a, rep, start, log)
			case Fail:
				return d.failRound(round, rep, a.Reason, start, log), nil
			}
		}
		ev, err := next()
		if err != nil {
			return rep, err
		}
		acts = nil
		switch e := ev.(type) {
		case Tick:
			acts, _ = round.Step(e)
		case evJoined:
			acts, _ = round.Step(Joined{Client: e.s.client})
		case evLeft:
			if _, still := d.live[e.s.client]; !still {
				acts, _ = round.Step(Left{Client: e.s.client})
			}
		case evRefusal:
			if e.m.StudyId == st.ID && e.m.Round == r {
				acts, _ = round.Step(Refused{Client: e.client, Reason: e.m.Reason})
			}
		case evUpdate:
			acts, err = round.Step(Received{Update: e.u})
			if err == nil {
				d.metrics.updates.WithLabelValues("accepted").Inc()
				d.metrics.updateBytes.Add(float64(len(e.u.Payload)))
				d.headers[e.u.Client] = e.hdr
				d.setStatus(func(s *pb.StudyStatus) { s.Reported = round.Contributors() })
				log.Info("update accepted", slog.String("client", e.u.Client), slog.Uint64("samples", e.u.Weight),
					slog.String("sha256", hex.EncodeToString(e.u.Hash[:8])))
			} else {
				d.metrics.updates.WithLabelValues("rejected").Inc()
				log.Warn("update rejected", slog.String("client", e.u.Client), slog.Any("err", err))
			}
			e.reply <- err
		}
	}
}

func (d *driver) sendTask(client string, r uint64, deadline time.Time) {
	s := d.live[client]
	if s == nil {
		return
	}
	s.push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Train{Train: &pb.TrainTask{
		StudyId: d.cfg.Study.ID, Round: r, ParentSha256: d.parent[:], ParentSize: d.size, DeadlineUnixNanos: deadline.UnixNano(),
	}}})
}

// failRound closes a round without a new model.
func (d *driver) failRound(round *Round, rep RoundReport, reason string, start time.Time, log *slog.Logger) RoundReport {
	rep.Failed, rep.Reason, rep.Duration, rep.Model = true, reason, time.Since(start), d.parent
	rep.Contributors, rep.Dropped = round.Contributors(), round.Missing()
	d.metrics.rounds.WithLabelValues("failed").Inc()
	d.metrics.roundSeconds.Observe(rep.Duration.Seconds())
	log.Error("round failed", slog.String("reason", reason))
	return rep
}

// roundMetrics fills in the contributions and the contributors'
// self-reported metrics.
func (d *driver) roundMetrics(a Aggregate, rep RoundReport) RoundReport {
	rep.ParentTest = map[string]model.Metrics{}
	for _, u := range a.Updates {
		h := d.headers[u.Client]
		ci := audit.Contribution{Site: u.Client, UpdateHash: u.Hash, Signature: h.GetSignature(), Samples: u.Weight}
		copy(ci.DataManifest[:], h.GetDataManifestSha256())
		rep.Contributions = append(rep.Contributions, ci)
	}
	var lossW, w float64
	for _, u := range a.Updates {
		if h := d.headers[u.Client]; h != nil {
			if h.ParentTest != nil {
				rep.ParentTest[u.Client] = metricsFrom(h.ParentTest)
			}
			if h.Train != nil {
				lossW += h.Train.Loss * float64(u.Weight)
				w += float64(u.Weight)
			}
		}
	}
	if w > 0 {
		rep.TrainLoss = lossW / w
	}
	return rep
}

// aggregate hands the accepted plaintext updates (in client-id order, so
// the result does not depend on arrival order) to the Aggregator.
func (d *driver) aggregate(ctx context.Context, round *Round, a Aggregate, rep RoundReport, start time.Time, log *slog.Logger) (RoundReport, error) {
	t0 := time.Now()
	next, err := d.agg.Aggregate(ctx, d.params, a.Updates)
	if err != nil {
		return rep, err
	}
	d.metrics.phaseSeconds.WithLabelValues("aggregate").Observe(time.Since(t0).Seconds())
	return d.finishAggregate(round, a, rep, next, start, log)
}

// finishAggregate publishes the round's new model and fills in the report.
func (d *driver) finishAggregate(round *Round, a Aggregate, rep RoundReport, next []float64, start time.Time, log *slog.Logger) (RoundReport, error) {
	if err := d.publish(next); err != nil {
		return rep, err
	}
	rep.Model, rep.Duration = d.parent, time.Since(start)
	rep.Contributors, rep.Dropped = round.Contributors(), round.Missing()
	d.metrics.rounds.WithLabelValues("aggregated").Inc()
	d.metrics.roundSeconds.Observe(rep.Duration.Seconds())
	log.Info("round aggregated", slog.Int("updates", len(a.Updates)), slog.Any("dropped", rep.Dropped), slog.Any("decryptors", rep.Decryptors),
		slog.String("model", hex.EncodeToString(d.parent[:8])), slog.Float64("train_loss", rep.TrainLoss), slog.Duration("took", rep.Duration))
	return rep, nil
}

// evaluateFinal asks every connected client to evaluate the final model on
// its test split and waits for their reports (bounded by FinalEvalTimeout).
func (d *driver) evaluateFinal(next func() (any, error)) {
	asked := sortedKeys(d.live)
	for _, id := range asked {
		d.live[id].push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Evaluate{Evaluate: &pb.EvaluateTask{
			StudyId: d.cfg.Study.ID, Round: uint64(d.cfg.Study.Rounds), ModelSha256: d.parent[:], ModelSize: d.size,
		}}})
	}
	until := time.Now().Add(d.cfg.FinalEvalTimeout)
	for len(d.final) < len(asked) && time.Now().Before(until) {
		ev, err := next()
		if err != nil {
			return
		}
		if u, ok := ev.(evUpdate); ok {
			u.reply <- fmt.Errorf("%w: all rounds are done", ErrRoundClosed)
		}
	}
	d.log.Info("final evaluation", slog.Int("reports", len(d.final)), slog.Int("asked", len(asked)))
}

// finish records the end of the study and tells every connected client.
func (c *Coordinator) finish(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.status.Phase = PhaseFinished
	if err != nil {
		c.status.Phase, c.status.Failure = PhaseFailed, err.Error()
	}
	msg := &pb.StudyFinished{StudyId: c.cfg.Study.ID, RoundsCompleted: uint64(len(c.result.Rounds))}
	if c.result.ModelBytes != nil {
		msg.FinalModelSha256 = c.result.Model[:]
	}
	if err != nil {
		msg.Failure = err.Error()
	}
	c.finished = msg
	for _, s := range c.sessions {
		s.push(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Finished{Finished: msg}})
	}
}

// post hands an event to the study goroutine, unless it has stopped.
func (c *Coordinator) post(ev any) bool {
	select {
	case c.events <- ev:
		return true
	case <-c.stopped:
		return false
	}
}

func metricsFrom(m *pb.Metrics) model.Metrics {
	return model.Metrics{Loss: m.Loss, Accuracy: m.Accuracy, AUC: m.Auc, N: int(m.N)}
}

// meanAccuracy is the sample-weighted mean of per-site accuracies.
func meanAccuracy(m map[string]model.Metrics) float64 {
	var acc, n float64
	for _, v := range m {
		acc += v.Accuracy * float64(v.N)
		n += float64(v.N)
	}
	if n == 0 {
		return 0
	}
	return acc / n
}
