package cluster

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/logtest"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// firstCommand returns the raft index of the first command entry in dir's
// raft.db.
func firstCommand(t *testing.T, dir string) uint64 {
	t.Helper()
	var idx uint64
	rawStore(t, dir, func(b *raftboltdb.BoltStore) {
		last, _ := b.LastIndex()
		for i := uint64(1); i <= last && idx == 0; i++ {
			var l raft.Log
			if b.GetLog(i, &l) == nil && l.Type == raft.LogCommand {
				idx = i
			}
		}
	})
	if idx == 0 {
		t.Fatal("no command entry")
	}
	return idx
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
	}
}

// TestCorruptFollowerRecoversFromTheQuorum: a follower restarts with one
// byte of a record changed in its raft.db while the leader is down. It
// reports the damage (error log naming the raft index, counter), moves
// raft.db into evidence/ and starts empty, and while it recovers it
// refuses the remaining node's vote requests (with an empty log it would
// otherwise grant them, and that node alone must not become leader), and
// refuses local reads. Once the old leader is back, it catches up, ends
// with the peers' tree, and serves again.
func TestCorruptFollowerRecoversFromTheQuorum(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.studyWithRounds(5)
	lead := c.leader()
	f, other := (lead+1)%3, (lead+2)%3
	c.stop(lead)
	c.stop(f)
	idx := firstCommand(t, c.dirs[f])
	editLog(t, c.dirs[f], idx, func(l *raft.Log) { l.Data[len(l.Data)-1] ^= 1 })
	damaged, _ := os.ReadFile(filepath.Join(c.dirs[f], raftFile))

	logs := &logtest.Buffer{}
	c.tweak = func(cfg *NodeConfig) {
		if cfg.Identity.ID == c.ids[f].ID {
			cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
		}
	}
	c.start(f, false)
	n := c.nodes[f]
	lines := logs.Find("corruption detected")
	if len(lines) != 1 || lines[0]["level"] != "ERROR" || lines[0]["check"] != "log entry" || lines[0]["raft_index"] != float64(idx) {
		t.Fatalf("corruption log lines %v, want one error naming raft index %d", lines, idx)
	}
	if got := corruptionCounts(t, n); got["log entry"] != 1 {
		t.Fatalf("corruption counter %v", got)
	}
	ev, _ := filepath.Glob(filepath.Join(c.dirs[f], evidenceDir, "*"))
	if len(ev) != 1 {
		t.Fatalf("evidence directories %v", ev)
	}
	if b, _ := os.ReadFile(filepath.Join(ev[0], raftFile)); !bytes.Equal(b, damaged) {
		t.Fatal("evidence/raft.db is not the damaged file as it was")
	}
	report, _ := os.ReadFile(filepath.Join(ev[0], "report.json"))
	if !strings.Contains(string(report), "preserved") || !strings.Contains(string(report), "raft index") {
		t.Fatalf("report.json: %s", report)
	}

	// Recovering, with the leader down: the other node campaigns, this one
	// refuses, and no leader is elected.
	if !n.Recovering() || n.State() != stateRecovering {
		t.Fatalf("state %s, recovering %v", n.State(), n.Recovering())
	}
	waitUntil(t, "the recovering node refused a vote request", func() bool { return n.trans.refused.Load() > 0 })
	for _, i := range []int{f, other} {
		if c.nodes[i].IsLeader() {
			t.Fatalf("node %d became leader while the recovering node refuses to vote", i)
		}
	}
	cli, err := Dial([]string{c.addrs[f]}, tlsutil.ClientConfig(audittest.Issue(t, c.CA, "regulator", tlsutil.RoleObserver), c.CA.Pool(), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := cli.apis[0].Get(ctx, &pb.GetRequest{Index: 0}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "recovering") {
		t.Fatalf("local read while recovering: %v", err)
	}

	c.start(lead, false)
	if err := c.convergedWith(f, lead, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "recovery finished", func() bool { return n.State() == stateHealthy && !n.Recovering() })
	// The node turns healthy just before it logs the recovery.
	waitUntil(t, "the recovery logged", func() bool { return len(logs.Find("recovered from the quorum")) > 0 })
	if len(logs.Find("recovered from the quorum")) != 1 {
		t.Fatal("no 'recovered from the quorum' log line")
	}
	if _, err := os.Stat(filepath.Join(c.dirs[f], recoveryMarker)); !os.IsNotExist(err) {
		t.Fatalf("recovery marker left: %v", err)
	}
	if e, err := cli.apis[0].Get(ctx, &pb.GetRequest{Index: 0}); err != nil || len(e.Envelope) == 0 {
		t.Fatalf("read after recovery: %v", err)
	}
	if v := metricValue(t, n, "fedledger_audit_replica_state", "state", stateHealthy); v != 1 {
		t.Fatalf("replica state gauge healthy = %v", v)
	}
	if v := metricValue(t, n, "fedledger_audit_corruption_evidence", "", ""); v != 1 {
		t.Fatalf("evidence gauge = %v", v)
	}
	// A restart after recovery finds nothing wrong.
	c.stop(f)
	c.start(f, false)
	if got := corruptionCounts(t, c.nodes[f]); len(got) != 0 || c.nodes[f].State() != stateHealthy {
		t.Fatalf("restart after recovery: %v, %s", got, c.nodes[f].State())
	}
}

// TestSoleVoterRefusesToStartOnCorruption: with no quorum to recover from,
// a damaged single node does not start and leaves its files where they
// are.
func TestSoleVoterRefusesToStartOnCorruption(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.studyWithRounds(2)
	c.stop(0)
	editLog(t, c.dirs[0], firstCommand(t, c.dirs[0]), func(l *raft.Log) { l.Data[50] ^= 1 })
	damaged, _ := os.ReadFile(filepath.Join(c.dirs[0], raftFile))
	cfg := DefaultNodeConfig()
	cfg.Listen, cfg.DataDir, cfg.Identity, cfg.Roots, cfg.Bootstrap = c.addrs[0], c.dirs[0], c.ids[0], c.CA.Pool(), true
	n, err := StartNode(cfg)
	if err == nil {
		n.Close()
		t.Fatal("a damaged sole voter started")
	}
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "only voter") || !strings.Contains(err.Error(), "raft index") {
		t.Fatalf("error %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(c.dirs[0], raftFile)); !bytes.Equal(b, damaged) {
		t.Fatal("raft.db was moved or changed")
	}
	if _, err := os.Stat(filepath.Join(c.dirs[0], evidenceDir)); !os.IsNotExist(err) {
		t.Fatalf("evidence directory created: %v", err)
	}
}

// TestCorruptWitnessFileIsAStartupError: witness.json is the node's memory
// of what it cosigned; a damaged one stops the start with its name, and is
// not reset.
func TestCorruptWitnessFileIsAStartupError(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.studyWithRounds(1)
	c.stop(1)
	path := filepath.Join(c.dirs[1], "witness.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-3] ^= 1
	os.WriteFile(path, b, 0o600)
	cfg := DefaultNodeConfig()
	cfg.Listen, cfg.DataDir, cfg.Identity, cfg.Roots = c.addrs[1], c.dirs[1], c.ids[1], c.CA.Pool()
	n, err := StartNode(cfg)
	if err == nil {
		n.Close()
		t.Fatal("started with a damaged witness.json")
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("error %v, want it to name %s", err, path)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, b) {
		t.Fatal("witness.json was rewritten")
	}
}

// TestBadFrameWhileRunningHaltsTheNodes: an entry whose frame does not
// verify reaches the FSMs (here proposed unframed, behind Append's back).
// The leader reports it, halts instead of skipping it, closes Done and
// refuses reads; no follower applies anything past it without halting too
// (a follower may halt, or may never learn the entry was committed, since
// the leader stopped).
func TestBadFrameWhileRunningHaltsTheNodes(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.studyWithRounds(1)
	lead := c.leader()
	raw := audittest.Must(c.L.Log().Leaf(0))
	f := c.nodes[lead].raft.Apply(raw, 5*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	res := f.Response().(ApplyResult)
	var ce *CorruptionError
	if !errors.As(res.Err, &ce) || ce.Check != "frame" || ce.RaftIndex != f.Index() || ce.LeafIndex != 2 {
		t.Fatalf("apply result %+v", res)
	}
	n := c.nodes[lead]
	select {
	case <-n.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the leader did not halt")
	}
	if err := n.Err(); !errors.Is(err, ErrCorrupt) || n.State() != stateHalted {
		t.Fatalf("leader: %v, state %s", err, n.State())
	}
	if err := n.serving(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the leader serves reads while halted: %v", err)
	}
	if got := corruptionCounts(t, n); got["frame"] != 1 {
		t.Fatalf("leader counted %v", got)
	}
	for i, n := range c.nodes {
		if n.Err() == nil && (n.FSM().Ledger().Log().Size() != 2 || n.raft.AppliedIndex() >= f.Index()) {
			t.Fatalf("node %d applied past the bad entry without halting", i)
		}
	}
}

// TestJoinGivesUpOnASilentAddress: a node told to join through an address
// where nothing listens, or where a listener accepts and never answers,
// logs that it is retrying and then fails with the address and the last
// error, within its join timeout (plus one bounded call).
func TestJoinGivesUpOnASilentAddress(t *testing.T) {
	c := newCluster(t, 1, nil)
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			conn, err := silent.Accept()
			if err != nil {
				return
			}
			defer conn.Close() // held open, never answered
		}
	}()
	id := audittest.Issue(t, c.CA, "audit-9", tlsutil.RoleAuditNode)
	for name, addr := range map[string]string{"nobody listens": freePort(t), "never answers": silent.Addr().String()} {
		t.Run(name, func(t *testing.T) {
			logs := &logtest.Buffer{}
			cfg := DefaultNodeConfig()
			cfg.Listen, cfg.DataDir, cfg.Identity, cfg.Roots = freePort(t), t.TempDir(), id, c.CA.Pool()
			cfg.JoinTimeout, cfg.Logger = 2*time.Second, slog.New(slog.NewJSONHandler(logs, nil))
			n, err := StartNode(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			start := time.Now()
			err = n.JoinCluster(context.Background(), addr)
			took := time.Since(start)
			if err == nil || !strings.Contains(err.Error(), "could not join the cluster via "+addr) || !strings.Contains(err.Error(), "last error") {
				t.Fatalf("join error %v, want one naming %s and the last error", err, addr)
			}
			if took > 30*time.Second {
				t.Fatalf("join gave up after %v, its timeout is %v", took, cfg.JoinTimeout)
			}
			if len(logs.Find("joining: no answer yet, retrying")) == 0 {
				t.Fatal("no progress logged while retrying")
			}
			t.Logf("%s: gave up after %v: %v", name, took.Round(time.Millisecond), err)
		})
	}
}
