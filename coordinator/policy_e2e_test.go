package coordinator_test

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
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

// runWithPolicies runs one client per hospital, each with the policy (and
// audit nodes) given, and returns their Run errors.
func (f *federation) runWithPolicies(policies map[string]client.Policy, auditNodes []string) map[string]error {
	errs, _ := f.runWithPoliciesClients(policies, auditNodes)
	return errs
}

func (f *federation) runWithPoliciesClients(policies map[string]client.Policy, auditNodes []string) (map[string]error, map[string]*client.Client) {
	var mu sync.Mutex
	errs := map[string]error{}
	clients := map[string]*client.Client{}
	var wg sync.WaitGroup
	for _, h := range train.Hospitals {
		cfg := client.DefaultConfig()
		cfg.CoordinatorAddr, cfg.TLS, cfg.DataDir = f.addr, f.clientTLS(h, tlsutil.RoleClient), f.t.TempDir()
		cfg.Data.Heart, cfg.AllowPlaintext, cfg.Policy, cfg.AuditNodes = h, !f.cfg.Study.Secure(), policies[h], auditNodes
		c, err := client.New(cfg, quiet())
		if err != nil {
			f.t.Fatal(err)
		}
		clients[h] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := c.Run(ctx)
			mu.Lock()
			errs[h] = err
			mu.Unlock()
		}()
	}
	f.wait()
	wg.Wait()
	return errs, clients
}

// TestPolicyRefusalIsVisible: a hospital whose policy forbids the study
// (more rounds than it allows) refuses before doing any work, says why,
// and the coordinator sees and counts the refusal; the study runs with the
// others.
func TestPolicyRefusalIsVisible(t *testing.T) {
	cfg := secureStudyConfig(t, aggregation.FedAvg, 2, 3, 3)
	cfg.Study.StartTimeout = 2 * time.Second
	f := startFederation(t, cfg)
	errs, clients := f.runWithPoliciesClients(map[string]client.Policy{"va": {MaxRounds: 1}}, nil)
	if err := errs["va"]; err == nil || !strings.Contains(err.Error(), "policy: study asks for 2 rounds, this site allows at most 1") {
		t.Fatalf("va: %v", err)
	}
	res := f.co.Result()
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 3 {
			t.Fatalf("round %d: failed=%v contributors=%v", r.Round, r.Failed, r.Contributors)
		}
	}
	if got := metricValue(t, f.co, "fedledger_coordinator_task_refusals_total"); got < 1 {
		t.Fatalf("refusals counted: %v", got)
	}
	// The hospitals' own metrics say the same.
	for name, want := range map[string]float64{
		"va/fedledger_client_study_refusals_total":                           1,
		`cleveland/fedledger_client_rounds_total{outcome="submitted"}`:       2,
		`cleveland/fedledger_client_decryption_shares_total{result="given"}`: 2,
		// Re-summing downloads the two other contributions of each round,
		// never the site's own.
		"cleveland/fedledger_client_resum_downloads_total":           4,
		`hungary/fedledger_client_rounds_total{outcome="submitted"}`: 2,
	} {
		site, series, _ := strings.Cut(name, "/")
		if got := registryValue(t, clients[site].Metrics(), series); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestPolicyChecksTheSignedStudyRecord: with an audit log, a hospital
// accepts only studies created by admins it trusts, whose signed record
// says what the coordinator announced. Cleveland trusts another admin and
// refuses; the others run the study, whose rounds are all committed.
func TestPolicyChecksTheSignedStudyRecord(t *testing.T) {
	cfg := studyConfig(t, aggregation.FedAvg, 2, 3)
	cfg.Study.StartTimeout = 2 * time.Second
	// The CA must exist before the audit node and the recorder; build the
	// federation by hand.
	ca, err := tlsutil.NewCA("policy consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	node := startAuditNode(t, ca)
	admin, _ := ca.Issue("consortium-admin", tlsutil.RoleAdmin, nil, time.Hour)
	coordID, _ := ca.Issue("coordinator", tlsutil.RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	_, _, initial, err := coordinator.InitialModel(cfg.Study)
	if err != nil {
		t.Fatal(err)
	}
	env, err := audit.Sign(admin, coordinator.StudyRecord(cfg.Study, initial, admin.ID, time.Time{}))
	if err != nil {
		t.Fatal(err)
	}
	alog, err := cluster.Dial([]string{node.Addr()}, tlsutil.ClientConfig(coordID, ca.Pool(), ""))
	if err != nil {
		t.Fatal(err)
	}
	defer alog.Close()
	cfg.Recorder = &coordinator.AuditRecorder{Log: alog, Identity: coordID, StudyRecord: env.Marshal()}
	f := startFederationWith(t, cfg, ca, coordID)
	trusting := client.Policy{Admins: []string{"consortium-admin"}}
	errs := f.runWithPolicies(map[string]client.Policy{
		"cleveland": {Admins: []string{"another-admin"}}, "hungary": trusting, "switzerland": trusting, "va": trusting,
	}, []string{node.Addr()})
	if err := errs["cleveland"]; err == nil || !strings.Contains(err.Error(), `created by "consortium-admin", not one of this site's accepted admins`) {
		t.Fatalf("cleveland: %v", err)
	}
	res := f.co.Result()
	if len(res.Rounds) != 2 || res.Rounds[1].Failed || len(res.Rounds[1].Contributors) != 3 {
		t.Fatalf("rounds %+v", res.Rounds)
	}
	out, round, err := node.FSM().Ledger().LatestOutput(cfg.Study.ID)
	if err != nil || round != 2 || out != audit.Hash(res.Model) {
		t.Fatalf("log's latest output %x round %d (%v), study ended at %x", out[:4], round, err, res.Model[:4])
	}
}

// startAuditNode starts a one-node audit log (a cluster of one: its own
// quorum) on loopback.
func startAuditNode(t *testing.T, ca *tlsutil.CA) *cluster.Node {
	t.Helper()
	id, err := ca.Issue("audit-1", tlsutil.RoleAuditNode, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := cluster.DefaultNodeConfig()
	cfg.Listen, cfg.DataDir, cfg.Identity, cfg.Roots, cfg.Bootstrap = "127.0.0.1:0", filepath.Join(t.TempDir(), "audit"), id, ca.Pool(), true
	cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 200*time.Millisecond, 200*time.Millisecond, 100*time.Millisecond
	n, err := cluster.StartNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	for deadline := time.Now().Add(10 * time.Second); !n.IsLeader(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("audit node did not elect itself")
		}
	}
	return n
}
