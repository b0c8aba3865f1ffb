package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// Errors of a node.
var (
	// ErrNoLeader: no leader with a quorum answered in time; the append
	// was not acknowledged (it may still commit later, and a retry is
	// idempotent).
	ErrNoLeader = errors.New("audit: no leader with a quorum of nodes; nothing was acknowledged")
	ErrNotFound = errors.New("audit: no such entry")
)

// NodeConfig configures an audit node.
type NodeConfig struct {
	// Listen is the node's one TCP address (Raft and gRPC share it).
	Listen string
	// Advertise is the address other nodes dial (default: the listener's).
	Advertise string
	// DataDir holds raft.db (bbolt log and stable store, fsync on),
	// snapshots/ and witness.json.
	DataDir string
	// Identity is the node's audit-node certificate; its CommonName is the
	// Raft server id and the checkpoint key name.
	Identity *tlsutil.Identity
	// Roots is the consortium CA: peers, callers and record signers.
	Roots *x509.CertPool
	// Bootstrap makes this node the first voter of a new cluster (ignored
	// when it already has Raft state).
	Bootstrap bool
	// Origin is the checkpoint origin line, the log's name.
	Origin string
	// Quorum is how many node signatures a checkpoint needs (0: a majority
	// of the voters).
	Quorum int
	// ApplyTimeout bounds an append or a membership change.
	ApplyTimeout time.Duration
	// JoinTimeout bounds JoinCluster (0: 2 minutes), so a node whose join
	// address never answers fails instead of waiting forever.
	JoinTimeout time.Duration
	// Raft timing and compaction.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout time.Duration
	SnapshotInterval                                      time.Duration
	SnapshotThreshold, TrailingLogs                       uint64
	Logger                                                *slog.Logger
	// RaftLogLevel filters the Raft library's own log lines.
	RaftLogLevel slog.Level
	// AccessWindow is the window over which each caller's calls are
	// counted and compared with its own history (0: one minute).
	AccessWindow time.Duration
}

// DefaultNodeConfig returns defaults for everything but the addresses,
// data directory and identity.
func DefaultNodeConfig() NodeConfig {
	return NodeConfig{
		Origin: "fedledger/audit-log", ApplyTimeout: 10 * time.Second, JoinTimeout: defaultJoinTimeout,
		HeartbeatTimeout: time.Second, ElectionTimeout: time.Second, LeaderLeaseTimeout: 500 * time.Millisecond,
		SnapshotInterval: 2 * time.Minute, SnapshotThreshold: 8192, TrailingLogs: 10240, RaftLogLevel: slog.LevelWarn,
	}
}

// Validate checks the configuration.
func (c NodeConfig) Validate() error {
	var errs []error
	if c.Listen == "" || c.DataDir == "" {
		errs = append(errs, errors.New("audit node: listen address and data_dir are required"))
	}
	if c.Identity == nil || c.Roots == nil {
		errs = append(errs, errors.New("audit node: an identity and the consortium CA are required"))
	} else if c.Identity.Role != tlsutil.RoleAuditNode {
		errs = append(errs, fmt.Errorf("audit node: certificate %q has role %q, want %q", c.Identity.ID, c.Identity.Role, tlsutil.RoleAuditNode))
	}
	if c.Origin == "" || c.ApplyTimeout <= 0 || c.HeartbeatTimeout <= 0 || c.ElectionTimeout <= 0 || c.LeaderLeaseTimeout <= 0 {
		errs = append(errs, errors.New("audit node: origin and timeouts must be set"))
	}
	if c.JoinTimeout < 0 {
		errs = append(errs, fmt.Errorf("audit node: join timeout %v", c.JoinTimeout))
	}
	if c.Quorum < 0 {
		errs = append(errs, fmt.Errorf("audit node: quorum %d", c.Quorum))
	}
	return errors.Join(errs...)
}

// Node is one audit-log replica: a Raft member whose FSM is the Merkle log
// of signed records, a checkpoint signer and witness, and the AuditLog
// gRPC service, all on one mutual-TLS port.
type Node struct {
	cfg     NodeConfig
	id      string
	log     *slog.Logger
	fsm     *FSM
	raft    *raft.Raft
	store   *sealedStore
	trans   *voteGuard
	mux     *mux
	srv     *grpc.Server
	signer  note.Signer
	witness *witnessState
	access  *accessWatch

	metrics *nodeMetrics

	// Integrity: state is the replica state (stateHealthy, ...);
	// recovering is set while it catches up after quarantining damaged
	// state; haltErr and done report corruption found while running.
	state      atomic.Value
	recovering atomic.Bool
	raftPtr    atomic.Pointer[raft.Raft]
	haltOnce   sync.Once
	haltErr    atomic.Value
	done       chan struct{}
	stop       chan struct{}
	background sync.WaitGroup // the recovery loop

	connMu sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed sync.Once
}

// StartNode opens (or creates) the node's state and starts serving.
//
// Before Raft reads anything, it checks the stored state (checkState in
// scan.go: raft.db's pages and every entry's seal, the stable values, the
// snapshots, and the rebuilt tree against witness.json). If anything
// fails, it logs each failure at error level, counts it in
// fedledger_audit_corruption_detected_total, moves raft.db and snapshots/
// into data_dir/evidence/<time>/ with a report, and starts with an empty
// log, keeping its current term and last vote: it takes no part in
// elections and serves no reads until it has caught up from the quorum
// (see recoverFromQuorum). It refuses to start instead, leaving the files
// in place, when it is the configuration's only voter (there is no quorum
// to recover from), and it fails on a witness.json that does not verify.
func StartNode(cfg NodeConfig) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("audit node: data dir: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, id: cfg.Identity.ID, log: log.With(slog.String("node", cfg.Identity.ID)), fsm: NewFSM(cfg.Roots), conns: map[string]*grpc.ClientConn{},
		done: make(chan struct{}), stop: make(chan struct{})}
	var err error
	if n.signer, err = audit.NoteSigner(cfg.Identity); err != nil {
		return nil, err
	}
	if n.witness, err = openWitnessState(filepath.Join(cfg.DataDir, "witness.json")); err != nil {
		return nil, err
	}
	n.metrics = newNodeMetrics(n)
	window := cfg.AccessWindow
	if window <= 0 {
		window = time.Minute
	}
	n.access = newAccessWatch(window, 10, time.Now(), func(id string, calls int, reason string) {
		n.metrics.accessFlags.WithLabelValues(id).Inc()
		n.log.Warn("unusual access", slog.String("peer", id), slog.Int("calls", calls), slog.String("reason", reason))
	})
	n.fsm.onCorrupt = n.corruptWhileRunning
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("audit node: listen: %w", err)
	}
	advertise := lis.Addr()
	if cfg.Advertise != "" {
		if advertise, err = net.ResolveTCPAddr("tcp", cfg.Advertise); err != nil {
			lis.Close()
			return nil, fmt.Errorf("audit node: advertise address: %w", err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			n.Close()
			lis.Close()
		}
	}()
	hlog := raftLogger(n.log, cfg.RaftLogLevel)

	rs := n.readRecoveryState()
	rep, err := checkState(cfg.DataDir, cfg.Roots, n.witness.last, hlog.Named("check"))
	if err != nil {
		return nil, err
	}
	if len(rep.Problems) > 0 {
		for _, ce := range rep.Problems {
			n.reportCorruption(ce)
		}
		if rep.soleVoter(n.id) {
			return nil, fmt.Errorf("audit node: %w in %s, and this node is its cluster's only voter: there is no quorum to recover from; restore data_dir from a backup (the files were left in place): %w",
				ErrCorrupt, cfg.DataDir, errors.Join(errs(rep.Problems)...))
		}
		if rs, err = n.quarantine(rep); err != nil {
			return nil, err
		}
		n.log.Error("damaged state moved aside; recovering from the quorum (no votes, no reads until caught up)", slog.String("evidence", rs.Evidence),
			slog.Bool("stable_values_preserved", rep.CurrentTerm != nil))
	} else if rs != nil {
		n.log.Warn("still recovering from the quorum after an earlier restart", slog.String("evidence", rs.Evidence))
	}
	n.recovering.Store(rs != nil)

	refused := tlsutil.NewHandshakeLogger(n.log, func(reason string) { n.metrics.handshakes.WithLabelValues(reason).Inc() })
	n.mux = newMux(lis, tlsutil.ServerConfig(cfg.Identity, cfg.Roots), n.log, refused)
	go n.mux.serve()

	// raft-boltdb/v2 keeps the log and the stable store in one bbolt file,
	// fsynced on every write (NoSync is off); sealedStore seals each entry
	// and value.
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, raftFile), BoltOptions: &bbolt.Options{Timeout: storeLockWait}})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, errLocked
	} else if err != nil {
		return nil, fmt.Errorf("audit node: raft store: %w", err)
	}
	n.store = &sealedStore{bolt: bolt, onCorrupt: n.corruptWhileRunning}
	if rs != nil {
		if err := restoreStableValues(n.store, rs); err != nil {
			return nil, fmt.Errorf("audit node: restoring the current term and vote: %w", err)
		}
	}
	files, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog.Named("snapshots"))
	if err != nil {
		return nil, fmt.Errorf("audit node: snapshot store: %w", err)
	}
	snaps := sealedSnapshots{files}
	layer := &streamLayer{chanListener: n.mux.raft, advertise: advertise, client: tlsutil.ClientConfig(cfg.Identity, cfg.Roots, "")}
	n.trans = newVoteGuard(raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: layer, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog.Named("transport")}),
		raft.ServerID(n.id), rs != nil)

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.id)
	rc.Logger = hlog
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout
	rc.CommitTimeout = 20 * time.Millisecond
	rc.SnapshotInterval, rc.SnapshotThreshold, rc.TrailingLogs = cfg.SnapshotInterval, cfg.SnapshotThreshold, cfg.TrailingLogs
	// A recovering node never bootstraps: it had a cluster, and a new one
	// would fork the history.
	if cfg.Bootstrap && rs == nil {
		has, err := raft.HasExistingState(n.store, n.store, snaps)
		if err != nil {
			return nil, err
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr(), Suffrage: raft.Voter}}}
			if err := raft.BootstrapCluster(rc, n.store, n.store, snaps, n.trans, conf); err != nil {
				return nil, fmt.Errorf("audit node: bootstrap: %w", err)
			}
		}
	}
	n.setState(stateHealthy)
	if rs != nil {
		n.setState(stateRecovering)
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, n.store, n.store, snaps, n.trans); err != nil {
		return nil, fmt.Errorf("audit node: raft: %w", err)
	}
	n.raftPtr.Store(n.raft)
	if n.Err() != nil {
		// Damage found while NewRaft read the store: halt now.
		n.raft.Shutdown()
	}

	n.srv = grpc.NewServer(grpc.Creds(handshaken{}), grpc.MaxRecvMsgSize(4<<20), grpc.MaxSendMsgSize(4<<20))
	pb.RegisterAuditLogServer(n.srv, &auditServer{n: n})
	go n.srv.Serve(n.mux.grpc)
	ok = true
	if rs != nil {
		n.background.Go(func() { n.recoverFromQuorum(rs) })
	}
	n.log.Info("audit node started", slog.String("addr", advertise.String()), slog.Bool("bootstrap", cfg.Bootstrap), slog.String("state", n.State()))
	return n, nil
}

func errs(ces []*CorruptionError) []error {
	out := make([]error, len(ces))
	for i, ce := range ces {
		out[i] = ce
	}
	return out
}

func (n *Node) raftHandle() *raft.Raft { return n.raftPtr.Load() }

// ID is the node's Raft server id.
func (n *Node) ID() string { return n.id }

// Addr is the node's advertised address.
func (n *Node) Addr() string { return string(n.trans.LocalAddr()) }

// FSM exposes the node's replica (read-only use).
func (n *Node) FSM() *FSM { return n.fsm }

// Close stops the node: Raft first (so no half-applied entry), then the
// server and the store. The on-disk state is left for a restart.
func (n *Node) Close() error {
	var err error
	n.closed.Do(func() {
		close(n.stop)
		n.background.Wait()
		if n.raft != nil {
			err = n.raft.Shutdown().Error()
		}
		if n.srv != nil {
			n.srv.Stop()
		}
		if n.trans != nil {
			n.trans.Close()
		}
		if n.mux != nil {
			n.mux.close()
		}
		if n.store != nil {
			n.store.Close()
		}
		n.connMu.Lock()
		for _, c := range n.conns {
			c.Close()
		}
		n.connMu.Unlock()
	})
	return err
}

// Member reports whether this node is in the cluster configuration it
// knows (after bootstrap, a join, or a restart of a member).
func (n *Node) Member() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if string(s.ID) == n.id {
			return true
		}
	}
	return false
}

// IsLeader reports whether this node is the Raft leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Snapshot compacts the Raft log now (the FSM snapshot is the leaf list).
func (n *Node) Snapshot() error { return n.raft.Snapshot().Error() }

// AppendResult is where an appended record landed.
type AppendResult struct {
	Index    int64
	LeafHash tlog.Hash
	TreeSize int64
}

// leaderErr reports Raft errors that mean "try again on the new leader".
func leaderErr(err error) bool {
	return errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) ||
		errors.Is(err, raft.ErrLeadershipTransferInProgress) || errors.Is(err, raft.ErrAbortedByRestore) || errors.Is(err, raft.ErrRaftShutdown)
}

// onLeader runs local on the leader, or call against the leader's gRPC
// service from a follower, retrying through leader changes until ctx ends.
func (n *Node) onLeader(ctx context.Context, local func() error, call func(pb.AuditLogClient) error) error {
	var last error
	for {
		if n.raft.State() == raft.Leader {
			err := local()
			if err == nil || !leaderErr(err) {
				return err
			}
			last = err
		} else if !mayForward(ctx) {
			return status.Errorf(codes.Unavailable, "audit: %s is no longer the leader", n.id)
		} else if addr, _ := n.raft.LeaderWithID(); addr != "" && addr != n.trans.LocalAddr() {
			cli, err := n.client(string(addr))
			if err == nil {
				err = call(cli)
				if err == nil || !retryable(err) {
					return err
				}
			}
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return fmt.Errorf("%w (last error: %v)", ErrNoLeader, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Append commits one signed record envelope through Raft and returns where
// it is. A rule violation comes back as a *RuleError (or a decoding error)
// and nothing is appended.
func (n *Node) Append(ctx context.Context, env []byte) (res AppendResult, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	start := time.Now()
	defer func() {
		switch {
		case err == nil:
			n.metrics.appends.WithLabelValues("committed").Inc()
			n.metrics.appendSeconds.Observe(time.Since(start).Seconds())
		case errors.Is(err, ErrNoLeader) || status.Code(err) == codes.Unavailable:
			n.metrics.appends.WithLabelValues("unavailable").Inc()
		default:
			n.metrics.appends.WithLabelValues("rejected").Inc()
		}
	}()
	err = n.onLeader(ctx, func() error {
		if err := n.precheck(ctx, env); err != nil {
			return err
		}
		f := n.raft.Apply(frameCommand(env), n.cfg.ApplyTimeout)
		if err := f.Error(); err != nil {
			return err
		}
		r, ok := f.Response().(ApplyResult)
		if !ok {
			return fmt.Errorf("audit: unexpected apply response %T", f.Response())
		}
		if r.Err != nil {
			return r.Err
		}
		size, _, err := n.fsm.Ledger().Root()
		res = AppendResult{Index: r.Index, LeafHash: tlog.RecordHash(env), TreeSize: size}
		return err
	}, func(c pb.AuditLogClient) error {
		r, err := c.Append(forwarded(ctx), &pb.AppendRequest{Envelope: env})
		if err != nil {
			return err
		}
		res = AppendResult{Index: r.Index, TreeSize: r.TreeSize}
		copy(res.LeafHash[:], r.LeafHash)
		return nil
	})
	return res, err
}

// precheck runs the ledger's rules on env on the leader before it is
// proposed, so a record they refuse never enters the replicated log (the
// FSM still re-checks it when applying: two appends racing for the same
// round both pass here, and the second is refused on apply). A refusal
// that depends on the state (a *RuleError: sequence, parent, conflict) is
// confirmed once this leader's FSM has applied every entry of its log (a
// Barrier: raft's AppliedIndex runs ahead of the FSM, which applies
// asynchronously), since a newly elected leader's replica may lag its log
// by a few entries.
func (n *Node) precheck(ctx context.Context, env []byte) error {
	err := n.fsm.Ledger().Check(env)
	var re *audit.RuleError
	if err == nil || !errors.As(err, &re) {
		return err
	}
	timeout := n.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrEnqueueTimeout) {
			return fmt.Errorf("%w: this leader did not apply its log in time", ErrNoLeader)
		}
		return err
	}
	return n.fsm.Ledger().Check(env)
}

// current makes this (leader) node's reads linearizable: it confirms it is
// still the leader and that every committed entry is applied.
func (n *Node) current() error {
	if err := n.raft.VerifyLeader().Error(); err != nil {
		return err
	}
	return n.raft.Barrier(n.cfg.ApplyTimeout).Error()
}

// readCurrent answers a read that must be current: on the leader after
// VerifyLeader and a Barrier (local), or forwarded to it (remote).
func (n *Node) readCurrent(ctx context.Context, local func() error, remote func(context.Context, pb.AuditLogClient) error) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	return n.onLeader(ctx, func() error {
		if err := n.current(); err != nil {
			return err
		}
		return local()
	}, func(c pb.AuditLogClient) error { return remote(forwarded(ctx), c) })
}

// LatestOutput is the study's latest committed output model, read on the
// leader.
func (n *Node) LatestOutput(ctx context.Context, study string) (h audit.Hash, round uint64, err error) {
	err = n.readCurrent(ctx, func() (err error) {
		h, round, err = n.fsm.Ledger().LatestOutput(study)
		return err
	}, func(ctx context.Context, c pb.AuditLogClient) error {
		r, err := c.LatestOutput(ctx, &pb.LatestOutputRequest{StudyId: study})
		if err == nil {
			copy(h[:], r.ModelSha256)
			round = r.Round
		}
		return err
	})
	return h, round, err
}

// StudyRecord is the study's admin-signed study-created entry, read on the
// leader.
func (n *Node) StudyRecord(ctx context.Context, study string) (env []byte, idx int64, err error) {
	err = n.readCurrent(ctx, func() (err error) {
		env, idx, err = n.fsm.Ledger().StudyRecord(study)
		return err
	}, func(ctx context.Context, c pb.AuditLogClient) error {
		r, err := c.StudyRecord(ctx, &pb.LatestOutputRequest{StudyId: study})
		if err == nil {
			env, idx = r.Envelope, r.Index
		}
		return err
	})
	return env, idx, err
}

// Checkpoint returns the current tree head signed by this node (the
// leader) and cosigned by the other voters acting as witnesses; it fails
// unless at least Quorum nodes signed.
func (n *Node) Checkpoint(ctx context.Context) (signed []byte, signers []string, err error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	err = n.onLeader(ctx, func() error {
		signed, signers, err = n.checkpointLocal(ctx)
		return err
	}, func(c pb.AuditLogClient) error {
		r, err := c.Latest(forwarded(ctx), &pb.LatestRequest{})
		if err != nil {
			return err
		}
		signed, signers = r.Note, r.Signers
		return nil
	})
	return signed, signers, err
}

func (n *Node) checkpointLocal(ctx context.Context) ([]byte, []string, error) {
	if err := n.current(); err != nil {
		return nil, nil, err
	}
	size, root, err := n.fsm.Ledger().Root()
	if err != nil {
		return nil, nil, err
	}
	cp := audit.Checkpoint{Origin: n.cfg.Origin, Size: size, Root: root}
	own, err := audit.SignCheckpoint(cp, n.signer)
	if err != nil {
		return nil, nil, err
	}
	// This node witnesses its own checkpoint too, so its witness state
	// follows what it has signed.
	if _, err := n.cosign(own, n.signerPeer()); err != nil {
		return nil, nil, err
	}
	conf := n.raft.GetConfiguration()
	if err := conf.Error(); err != nil {
		return nil, nil, err
	}
	notes := [][]byte{own}
	voters := 0
	var refusals []error
	for _, s := range conf.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(s.ID) == n.id {
			continue
		}
		cli, err := n.client(string(s.Address))
		if err == nil {
			var r *pb.CosignResponse
			if r, err = cli.Cosign(ctx, &pb.CosignRequest{Note: own}); err == nil {
				notes = append(notes, r.Note)
				continue
			}
		}
		refusals = append(refusals, fmt.Errorf("%s: %w", s.ID, err))
	}
	merged, signers, err := audit.MergeCosignatures(notes)
	if err != nil {
		return nil, nil, err
	}
	quorum := n.cfg.Quorum
	if quorum == 0 {
		quorum = voters/2 + 1
	}
	n.metrics.checkpoints.WithLabelValues("signed").Inc()
	if len(signers) < quorum {
		return nil, signers, fmt.Errorf("%w: %d of %d signatures (%v)", audit.ErrQuorum, len(signers), quorum, errors.Join(refusals...))
	}
	return merged, signers, nil
}

func (n *Node) signerPeer() tlsutil.Peer {
	return tlsutil.Peer{ID: n.id, Role: tlsutil.RoleAuditNode, Cert: n.cfg.Identity.Cert}
}

// cosign acts as a witness for a checkpoint signed by from: the tree it
// describes must be this node's own replica at that size (waiting briefly
// for replication), and it must extend the last checkpoint this node
// cosigned. A validly signed checkpoint that fails either check is kept as
// evidence on disk and refused.
func (n *Node) cosign(signed []byte, from tlsutil.Peer) ([]byte, error) {
	v, err := audit.NoteVerifier(from)
	if err != nil {
		return nil, err
	}
	nt, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("audit: witness: checkpoint not signed by %s: %w", from.ID, err)
	}
	cp, err := audit.ParseCheckpoint(nt.Text)
	if err != nil {
		return nil, err
	}
	if cp.Origin != n.cfg.Origin {
		return nil, fmt.Errorf("%w: origin %q, this log is %q", audit.ErrBadCheckpoint, cp.Origin, n.cfg.Origin)
	}
	lg, err := n.waitReplica(cp.Size, 5*time.Second)
	if err != nil {
		return nil, err
	}
	n.witness.mu.Lock()
	defer n.witness.mu.Unlock()
	mine, err := lg.Log().Root(cp.Size)
	if err != nil {
		return nil, err
	}
	if mine != cp.Root {
		n.metrics.checkpoints.WithLabelValues("refused").Inc()
		n.witness.evidence = append(n.witness.evidence, signed)
		n.witness.save()
		return nil, fmt.Errorf("%w: root at size %d differs from this replica's", audit.ErrInconsistent, cp.Size)
	}
	var proof tlog.TreeProof
	if last := n.witness.last; last != nil && last.Size > 0 && last.Size < cp.Size {
		if proof, err = lg.Log().ProveConsistency(last.Size, cp.Size); err != nil {
			return nil, err
		}
	}
	w := audit.RestoreWitness(n.signer, note.VerifierList(v), n.witness.last, nil)
	out, err := w.Cosign(signed, proof)
	if errors.Is(err, audit.ErrInconsistent) {
		n.witness.evidence = append(n.witness.evidence, signed)
		n.witness.save()
	}
	if err != nil {
		return nil, err
	}
	last, _ := w.Last()
	n.witness.last = &last
	n.metrics.checkpoints.WithLabelValues("cosigned").Inc()
	if err := n.witness.save(); err != nil {
		return nil, err
	}
	return out, nil
}

// waitReplica waits until this node's replica holds at least size entries
// (a follower may lag the leader's checkpoint by a few milliseconds).
func (n *Node) waitReplica(size int64, timeout time.Duration) (*audit.Ledger, error) {
	lg := n.fsm.Ledger()
	for deadline := time.Now().Add(timeout); lg.Log().Size() < size; lg = n.fsm.Ledger() {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("audit: node %s has %d entries, the checkpoint claims %d", n.id, lg.Log().Size(), size)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return lg, nil
}

// Export returns an offline bundle: a cosigned checkpoint and every entry
// up to it.
func (n *Node) Export(ctx context.Context) (*audit.Bundle, error) {
	signed, _, err := n.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	cp, err := audit.PeekCheckpoint(signed)
	if err != nil {
		return nil, err
	}
	lg, err := n.waitReplica(cp.Size, n.cfg.ApplyTimeout)
	if err != nil {
		return nil, err
	}
	b := &audit.Bundle{Checkpoint: signed}
	for i := int64(0); i < cp.Size; i++ {
		leaf, err := lg.Log().Leaf(i)
		if err != nil {
			return nil, err
		}
		b.Leaves = append(b.Leaves, leaf)
	}
	return b, nil
}

// Join adds a node (leader only; forwarded from followers): as a
// non-voter, or with voter set, as (or promoted to) a voter. It returns
// the commit index the new node should reach before asking for a vote.
func (n *Node) Join(ctx context.Context, id, addr string, voter bool) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	var idx uint64
	err := n.onLeader(ctx, func() error {
		var f raft.IndexFuture
		if voter {
			f = n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout)
		} else {
			f = n.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, n.cfg.ApplyTimeout)
		}
		if err := f.Error(); err != nil {
			return err
		}
		// The configuration entry is committed in this leader's term, so
		// its index is at or past every entry committed before it.
		idx = max(f.Index(), n.raft.AppliedIndex())
		n.log.Info("member joined", slog.String("id", id), slog.String("addr", addr), slog.Bool("voter", voter))
		return nil
	}, func(c pb.AuditLogClient) error {
		r, err := c.Join(forwarded(ctx), &pb.JoinRequest{Id: id, Address: addr, Voter: voter})
		if err == nil {
			idx = r.CommitIndex
		}
		return err
	})
	return idx, err
}

const defaultJoinTimeout = 2 * time.Minute

// JoinCluster makes this (new, unbootstrapped) node a member through any
// existing member: it joins as a non-voter, waits until it has applied the
// log up to the join point, and then asks to become a voter. It retries
// while the member is unreachable or has no leader, logging progress, and
// gives up after NodeConfig.JoinTimeout (or when ctx ends) with an error
// naming the address and the last error.
func (n *Node) JoinCluster(ctx context.Context, via string) error {
	timeout := n.cfg.JoinTimeout
	if timeout <= 0 {
		timeout = defaultJoinTimeout
	}
	start := time.Now() // before the deadline is set: "no answer in" is never short of the timeout
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fail := func(step string, err error) error {
		return fmt.Errorf("audit: could not join the cluster via %s: %s: %w", via, step, err)
	}
	cli, err := n.client(via)
	if err != nil {
		return fail("address", err)
	}
	// The member may be down, still starting or electing a leader: retry
	// while it is unavailable, each call bounded, so a member that accepts
	// connections and never answers cannot hold the join.
	var r *pb.JoinResponse
	lastLog := start
	for attempt := 1; ; attempt++ {
		call, cancelCall := context.WithTimeout(ctx, min(5*time.Second, timeout))
		r, err = cli.Join(call, &pb.JoinRequest{Id: n.id, Address: n.Addr()})
		cancelCall()
		if err == nil {
			break
		}
		if code := status.Code(err); code != codes.Unavailable && code != codes.DeadlineExceeded {
			return fail("refused", err)
		}
		if time.Since(lastLog) >= min(10*time.Second, timeout/4) {
			lastLog = time.Now()
			n.log.Warn("joining: no answer yet, retrying", slog.String("via", via), slog.Int("attempts", attempt),
				slog.Duration("elapsed", time.Since(start).Round(time.Second)), slog.Duration("gives_up_after", timeout), slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return fail(fmt.Sprintf("no answer in %v (%d attempts); last error", time.Since(start).Round(time.Millisecond), attempt), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	for n.raft.AppliedIndex() < r.CommitIndex {
		select {
		case <-ctx.Done():
			return fail(fmt.Sprintf("catching up to index %d before voting, at %d", r.CommitIndex, n.raft.AppliedIndex()), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if _, err := cli.Join(ctx, &pb.JoinRequest{Id: n.id, Address: n.Addr(), Voter: true}); err != nil {
		return fail("promotion to voter", err)
	}
	return nil
}

// Remove takes a member out of the cluster (leader only; forwarded).
func (n *Node) Remove(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	return n.onLeader(ctx, func() error {
		return n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error()
	}, func(c pb.AuditLogClient) error {
		_, err := c.Remove(forwarded(ctx), &pb.RemoveRequest{Id: id})
		return err
	})
}

// Status describes the node's view of the cluster.
func (n *Node) Status() *pb.StatusResponse {
	size, root, _ := n.fsm.Ledger().Root()
	addr, id := n.raft.LeaderWithID()
	st := &pb.StatusResponse{Id: n.id, State: n.raft.State().String(), LeaderId: string(id), LeaderAddress: string(addr),
		TreeSize: size, Root: root[:], AppliedIndex: n.raft.AppliedIndex()}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, s := range f.Configuration().Servers {
			st.Members = append(st.Members, &pb.Member{Id: string(s.ID), Address: string(s.Address), Voter: s.Suffrage == raft.Voter})
		}
	}
	slices.SortFunc(st.Members, func(a, b *pb.Member) int { return cmpString(a.Id, b.Id) })
	return st
}

// client returns a cached gRPC connection to another node.
func (n *Node) client(addr string) (pb.AuditLogClient, error) {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	if c, ok := n.conns[addr]; ok {
		return pb.NewAuditLogClient(c), nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsutil.ClientConfig(n.cfg.Identity, n.cfg.Roots, host))))
	if err != nil {
		return nil, err
	}
	n.conns[addr] = c
	return pb.NewAuditLogClient(c), nil
}

// Evidence returns the inconsistent checkpoints this node refused.
func (n *Node) Evidence() [][]byte {
	n.witness.mu.Lock()
	defer n.witness.mu.Unlock()
	return slices.Clone(n.witness.evidence)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
