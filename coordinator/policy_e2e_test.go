package coordinator_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/logtest"
)

// TestPolicyRefusalIsVisible: a hospital whose policy forbids the study
// (more rounds than it allows) refuses before doing any work, says why,
// and the coordinator sees and counts the refusal; the study runs with the
// others.
func TestPolicyRefusalIsVisible(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 2, 3, 3)
	st.StartTimeout = 2 * time.Second
	var logs logtest.Buffer
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Client: func(site string, kc *client.Config) {
		if site == "va" {
			kc.Policy.MaxRounds = 1
		}
	}})
	clients := startClients(t, fed, nil)
	err := fed.ClientErr("va", time.Minute)
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "policy: study asks for 2 rounds, this site allows at most 1") {
		t.Fatalf("va: %v", err)
	}
	res := wait(t, fed)
	if len(res.Rounds) != 2 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 3 {
			t.Fatalf("round %d: failed=%v contributors=%v", r.Round, r.Failed, r.Contributors)
		}
	}
	// The coordinator counts the refusal and logs who refused and why.
	if got := metricValue(t, fed.Coordinator(), "fedledger_coordinator_task_refusals_total"); got != 1 {
		t.Errorf("refusals counted: %v, want 1", got)
	}
	if !slices.ContainsFunc(strings.Split(logs.String(), "\n"), func(l string) bool {
		return strings.Contains(l, "component=coordinator") && strings.Contains(l, `msg="client refused a task"`) && strings.Contains(l, "client=va") &&
			strings.Contains(l, "this site allows at most 1")
	}) {
		t.Errorf("the coordinator did not log va's refusal:\n%s", logs.String())
	}
	// The hospitals' own metrics say the same.
	for name, want := range map[string]float64{
		"va/fedledger_client_study_refusals_total":                             1,
		`cleveland/fedledger_client_rounds_total{outcome="submitted"}`:         2,
		`cleveland/fedledger_client_decryption_shares_total{result="given"}`:   2,
		`cleveland/fedledger_client_countersignatures_total{result="given"}`:   2,
		`hungary/fedledger_client_rounds_total{outcome="submitted"}`:           2,
		`switzerland/fedledger_client_countersignatures_total{result="given"}`: 2,
		// Every contributor sketched: a decryptor checks the aggregate
		// without downloading any contribution, from 3 sketches of 32
		// bytes a round.
		"cleveland/fedledger_client_aggregate_check_downloads_total":                0,
		`cleveland/fedledger_client_aggregate_check_bytes_total{source="sketches"}`: 2 * 3 * 32,
		`cleveland/fedledger_client_sketches_total{result="given"}`:                 2,
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
	st := plainStudy(t, aggregation.FedAvg, 2, 3)
	st.StartTimeout = 2 * time.Second
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1, Client: func(site string, kc *client.Config) {
		if site == "cleveland" {
			kc.Policy.Admins = []string{"another-admin"}
		}
	}})
	startClients(t, fed, nil)
	err := fed.ClientErr("cleveland", time.Minute)
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), `created by "consortium-admin", not one of this site's accepted admins`) {
		t.Fatalf("cleveland: %v", err)
	}
	res := wait(t, fed)
	if len(res.Rounds) != 2 || res.Rounds[1].Failed || len(res.Rounds[1].Contributors) != 3 {
		t.Fatalf("rounds %+v", res.Rounds)
	}
	reg, err := fed.AuditClient(fed.PKI.Regulator)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, round, err := reg.LatestOutput(ctx, st.ID)
	if err != nil || round != 2 || out != audit.Hash(res.Model) {
		t.Fatalf("log's latest output %x round %d (%v), study ended at %x", out[:4], round, err, res.Model[:4])
	}
}
