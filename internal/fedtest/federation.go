package fedtest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// Config describes a federation.
type Config struct {
	// Dir holds everything: certificates, audit stores, the coordinator's
	// and the clients' data directories.
	Dir string
	// Study is the study the coordinator runs; its Clients are the sites.
	Study coordinator.StudyConfig
	// Data gives each site its local data.
	Data func(site string) client.DataConfig
	// AuditNodes is the size of the audit cluster (0: no audit log; the
	// coordinator only logs its rounds and a secure study cannot run).
	AuditNodes int
	// Coordinator and Client adjust the configurations fedtest builds.
	Coordinator func(*coordinator.Config)
	Client      func(site string, cfg *client.Config)
	// Listener wraps the coordinator's listener (e.g. to count bytes).
	Listener func(net.Listener) net.Listener
	// Recorder, when set, wraps the recorder each coordinator is given
	// (the audit log's, or a LogRecorder without one): to watch or delay
	// what it records.
	Recorder func(coordinator.Recorder) coordinator.Recorder
	// Expires, when set, is the study record's expiry.
	Expires time.Time
	Logger  *slog.Logger
	// KeepLogs keeps the audit nodes' own log lines (noisy).
	KeepLogs bool
}

// Federation is a running federation.
type Federation struct {
	cfg   Config
	PKI   *PKI
	Audit *AuditCluster // nil without an audit log
	// Addr is the coordinator's address (stable across restarts).
	Addr string
	// StudyRecord is the admin-signed study record (with an audit log).
	StudyRecord []byte

	// studies counts the studies run after the first (NextStudy).
	studies int

	mu       sync.Mutex
	coord    *coordinator.Coordinator
	lastRes  coordinator.StudyResult
	coordCtx context.CancelFunc
	coordErr chan error
	clients  map[string]*runningClient
}

type runningClient struct {
	c      *client.Client
	cancel context.CancelFunc
	done   chan error
}

// Start starts the audit cluster (if any), records the study with the
// admin's signature, and starts the coordinator; clients start with
// StartClients or StartClient.
func Start(ctx context.Context, cfg Config) (*Federation, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pki, err := NewPKI(filepath.Join(cfg.Dir, "pki"), cfg.AuditNodes)
	if err != nil {
		return nil, err
	}
	f := &Federation{cfg: cfg, PKI: pki, clients: map[string]*runningClient{}}
	if cfg.AuditNodes > 0 {
		logger := slog.New(slog.DiscardHandler)
		if cfg.KeepLogs {
			logger = cfg.Logger
		}
		if f.Audit, err = StartAuditCluster(ctx, pki, filepath.Join(cfg.Dir, "audit"), AuditOptions{Fast: true, Logger: logger}); err != nil {
			return nil, err
		}
		_, _, initial, err := coordinator.InitialModel(cfg.Study)
		if err != nil {
			f.Close()
			return nil, err
		}
		env, err := audit.Sign(pki.Admin, coordinator.StudyRecord(cfg.Study, initial, pki.Admin.ID, cfg.Expires))
		if err != nil {
			f.Close()
			return nil, err
		}
		f.StudyRecord = env.Marshal()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Close()
		return nil, err
	}
	f.Addr = lis.Addr().String()
	if err := f.startCoordinator(lis); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (f *Federation) coordinatorConfig() coordinator.Config {
	cc := coordinator.DefaultConfig()
	cc.DataDir = filepath.Join(f.cfg.Dir, "coordinator")
	if f.studies > 0 {
		cc.DataDir = filepath.Join(f.cfg.Dir, "coordinator-"+f.cfg.Study.ID)
	}
	cc.TLS = tlsutil.ServerConfig(f.PKI.Coordinator, f.PKI.CA.Pool())
	cc.Study = f.cfg.Study
	cc.RetryMin, cc.RetryMax = 200*time.Millisecond, 2*time.Second
	if f.cfg.Coordinator != nil {
		f.cfg.Coordinator(&cc)
	}
	return cc
}

func (f *Federation) startCoordinator(lis net.Listener) error {
	cc := f.coordinatorConfig()
	logger := f.cfg.Logger.With(slog.String("component", "coordinator"))
	if f.Audit != nil {
		cli, err := f.Audit.Client(f.PKI.Coordinator)
		if err != nil {
			return err
		}
		cc.Recorder = &coordinator.AuditRecorder{Log: cli, Identity: f.PKI.Coordinator, StudyRecord: f.StudyRecord, Logger: logger}
	}
	if f.cfg.Recorder != nil {
		if cc.Recorder == nil {
			cc.Recorder = coordinator.LogRecorder{Logger: logger}
		}
		cc.Recorder = f.cfg.Recorder(cc.Recorder)
	}
	co, err := coordinator.New(cc, logger)
	if err != nil {
		return err
	}
	if f.cfg.Listener != nil {
		lis = f.cfg.Listener(lis)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- co.Run(ctx, lis) }()
	f.mu.Lock()
	f.coord, f.coordCtx, f.coordErr = co, cancel, done
	f.mu.Unlock()
	return nil
}

// Coordinator is the running coordinator.
func (f *Federation) Coordinator() *coordinator.Coordinator {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.coord
}

// RestartCoordinator stops the coordinator as a crash would (its context
// cancelled: nothing more is recorded, the hospitals only see the
// connection drop), then starts a new one on the same address and data
// directory, which resumes from the audit log.
func (f *Federation) RestartCoordinator(ctx context.Context) error {
	f.mu.Lock()
	cancel, done := f.coordCtx, f.coordErr
	f.mu.Unlock()
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, coordinator.ErrInterrupted) {
			return fmt.Errorf("fedtest: the coordinator stopped with %w", err)
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if lis, err = net.Listen("tcp", f.Addr); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("fedtest: listening again on %s: %w", f.Addr, err)
	}
	return f.startCoordinator(lis)
}

// NextStudy runs another study on the same federation once the current
// one has ended (Wait has returned): the admin signs st's study record, and
// a new coordinator for st starts on the same address, with a data
// directory of its own; start the clients and Wait as for the first. The
// audit log, certificates and the clients' data directories carry over.
func (f *Federation) NextStudy(ctx context.Context, st coordinator.StudyConfig) error {
	f.mu.Lock()
	done := f.coordErr
	f.mu.Unlock()
	select {
	case err := <-done:
		done <- err
	default:
		return errors.New("fedtest: the current study is still running")
	}
	f.cfg.Study = st
	f.studies++
	if f.Audit != nil {
		_, _, initial, err := coordinator.InitialModel(st)
		if err != nil {
			return err
		}
		env, err := audit.Sign(f.PKI.Admin, coordinator.StudyRecord(st, initial, f.PKI.Admin.ID, f.cfg.Expires))
		if err != nil {
			return err
		}
		f.StudyRecord = env.Marshal()
	}
	var lis net.Listener
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if lis, err = net.Listen("tcp", f.Addr); err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("fedtest: listening again on %s: %w", f.Addr, err)
	}
	return f.startCoordinator(lis)
}

// ClientConfig is the configuration StartClient gives site.
func (f *Federation) ClientConfig(site string) (client.Config, error) {
	id, err := f.PKI.Site(site)
	if err != nil {
		return client.Config{}, err
	}
	kc := client.DefaultConfig()
	kc.CoordinatorAddr = f.Addr
	kc.TLS = tlsutil.ClientConfig(id, f.PKI.CA.Pool(), "127.0.0.1")
	kc.Data = f.cfg.Data(site)
	kc.DataDir = filepath.Join(f.cfg.Dir, "clients")
	kc.AllowPlaintext = !f.cfg.Study.Secure()
	kc.MaxBackoff = time.Second
	if f.Audit != nil {
		kc.AuditNodes = f.Audit.Addrs
		// Each hospital accepts only studies the consortium admin signed.
		kc.Policy = client.Policy{Admins: []string{f.PKI.Admin.ID}}
	}
	if f.cfg.Client != nil {
		f.cfg.Client(site, &kc)
	}
	return kc, nil
}

// StartClients starts every approved site.
func (f *Federation) StartClients() error {
	for _, s := range f.cfg.Study.Clients {
		if _, err := f.StartClient(s, nil); err != nil {
			return err
		}
	}
	return nil
}

// StartClient starts site's client (stopping a running one first), with
// extra dial options (hooks).
func (f *Federation) StartClient(site string, opts []grpc.DialOption) (*client.Client, error) {
	f.StopClient(site)
	kc, err := f.ClientConfig(site)
	if err != nil {
		return nil, err
	}
	kc.DialOptions = append(kc.DialOptions, opts...)
	c, err := client.New(kc, f.cfg.Logger.With(slog.String("site", site)))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc := &runningClient{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { rc.done <- c.Run(ctx) }()
	f.mu.Lock()
	f.clients[site] = rc
	f.mu.Unlock()
	return c, nil
}

// Client is site's running client (nil if none).
func (f *Federation) Client(site string) *client.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if rc := f.clients[site]; rc != nil {
		return rc.c
	}
	return nil
}

// StopClient stops site's client, as a hospital going offline would.
func (f *Federation) StopClient(site string) {
	f.mu.Lock()
	rc := f.clients[site]
	delete(f.clients, site)
	f.mu.Unlock()
	if rc != nil {
		rc.cancel()
		<-rc.done
	}
}

// ClientErr waits for site's client to end (up to timeout) and returns why.
func (f *Federation) ClientErr(site string, timeout time.Duration) error {
	f.mu.Lock()
	rc := f.clients[site]
	f.mu.Unlock()
	if rc == nil {
		return fmt.Errorf("fedtest: no client %q", site)
	}
	select {
	case err := <-rc.done:
		rc.done <- err
		return err
	case <-time.After(timeout):
		return fmt.Errorf("fedtest: client %q still running after %v", site, timeout)
	}
}

// Wait waits for the study to end (up to timeout), gives the clients a
// moment to hear it and leave, stops them, and returns the result.
func (f *Federation) Wait(timeout time.Duration) (coordinator.StudyResult, error) {
	f.mu.Lock()
	co, done := f.coord, f.coordErr
	f.mu.Unlock()
	var err error
	select {
	case err = <-done:
		done <- err
	case <-time.After(timeout):
		return co.Result(), fmt.Errorf("fedtest: the study did not finish within %v", timeout)
	}
	f.stopClients(10 * time.Second)
	if err != nil {
		return co.Result(), fmt.Errorf("fedtest: coordinator: %w", err)
	}
	return co.Result(), nil
}

// stopClients waits for the clients to end on their own, then stops the
// rest.
func (f *Federation) stopClients(grace time.Duration) {
	f.mu.Lock()
	var all []*runningClient
	for _, rc := range f.clients {
		all = append(all, rc)
	}
	f.clients = map[string]*runningClient{}
	f.mu.Unlock()
	deadline := time.After(grace)
	for _, rc := range all {
		select {
		case err := <-rc.done:
			rc.done <- err
		case <-deadline:
			rc.cancel()
			<-rc.done
		}
	}
}

// Export is the audit log as the regulator exports it.
func (f *Federation) Export(ctx context.Context) (*audit.Bundle, error) {
	if f.Audit == nil {
		return nil, errors.New("fedtest: no audit log")
	}
	reg, err := f.Audit.Client(f.PKI.Regulator)
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return reg.Export(ctx, f.cfg.Study.ID, 1<<30)
}

// Verify is the regulator's check of a model: export the log and verify
// the model's lineage offline against the cluster's trust file.
func (f *Federation) Verify(ctx context.Context, model [32]byte) (*audit.Report, *audit.Bundle, error) {
	b, err := f.Export(ctx)
	if err != nil {
		return nil, nil, err
	}
	trust, err := f.Audit.Trust.Trust()
	if err != nil {
		return nil, nil, err
	}
	lin, err := audit.VerifyBundle(b, trust, f.cfg.Study.ID, audit.Hash(model))
	if err != nil {
		return nil, b, err
	}
	return audit.NewReport(lin, audit.Hash(model)), b, nil
}

// Dial opens a raw connection to the coordinator as id (mutual TLS), for
// tests that speak the protocol themselves.
func (f *Federation) Dial(id *tlsutil.Identity) (*grpc.ClientConn, error) {
	return grpc.NewClient(f.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsutil.ClientConfig(id, f.PKI.CA.Pool(), "127.0.0.1"))))
}

// Status is the study's StudyAdmin.Status, asked as the regulator (an
// observer).
func (f *Federation) Status(ctx context.Context) (*pb.StudyStatus, error) {
	conn, err := f.Dial(f.PKI.Regulator)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return pb.NewStudyAdminClient(conn).Status(ctx, &pb.StudyStatusRequest{})
}

// AuditClient dials the audit log as id.
func (f *Federation) AuditClient(id *tlsutil.Identity) (*cluster.Client, error) {
	if f.Audit == nil {
		return nil, errors.New("fedtest: no audit log")
	}
	return f.Audit.Client(id)
}

// Close stops everything (the stores stay under Dir).
func (f *Federation) Close() {
	f.stopClients(0)
	f.mu.Lock()
	cancel, done := f.coordCtx, f.coordErr
	f.mu.Unlock()
	if cancel != nil {
		cancel()
		select {
		case err := <-done:
			done <- err
		case <-time.After(10 * time.Second):
		}
	}
	if f.Audit != nil {
		f.Audit.Close()
	}
}

// Sites lists the study's approved sites, sorted.
func (f *Federation) Sites() []string {
	s := slices.Clone(f.cfg.Study.Clients)
	slices.Sort(s)
	return s
}
