package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// A node's replica state, as the fedledger_audit_replica_state gauge names
// it.
const (
	stateHealthy = "healthy"
	// stateRecovering: corruption was found at start; the damaged files are
	// in evidence/ and the node is catching up from the quorum, taking no
	// part in elections and serving no reads.
	stateRecovering = "recovering"
	// stateHalted: corruption was found while running; the node stopped
	// Raft and waits to be restarted (its next start recovers).
	stateHalted = "halted"
	// stateInconsistent: the quorum's history contradicts the checkpoint
	// this node cosigned; it stays out of elections and reads until an
	// operator looks.
	stateInconsistent = "inconsistent"
)

var replicaStates = []string{stateHealthy, stateRecovering, stateHalted, stateInconsistent}

const (
	evidenceDir    = "evidence"
	recoveryMarker = "recovering.json"
)

// recoveryState is data_dir/recovering.json, present from the moment a
// node decides to quarantine its state until it has caught up. It keeps
// the stable values read from the damaged store, so that a crash between
// moving raft.db away and writing them into the new one loses nothing,
// and it keeps a restarted node out of elections and away from bootstrap.
type recoveryState struct {
	Evidence     string    `json:"evidence"`
	Since        time.Time `json:"since"`
	CurrentTerm  *uint64   `json:"current_term,omitempty"`
	LastVoteTerm *uint64   `json:"last_vote_term,omitempty"`
	LastVoteCand []byte    `json:"last_vote_candidate,omitempty"`
}

// readRecoveryState returns the marker (nil when the node is not
// recovering). A damaged marker still means "recovering".
func (n *Node) readRecoveryState() *recoveryState {
	path := filepath.Join(n.cfg.DataDir, recoveryMarker)
	b, err := fsutil.ReadFileChecked(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	rs := &recoveryState{}
	if err == nil {
		err = json.Unmarshal(b, rs)
	}
	if err != nil {
		n.log.Error("recovery marker unreadable; recovering without the stable values it held", slog.String("file", path), slog.Any("err", err))
		return &recoveryState{}
	}
	return rs
}

// quarantine moves the damaged state (raft.db, snapshots/) into
// data_dir/evidence/<UTC time>/ beside a report.json of what failed, after
// writing the recovery marker. Nothing is deleted.
func (n *Node) quarantine(rep *stateReport) (*recoveryState, error) {
	now := time.Now().UTC()
	dir := filepath.Join(n.cfg.DataDir, evidenceDir, now.Format("20060102T150405.000000000Z"))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit node: evidence directory: %w", err)
	}
	rs := &recoveryState{Evidence: dir, Since: now, CurrentTerm: rep.CurrentTerm, LastVoteTerm: rep.LastVoteTerm, LastVoteCand: rep.LastVoteCand}
	b, _ := json.MarshalIndent(rs, "", "  ")
	if err := fsutil.WriteFileChecked(filepath.Join(n.cfg.DataDir, recoveryMarker), b, 0o600); err != nil {
		return nil, fmt.Errorf("audit node: recovery marker: %w", err)
	}
	report := struct {
		Node     string    `json:"node"`
		Time     time.Time `json:"time"`
		Moved    []string  `json:"moved"`
		Kept     string    `json:"stable_values"`
		Problems any       `json:"found"`
	}{Node: n.id, Time: now, Problems: rep}
	for _, name := range []string{raftFile, snapshotsDir} {
		err := os.Rename(filepath.Join(n.cfg.DataDir, name), filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("audit node: moving %s into %s: %w", name, dir, err)
		}
		report.Moved = append(report.Moved, name)
	}
	report.Kept = "current term and last vote preserved in the new raft.db"
	if rep.CurrentTerm == nil || (rep.LastVoteTerm == nil) != (rep.LastVoteCand == nil) {
		report.Kept = "UNREADABLE: the node restarts without its current term or last vote (see docs/DEPLOYMENT.md on the residual double-vote risk)"
	}
	b, _ = json.MarshalIndent(report, "", "  ")
	if err := fsutil.WriteFileAtomic(filepath.Join(dir, "report.json"), b, 0o600); err != nil {
		return nil, fmt.Errorf("audit node: evidence report: %w", err)
	}
	syncDir(n.cfg.DataDir)
	syncDir(dir)
	return rs, nil
}

func syncDir(path string) {
	if d, err := os.Open(path); err == nil {
		d.Sync()
		d.Close()
	}
}

// restoreStableValues writes the marker's stable values into the new
// store where it has none.
func restoreStableValues(store *sealedStore, rs *recoveryState) error {
	for key, v := range map[string]*uint64{string(keyCurrentTerm): rs.CurrentTerm, string(keyLastVoteTerm): rs.LastVoteTerm} {
		if _, err := store.GetUint64([]byte(key)); v == nil || !errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		if err := store.SetUint64([]byte(key), *v); err != nil {
			return err
		}
	}
	if _, err := store.Get(keyLastVoteCand); rs.LastVoteCand != nil && errors.Is(err, raftboltdb.ErrKeyNotFound) {
		return store.Set(keyLastVoteCand, rs.LastVoteCand)
	}
	return nil
}

// reportCorruption logs a failed integrity check at error level and
// counts it.
func (n *Node) reportCorruption(ce *CorruptionError) {
	n.metrics.corruption.WithLabelValues(ce.Check).Inc()
	attrs := []any{slog.String("check", ce.Check), slog.Any("err", ce.Err)}
	if ce.RaftIndex > 0 {
		attrs = append(attrs, slog.Uint64("raft_index", ce.RaftIndex))
	}
	if ce.LeafIndex >= 0 {
		attrs = append(attrs, slog.Int64("leaf_index", ce.LeafIndex))
	}
	n.log.Error("corruption detected", attrs...)
}

// corruptWhileRunning is the FSM's and the store's report of damage found
// after start: the node logs it and halts (Raft stops, reads are refused,
// Done is closed) rather than serve or replicate a damaged entry. Its next
// start finds the damage on disk and recovers from the quorum.
func (n *Node) corruptWhileRunning(ce *CorruptionError) {
	n.reportCorruption(ce)
	n.haltOnce.Do(func() {
		n.haltErr.Store(ce)
		n.setState(stateHalted)
		n.log.Error("replica halted: restart the node to recover it from the quorum", slog.Any("err", ce))
		close(n.done)
		go func() {
			// Not on Raft's own goroutine, which may be the one reporting.
			if r := n.raftHandle(); r != nil {
				r.Shutdown()
			}
		}()
	})
}

// Done is closed when the node halts on corruption found while running;
// Err then says what. A process should exit (non-zero) and be restarted.
func (n *Node) Done() <-chan struct{} { return n.done }

// Err is the corruption that halted the node, or nil.
func (n *Node) Err() error {
	if ce, _ := n.haltErr.Load().(*CorruptionError); ce != nil {
		return fmt.Errorf("audit node %s halted: %w", n.id, ce)
	}
	return nil
}

// Recovering reports whether the node is catching up from the quorum after
// detected corruption (no votes, no reads).
func (n *Node) Recovering() bool { return n.recovering.Load() }

// serving refuses a read served from this node's own replica while it is
// recovering or halted.
func (n *Node) serving() error {
	switch st := n.State(); st {
	case stateHealthy:
		return nil
	default:
		return status.Errorf(codes.Unavailable, "audit: node %s is %s (corruption detected; see its log), ask another node", n.id, st)
	}
}

// State names the node's replica state: healthy, recovering, halted or
// inconsistent.
func (n *Node) State() string {
	s, _ := n.state.Load().(string)
	return s
}

func (n *Node) setState(s string) {
	n.state.Store(s)
	for _, k := range replicaStates {
		v := 0.0
		if k == s {
			v = 1
		}
		n.metrics.state.WithLabelValues(k).Set(v)
	}
}

// recoverFromQuorum runs while the node recovers: it waits for the leader
// to reach it, asks the leader (through the Join RPC, which commits a
// configuration entry and so returns an index at or past every entry
// committed before this node restarted) how far it must catch up, waits
// until it has applied that far, checks the result against its witness
// memory and the leader's tree, and only then lifts the vote guard and
// starts serving.
func (n *Node) recoverFromQuorum(rs *recoveryState) {
	var lastLog time.Time
	progress := func(msg string, attrs ...any) {
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			n.log.Warn(msg, append(attrs, slog.String("evidence", rs.Evidence))...)
		}
	}
	for {
		select {
		case <-n.stop:
			return
		case <-time.After(50 * time.Millisecond):
		}
		addr, id := n.raft.LeaderWithID()
		if addr == "" {
			progress("recovering: waiting for the cluster's leader to reach this node (if this node was the only member, restore data_dir from a backup)")
			continue
		}
		target, st, err := n.recoveryTarget(string(addr))
		if err != nil {
			progress("recovering: cannot get the leader's log position yet", slog.String("leader", string(id)), slog.Any("err", err))
			continue
		}
		// Raft's AppliedIndex runs ahead of the FSM (which applies
		// asynchronously), so the tree's own size is waited for too: the
		// leader's, read before the Join, is the least it must reach.
		for n.raft.AppliedIndex() < target || n.fsm.Ledger().Log().Size() < st.TreeSize {
			progress("recovering: catching up from the leader", slog.Uint64("applied", n.raft.AppliedIndex()), slog.Uint64("target", target),
				slog.Int64("tree_size", n.fsm.Ledger().Log().Size()), slog.Int64("leader_tree_size", st.TreeSize))
			select {
			case <-n.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
		if err := n.checkRecovered(st); err != nil {
			ce := &CorruptionError{Check: "recovered tree", LeafIndex: -1, Err: err}
			n.reportCorruption(ce)
			n.setState(stateInconsistent)
			n.log.Error("the quorum's history contradicts this node's records; it stays out of elections and reads until an operator investigates", slog.Any("err", err))
			return
		}
		n.trans.blocking.Store(false)
		n.recovering.Store(false)
		if err := os.Remove(filepath.Join(n.cfg.DataDir, recoveryMarker)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			n.log.Error("recovered, but the recovery marker could not be removed", slog.Any("err", err))
		}
		syncDir(n.cfg.DataDir)
		n.setState(stateHealthy)
		size, root, _ := n.fsm.Ledger().Root()
		n.log.Info("recovered from the quorum", slog.Int64("tree_size", size), slog.String("root", root.String()),
			slog.Uint64("applied_index", n.raft.AppliedIndex()), slog.String("evidence", rs.Evidence))
		return
	}
}

// recoveryTarget asks the leader at addr whether this node is a member
// and, through a no-change Join with its current suffrage, for an index
// at or after every committed entry.
func (n *Node) recoveryTarget(addr string) (uint64, *pb.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	go func() {
		select {
		case <-n.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	cli, err := n.client(addr)
	if err != nil {
		return 0, nil, err
	}
	st, err := cli.Status(ctx, &pb.StatusRequest{})
	if err != nil {
		return 0, nil, err
	}
	var self *pb.Member
	for _, m := range st.Members {
		if m.Id == n.id {
			self = m
		}
	}
	if self == nil {
		return 0, nil, fmt.Errorf("node %s is not in the leader's configuration: an operator must add it again (join)", n.id)
	}
	r, err := cli.Join(ctx, &pb.JoinRequest{Id: n.id, Address: n.Addr(), Voter: self.Voter})
	if err != nil {
		return 0, nil, err
	}
	return r.CommitIndex, st, nil
}

// checkRecovered compares the recovered tree with the checkpoint this node
// last cosigned and with the leader's tree as its Status gave it.
func (n *Node) checkRecovered(leader *pb.StatusResponse) error {
	lg := n.fsm.Ledger()
	size := lg.Log().Size()
	n.witness.mu.Lock()
	last := n.witness.last
	n.witness.mu.Unlock()
	if last != nil && last.Size > 0 {
		if size < last.Size {
			return fmt.Errorf("recovered %d entries, fewer than the %d this node cosigned", size, last.Size)
		}
		if root, err := lg.Log().Root(last.Size); err != nil || root != last.Root {
			return fmt.Errorf("%w: the recovered root at size %d differs from the one this node cosigned", audit.ErrInconsistent, last.Size)
		}
	}
	if leader.TreeSize > size {
		return fmt.Errorf("recovered %d entries, the leader had %d before", size, leader.TreeSize)
	}
	if root, err := lg.Log().Root(leader.TreeSize); err != nil || string(root[:]) != string(leader.Root) {
		return fmt.Errorf("the recovered root at size %d differs from the leader's", leader.TreeSize)
	}
	return nil
}

// voteGuard is the node's Raft transport. While blocking (the node is
// recovering), it answers every vote and pre-vote request with a refusal
// before Raft sees it, and fails every vote request Raft sends. A node
// whose log was lost may have acknowledged entries it no longer holds;
// were it to vote (hashicorp/raft grants a vote to anyone with a log at
// least as long as its own, and an empty log is the shortest) or be
// elected before it holds them again, a leader without a committed entry
// could be elected and overwrite it. Heartbeats and appends pass through:
// that is how it catches up.
type voteGuard struct {
	*raft.NetworkTransport
	id       raft.ServerID
	blocking atomic.Bool
	refused  atomic.Int64 // vote and pre-vote requests refused
	rpcs     chan raft.RPC
	stop     chan struct{}
	once     sync.Once
}

var errNoVote = errors.New("audit: this node is recovering its log from the quorum and takes no part in elections")

func newVoteGuard(t *raft.NetworkTransport, id raft.ServerID, blocking bool) *voteGuard {
	g := &voteGuard{NetworkTransport: t, id: id, rpcs: make(chan raft.RPC), stop: make(chan struct{})}
	g.blocking.Store(blocking)
	go g.forward()
	return g
}

func (g *voteGuard) forward() {
	in := g.NetworkTransport.Consumer()
	for {
		select {
		case <-g.stop:
			return
		case rpc := <-in:
			if g.blocking.Load() && g.refuse(rpc) {
				continue
			}
			select {
			case g.rpcs <- rpc:
			case <-g.stop:
				return
			}
		}
	}
}

func (g *voteGuard) refuse(rpc raft.RPC) bool {
	header := raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(g.id), Addr: g.EncodePeer(g.id, g.LocalAddr())}
	switch req := rpc.Command.(type) {
	case *raft.RequestVoteRequest:
		rpc.Respond(&raft.RequestVoteResponse{RPCHeader: header, Term: req.Term}, nil)
	case *raft.RequestPreVoteRequest:
		rpc.Respond(&raft.RequestPreVoteResponse{RPCHeader: header, Term: req.Term}, nil)
	default:
		return false
	}
	g.refused.Add(1)
	return true
}

func (g *voteGuard) Consumer() <-chan raft.RPC { return g.rpcs }

func (g *voteGuard) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if g.blocking.Load() {
		return errNoVote
	}
	return g.NetworkTransport.RequestVote(id, target, args, resp)
}

func (g *voteGuard) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if g.blocking.Load() {
		return errNoVote
	}
	return g.NetworkTransport.RequestPreVote(id, target, args, resp)
}

func (g *voteGuard) Close() error {
	g.once.Do(func() { close(g.stop) })
	return g.NetworkTransport.Close()
}
