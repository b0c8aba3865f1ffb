package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// testCluster is a set of real audit nodes on loopback: TCP, mutual TLS,
// bbolt stores with fsync, file snapshots.
type testCluster struct {
	t testing.TB
	*audittest.Fixture
	ids   []*tlsutil.Identity
	addrs []string
	dirs  []string
	nodes []*Node
	tweak func(*NodeConfig)
	// started: the node has run once, so the others may know its address.
	started []bool
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func newCluster(t testing.TB, n int, tweak func(*NodeConfig)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, Fixture: audittest.NewFixture(t), tweak: tweak}
	for i := 0; i < n; i++ {
		id, err := c.CA.Issue(fmt.Sprintf("audit-%d", i), tlsutil.RoleAuditNode, []string{"127.0.0.1"}, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c.ids, c.addrs, c.dirs = append(c.ids, id), append(c.addrs, freePort(t)), append(c.dirs, t.TempDir())
		c.nodes, c.started = append(c.nodes, nil), append(c.started, false)
	}
	c.start(0, true)
	c.leader()
	for i := 1; i < n; i++ {
		c.start(i, false)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := c.nodes[i].JoinCluster(ctx, c.addrs[0]); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	t.Cleanup(func() {
		for i := range c.nodes {
			c.stop(i)
		}
	})
	return c
}

func (c *testCluster) start(i int, bootstrap bool) {
	c.t.Helper()
	cfg := DefaultNodeConfig()
	cfg.Listen, cfg.DataDir, cfg.Identity, cfg.Roots, cfg.Bootstrap = c.addrs[i], c.dirs[i], c.ids[i], c.CA.Pool(), bootstrap
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	cfg.ApplyTimeout = 5 * time.Second
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	n, err := StartNode(cfg)
	for try := 0; err != nil && !c.started[i] && errors.Is(err, syscall.EADDRINUSE) && try < 3; try++ {
		// Another process took the port freePort saw free. No one knows
		// a node's address before its first start: take another.
		c.addrs[i] = freePort(c.t)
		cfg.Listen = c.addrs[i]
		n, err = StartNode(cfg)
	}
	if err != nil {
		c.t.Fatalf("start node %d: %v", i, err)
	}
	c.nodes[i], c.started[i] = n, true
}

func (c *testCluster) stop(i int) {
	if c.nodes[i] != nil {
		c.nodes[i].Close()
		c.nodes[i] = nil
	}
}

// leader waits for a leader among the running nodes and returns its index.
func (c *testCluster) leader() int {
	c.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for i, n := range c.nodes {
			if n != nil && n.IsLeader() {
				return i
			}
		}
	}
	c.t.Fatal("no leader elected")
	return -1
}

// converged waits until every running node has the same tree and returns
// its size.
func (c *testCluster) converged() int64 {
	c.t.Helper()
	var sizes []string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		sizes = sizes[:0]
		seen := map[string]bool{}
		var size int64
		for _, n := range c.nodes {
			if n == nil {
				continue
			}
			s, root, _ := n.FSM().Ledger().Root()
			seen[fmt.Sprint(s, root)] = true
			sizes = append(sizes, fmt.Sprintf("%s:%d", n.ID(), s))
			size = s
		}
		if len(seen) == 1 {
			return size
		}
	}
	c.t.Fatalf("nodes did not converge: %v", sizes)
	return 0
}

// appendVia appends rec signed by id through node i.
func (c *testCluster) appendVia(i int, id *tlsutil.Identity, rec *audit.Record) (AppendResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	return c.nodes[i].Append(ctx, audittest.Must(audit.Sign(id, rec)).Marshal())
}

// metricValue reads one series of a node's registry (0 if absent); label
// and value select it (empty label: the series without labels beyond the
// node's).
func metricValue(t testing.TB, n *Node, name, label, value string) float64 {
	t.Helper()
	mfs, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.Counter != nil:
				return m.Counter.GetValue()
			case m.Gauge != nil:
				return m.Gauge.GetValue()
			}
		}
	}
	return 0
}

func (c *testCluster) running() []int {
	var out []int
	for i, n := range c.nodes {
		if n != nil {
			out = append(out, i)
		}
	}
	return out
}

// TestClusterSurvivesLeaderLossAndLosesQuorumCleanly: appends through any
// node (followers forward), the leader is killed and appends go on; with
// two of three nodes down an append fails with a clear error and nothing
// is acknowledged; the stopped nodes restart from their bbolt files and
// catch up, and all end with the same root.
func TestClusterSurvivesLeaderLossAndLosesQuorumCleanly(t *testing.T) {
	c := newCluster(t, 3, nil)
	// The fixture's ledger already holds the study record; replay it.
	study, _ := c.L.Log().Leaf(0)
	if _, err := c.nodes[1].Append(context.Background(), study); err != nil {
		t.Fatal(err)
	}
	parent := audittest.Model(0)
	for r := uint64(1); r <= 4; r++ {
		res, err := c.appendVia(int(r)%3, c.Coord, c.Round(r, parent, audittest.Model(byte(r)), "site-a", "site-b"))
		if err != nil || res.Index != int64(r) {
			t.Fatalf("round %d via node %d: index %d, %v", r, int(r)%3, res.Index, err)
		}
		parent = audittest.Model(byte(r))
	}
	if size := c.converged(); size != 5 {
		t.Fatalf("tree size %d, want 5", size)
	}

	old := c.leader()
	c.stop(old)
	for r := uint64(5); r <= 7; r++ {
		via := c.running()[int(r)%2]
		if _, err := c.appendVia(via, c.Coord, c.Round(r, parent, audittest.Model(byte(r)), "site-a", "site-b")); err != nil {
			t.Fatalf("round %d after losing leader %d: %v", r, old, err)
		}
		parent = audittest.Model(byte(r))
	}
	c.converged()

	// Two of three down: no quorum, no acknowledgement.
	alive := c.running()
	down := alive[0]
	c.stop(down)
	last := alive[1]
	before := c.nodes[last].FSM().Ledger().Log().Size()
	start := time.Now()
	_, err := c.appendVia(last, c.Coord, c.Round(8, parent, audittest.Model(8), "site-a", "site-b"))
	if !errors.Is(err, ErrNoLeader) {
		t.Fatalf("append with 1 of 3 nodes: %v, want ErrNoLeader", err)
	}
	t.Logf("append with one node of three refused after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if after := c.nodes[last].FSM().Ledger().Log().Size(); after != before {
		t.Fatalf("the lone node applied an entry without quorum: %d -> %d", before, after)
	}

	// Restart both from disk; the cluster recovers and the retry succeeds
	// (idempotently, if the lone node's entry was committed after all).
	c.start(old, false)
	c.start(down, false)
	c.leader()
	res, err := c.appendVia(old, c.Coord, c.Round(8, parent, audittest.Model(8), "site-a", "site-b"))
	if err != nil || res.Index != 8 {
		t.Fatalf("round 8 after restart: index %d, %v", res.Index, err)
	}
	if size := c.converged(); size != 9 {
		t.Fatalf("tree size %d after recovery, want 9", size)
	}
}

// TestClusterCatchUpFromSnapshot: a node stopped while the log moves on
// and is compacted must catch up from a snapshot on restart.
func TestClusterCatchUpFromSnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *NodeConfig) { cfg.TrailingLogs, cfg.SnapshotThreshold = 2, 4 })
	study, _ := c.L.Log().Leaf(0)
	if _, err := c.nodes[0].Append(context.Background(), study); err != nil {
		t.Fatal(err)
	}
	lead := c.leader()
	behind := (lead + 1) % 3
	c.stop(behind)
	parent := audittest.Model(0)
	for r := uint64(1); r <= 20; r++ {
		if _, err := c.appendVia(lead, c.Coord, c.Round(r, parent, audittest.Model(byte(r)), "site-a", "site-b")); err != nil {
			t.Fatal(err)
		}
		parent = audittest.Model(byte(r))
	}
	for _, i := range c.running() {
		if err := c.nodes[i].Snapshot(); err != nil {
			t.Fatalf("snapshot on node %d: %v", i, err)
		}
	}
	c.start(behind, false)
	if size := c.converged(); size != 21 {
		t.Fatalf("tree size %d, want 21", size)
	}
	snaps, _ := filepath.Glob(filepath.Join(c.dirs[behind], "snapshots", "*", "state.bin"))
	if len(snaps) == 0 {
		t.Fatal("the restarted node caught up without installing a snapshot; the test does not test what it says")
	}
	if out, round, err := c.nodes[behind].FSM().Ledger().LatestOutput("heart"); err != nil || round != 20 || out != audittest.Model(20) {
		t.Fatalf("restored node's study state: %x round %d, %v", out[:2], round, err)
	}
}

// TestClusterRejectsBadRecordsOnEveryNode: records with a bad signature, an
// unknown signer, a wrong parent or a skipped round are refused whichever
// node they are sent to, with the reason, and no replica changes: not even
// the Raft logs, since the leader checks before proposing.
func TestClusterRejectsBadRecordsOnEveryNode(t *testing.T) {
	c := newCluster(t, 3, nil)
	study, _ := c.L.Log().Leaf(0)
	if _, err := c.nodes[0].Append(context.Background(), study); err != nil {
		t.Fatal(err)
	}
	if _, err := c.appendVia(0, c.Coord, c.Round(1, audittest.Model(0), audittest.Model(1), "site-a", "site-b")); err != nil {
		t.Fatal(err)
	}
	c.converged()
	other, _ := tlsutil.NewCA("another consortium", time.Hour)
	stranger, _ := other.Issue("coord", tlsutil.RoleCoordinator, nil, time.Hour)
	tampered := audittest.Must(audit.Sign(c.Coord, c.Round(2, audittest.Model(1), audittest.Model(2), "site-a", "site-b"))).Marshal()
	tampered[len(tampered)-1] ^= 1
	cases := []struct {
		name string
		env  []byte
		want string
	}{
		{"bad signature", tampered, "signature"},
		{"unknown signer", audittest.Must(audit.Sign(stranger, c.Round(2, audittest.Model(1), audittest.Model(2), "site-a", "site-b"))).Marshal(), "consortium CA"},
		{"wrong parent", audittest.Must(audit.Sign(c.Coord, c.Round(2, audittest.Model(9), audittest.Model(2), "site-a", "site-b"))).Marshal(), "parent"},
		{"skipped round", audittest.Must(audit.Sign(c.Coord, c.Round(3, audittest.Model(1), audittest.Model(3), "site-a", "site-b"))).Marshal(), "round 3, want 2"},
		{"too few contributors", audittest.Must(audit.Sign(c.Coord, c.Round(2, audittest.Model(1), audittest.Model(2), "site-a"))).Marshal(), "fewer contributors"},
	}
	lastIndex := func() (out []uint64) {
		for _, n := range c.nodes {
			out = append(out, n.raft.LastIndex())
		}
		return out
	}
	before := lastIndex()
	for _, tc := range cases {
		for i := range c.nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := c.nodes[i].Append(ctx, tc.env)
			cancel()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s via node %d: %v, want an error mentioning %q", tc.name, i, err, tc.want)
			}
		}
	}
	if size := c.converged(); size != 2 {
		t.Fatalf("tree size %d after rejected appends, want 2", size)
	}
	// The leader checked each record before proposing it: none entered any
	// node's Raft log. (A leader change in between would add a no-op,
	// which is fine; a command is not.)
	after := lastIndex()
	for i, n := range c.nodes {
		for idx := before[i] + 1; idx <= after[i]; idx++ {
			var l raft.Log
			if err := n.store.GetLog(idx, &l); err != nil || l.Type == raft.LogCommand {
				t.Fatalf("node %d raft index %d after %d rejected appends: %v entry (%v)", i, idx, len(cases)*len(c.nodes), l.Type, err)
			}
		}
	}
}

// TestClusterCheckpointsAndWitnessState: the leader's checkpoint carries
// every node's signature and verifies against keys derived from the node
// certificates; an export verifies offline; a node shown a checkpoint over
// a rewritten history refuses to cosign and keeps it as evidence across a
// restart.
func TestClusterCheckpointsAndWitnessState(t *testing.T) {
	c := newCluster(t, 3, nil)
	study, _ := c.L.Log().Leaf(0)
	if _, err := c.nodes[2].Append(context.Background(), study); err != nil {
		t.Fatal(err)
	}
	for r := uint64(1); r <= 3; r++ {
		if _, err := c.appendVia(int(r)%3, c.Coord, c.Round(r, audittest.Model(byte(r-1)), audittest.Model(byte(r)), "site-a", "site-b")); err != nil {
			t.Fatal(err)
		}
	}
	signed, signers, err := c.nodes[1].Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(signers) != 3 {
		t.Fatalf("checkpoint signed by %v, want all three nodes", signers)
	}
	var keys []note.Verifier
	for _, id := range c.ids {
		v, _ := audit.NoteVerifier(tlsutil.Peer{ID: id.ID, Role: id.Role, Cert: id.Cert})
		keys = append(keys, v)
	}
	trust := audit.Trust{Roots: c.CA.Pool(), Keys: note.VerifierList(keys...), Quorum: 2}
	cp, _, err := audit.OpenCheckpoint(signed, trust.Keys, 3)
	if err != nil || cp.Size != 4 {
		t.Fatalf("checkpoint %+v: %v", cp, err)
	}
	b, err := c.nodes[0].Export(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	lin, err := audit.VerifyBundle(b, trust, "heart", audittest.Model(3))
	if err != nil || len(lin.Steps) != 3 {
		t.Fatalf("exported bundle: %v (%+v)", err, lin)
	}

	// A checkpoint of the same size with another root, properly signed by
	// the leader's key: the witness refuses and keeps it.
	lead := c.leader()
	w := (lead + 1) % 3
	forged, _ := audit.SignCheckpoint(audit.Checkpoint{Origin: cp.Origin, Size: cp.Size, Root: tlog.Hash(audittest.Model(7))}, audittest.Must(audit.NoteSigner(c.ids[lead])))
	leaderPeer := tlsutil.Peer{ID: c.ids[lead].ID, Role: tlsutil.RoleAuditNode, Cert: c.ids[lead].Cert}
	if _, err := c.nodes[w].cosign(forged, leaderPeer); !errors.Is(err, audit.ErrInconsistent) {
		t.Fatalf("cosign of a rewritten history: %v, want ErrInconsistent", err)
	}
	c.stop(w)
	c.start(w, false)
	if ev := c.nodes[w].Evidence(); len(ev) != 1 || string(ev[0]) != string(forged) {
		t.Fatalf("evidence after restart: %d items", len(ev))
	}
	if b, _ := os.ReadFile(filepath.Join(c.dirs[w], "witness.json")); !strings.Contains(string(b), "last_cosigned") {
		t.Fatalf("witness state not on disk: %s", b)
	}
}

// TestAuditLogRefusesWrongCallers: a hospital client or an observer may
// read the log but not write to it or change its membership; a certificate
// from another CA or an expired one does not get through the handshake.
// Each is refused with a clear status and the log does not change.
func TestAuditLogRefusesWrongCallers(t *testing.T) {
	c := newCluster(t, 1, nil)
	study, _ := c.L.Log().Leaf(0)
	if _, err := c.nodes[0].Append(context.Background(), study); err != nil {
		t.Fatal(err)
	}
	rec := audittest.Must(audit.Sign(c.Coord, c.Round(1, audittest.Model(0), audittest.Model(1), "site-a", "site-b"))).Marshal()
	dial := func(id *tlsutil.Identity, pool *x509.CertPool) *Client {
		cli, err := Dial([]string{c.addrs[0]}, tlsutil.ClientConfig(id, pool, ""))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		return cli
	}
	hospital := dial(audittest.Must(c.CA.Issue("site-a", tlsutil.RoleClient, nil, time.Hour)), c.CA.Pool())
	observer := dial(audittest.Must(c.CA.Issue("regulator", tlsutil.RoleObserver, nil, time.Hour)), c.CA.Pool())
	other, _ := tlsutil.NewCA("another consortium", time.Hour)
	foreign := dial(audittest.Must(other.Issue("coord", tlsutil.RoleCoordinator, nil, time.Hour)), c.CA.Pool())
	expired := dial(audittest.Must(c.CA.Issue("coord", tlsutil.RoleCoordinator, nil, -time.Minute)), c.CA.Pool())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	for name, call := range map[string]func() error{
		"hospital appends": func() error { _, err := hospital.Append(ctx, rec); return err },
		"observer appends": func() error { _, err := observer.Append(ctx, rec); return err },
		"hospital removes a node": func() error {
			_, err := hospital.apis[0].Remove(ctx, &pb.RemoveRequest{Id: "audit-0"})
			return err
		},
		"observer joins a node": func() error {
			_, err := observer.apis[0].Join(ctx, &pb.JoinRequest{Id: "audit-9", Address: "127.0.0.1:1"})
			return err
		},
	} {
		if err := call(); (status.Code(err) != codes.PermissionDenied && !errors.Is(err, ErrPermission)) || !strings.Contains(err.Error(), "may not call") {
			t.Errorf("%s: %v, want PermissionDenied naming the RPC", name, err)
		}
	}
	short, cancel2 := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel2()
	for name, cli := range map[string]*Client{"another CA": foreign, "expired certificate": expired} {
		if _, err := cli.Append(short, rec); err == nil {
			t.Errorf("%s: append accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// The node's mux counted both refusals by reason (a Go client from
	// another CA sends no certificate, since ours is not among the CAs the
	// node asks for).
	for _, reason := range []string{tlsutil.ReasonNoCertificate, tlsutil.ReasonExpired} {
		deadline := time.Now().Add(5 * time.Second)
		for metricValue(t, c.nodes[0], "fedledger_audit_refused_handshakes_total", "reason", reason) < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("no refused handshake counted with reason %s", reason)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Reading is allowed to both.
	if _, _, err := observer.LatestOutput(ctx, "heart"); err != nil {
		t.Fatalf("observer read: %v", err)
	}
	if _, _, err := hospital.LatestOutput(ctx, "heart"); err != nil {
		t.Fatalf("hospital read: %v", err)
	}
	if n := c.nodes[0].FSM().Ledger().Log().Size(); n != 1 {
		t.Fatalf("log has %d entries after refused calls, want 1", n)
	}
}
