package cluster

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// An observer that reads the log a few times a minute, then exports
// hundreds of times in one minute, is flagged once in that minute; the
// coordinator's steady traffic and the observer's usual minutes are not.
func TestAccessWatchFlagsABurst(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	type flag struct {
		id     string
		calls  int
		reason string
	}
	var flags []flag
	w := newAccessWatch(time.Minute, 10, t0, func(id string, calls int, reason string) { flags = append(flags, flag{id, calls, reason}) })
	coord := tlsutil.Peer{ID: "coordinator", Role: tlsutil.RoleCoordinator}
	obs := tlsutil.Peer{ID: "regulator", Role: tlsutil.RoleObserver}
	at := func(minute, i, n int) time.Time {
		return t0.Add(time.Duration(minute)*time.Minute + time.Duration(i)*time.Minute/time.Duration(n+1))
	}
	for m := range 12 {
		for i := range 120 + m%7 {
			w.record(coord, at(m, i, 130))
		}
		for i := range 2 + m%3 {
			w.record(obs, at(m, i, 5))
		}
	}
	if len(flags) != 0 {
		t.Fatalf("usual traffic flagged: %+v", flags)
	}
	for i := range 400 {
		w.record(obs, at(12, i, 400))
	}
	for i := range 125 {
		w.record(coord, at(12, i, 130))
	}
	if len(flags) != 1 || flags[0].id != "regulator" || !strings.Contains(flags[0].reason, "as observer") {
		t.Fatalf("flags %+v, want one for the regulator's burst", flags)
	}
	// The next minute is quiet again: nothing more.
	for i := range 3 {
		w.record(obs, at(13, i, 5))
	}
	if len(flags) != 1 {
		t.Fatalf("flags %+v after a quiet minute", flags)
	}
}

// An identity with too little history is never flagged, and a long idle
// stretch does not loop over every missed window.
func TestAccessWatchWarmUpAndIdle(t *testing.T) {
	t0 := time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC)
	n := 0
	w := newAccessWatch(time.Minute, 10, t0, func(string, int, string) { n++ })
	p := tlsutil.Peer{ID: "new-admin", Role: tlsutil.RoleAdmin}
	for i := range 1000 {
		w.record(p, t0.Add(time.Duration(i)*time.Millisecond))
	}
	if n != 0 {
		t.Fatal("flagged without history")
	}
	w.record(p, t0.Add(24*365*time.Hour))
	if got := len(w.history[p.ID]); got > accessHistory {
		t.Fatalf("history of %d windows", got)
	}
}

// A real node counts every authorized call by identity and RPC, and flags
// an observer's burst of exports in its metrics.
func TestNodeCountsAndFlagsAccess(t *testing.T) {
	c := newCluster(t, 1, func(nc *NodeConfig) { nc.AccessWindow = time.Second })
	study, _ := c.L.Log().Leaf(0)
	if _, err := c.nodes[0].Append(context.Background(), study); err != nil {
		t.Fatal(err)
	}
	cli, err := Dial([]string{c.addrs[0]}, tlsutil.ClientConfig(audittest.Must(c.CA.Issue("regulator", tlsutil.RoleObserver, nil, time.Hour)), c.CA.Pool(), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Six quiet windows of one call each.
	for range 6 {
		if _, err := cli.ListStudies(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second + 10*time.Millisecond)
	}
	flagged := func() float64 {
		return metricValue(t, c.nodes[0], "fedledger_audit_access_anomalies_total", "identity", "regulator")
	}
	if got := flagged(); got != 0 {
		t.Fatalf("%v flags for usual traffic", got)
	}
	// Then a burst of exports: flagged once some window holds more than
	// median + 6·10 = 61 of them (however fast this machine makes them).
	exports := 0
	for deadline := time.Now().Add(20 * time.Second); flagged() == 0 && time.Now().Before(deadline); exports++ {
		if _, err := cli.Export(ctx, c.Study.StudyID, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if flagged() == 0 {
		t.Fatalf("%d exports in 20 s were not flagged", exports)
	}
	if exports < 61 {
		t.Fatalf("flagged after %d exports, fewer than the 61 a window needs", exports)
	}
	// The regulator is the only caller of these two RPCs here.
	if l, e := metricValue(t, c.nodes[0], "fedledger_audit_access_total", "rpc", "ListStudies"), metricValue(t, c.nodes[0], "fedledger_audit_access_total", "rpc", "Export"); l != 6 || int(e) != exports {
		t.Fatalf("counted %v ListStudies and %v Export calls, want 6 and %d", l, e, exports)
	}
}
