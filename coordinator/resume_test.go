package coordinator_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TestCoordinatorResumesFromTheLog: a secure FedAdam study with an audit
// log; the coordinator is stopped after round 2 is committed and a new one
// starts on the same data directory and address. It must resume at round 3
// (no second key setup, no round recorded twice) while the hospitals
// reconnect on their own, and finish the study; the log ends with the
// final model as the study's latest output after exactly 4 rounds.
func TestCoordinatorResumesFromTheLog(t *testing.T) {
	cfg := secureStudyConfig(t, aggregation.FedAdam, 4, 4, 3)
	ca, err := tlsutil.NewCA("resume consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node := startAuditNode(t, ca)
	admin, _ := ca.Issue("consortium-admin", tlsutil.RoleAdmin, nil, time.Hour)
	coordID, _ := ca.Issue("coordinator", tlsutil.RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	_, _, initial, _ := coordinator.InitialModel(cfg.Study)
	env, _ := audit.Sign(admin, coordinator.StudyRecord(cfg.Study, initial, admin.ID, time.Time{}))
	alog, err := cluster.Dial([]string{node.Addr()}, tlsutil.ClientConfig(coordID, ca.Pool(), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close()
	cfg.TLS = tlsutil.ServerConfig(coordID, ca.Pool())
	cfg.Recorder = &coordinator.AuditRecorder{Log: alog, Identity: coordID, StudyRecord: env.Marshal()}

	// First coordinator: stopped right after round 2 is committed.
	ctx1, stop1 := context.WithCancel(context.Background())
	first := cfg
	first.OnRound = func(r coordinator.RoundReport) {
		if r.Round == 2 {
			stop1()
		}
	}
	co1, err := coordinator.New(first, quiet())
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	done1 := make(chan error, 1)
	go func() { done1 <- co1.Run(ctx1, lis) }()

	clientsCtx, stopClients := context.WithCancel(context.Background())
	defer stopClients()
	clientDone := make(chan error, len(train.Hospitals))
	for _, h := range train.Hospitals {
		kc := client.DefaultConfig()
		kc.CoordinatorAddr, kc.TLS, kc.DataDir, kc.Data.Heart = addr, tlsutil.ClientConfig(must(ca.Issue(h, tlsutil.RoleClient, nil, time.Hour)), ca.Pool(), "127.0.0.1"), t.TempDir(), h
		kc.AuditNodes, kc.MaxBackoff = []string{node.Addr()}, 500*time.Millisecond
		c, err := client.New(kc, quiet())
		if err != nil {
			t.Fatal(err)
		}
		go func() { clientDone <- c.Run(clientsCtx) }()
	}
	if err := <-done1; !errors.Is(err, context.Canceled) {
		t.Fatalf("first coordinator: %v", err)
	}
	if got := len(co1.Result().Rounds); got != 2 {
		t.Fatalf("first coordinator ran %d rounds, want 2", got)
	}

	// Second coordinator: same data directory, same address.
	co2, err := coordinator.New(cfg, quiet())
	if err != nil {
		t.Fatal(err)
	}
	lis2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- co2.Run(context.Background(), lis2) }()
	select {
	case err := <-done2:
		if err != nil {
			t.Fatalf("resumed coordinator: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("resumed study did not finish")
	}
	res := co2.Result()
	if len(res.Rounds) != 2 || res.Rounds[0].Round != 3 || res.Rounds[1].Round != 4 {
		t.Fatalf("resumed rounds %+v, want rounds 3 and 4", res.Rounds)
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 4 {
			t.Fatalf("round %d: failed=%v (%s) contributors=%v", r.Round, r.Failed, r.Reason, r.Contributors)
		}
	}
	if metric := metricValue(t, co2, "fedledger_coordinator_key_setup_seconds"); metric != 0 {
		t.Fatalf("the resumed coordinator ran key setup again (%v s)", metric)
	}
	out, round, err := node.FSM().Ledger().LatestOutput(cfg.Study.ID)
	if err != nil || round != 4 || out != audit.Hash(res.Model) {
		t.Fatalf("log: latest output %x at round %d (%v); study ended with %x", out[:4], round, err, res.Model[:4])
	}
	// study created, key setup, 4 rounds: nothing twice.
	if n := node.FSM().Ledger().Log().Size(); n != 6 {
		t.Fatalf("log has %d entries, want 6", n)
	}
	stopClients()
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
