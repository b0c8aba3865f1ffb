package coordinator_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/logtest"
	pb "github.com/fedledger/fedledger/proto"
)

// TestAdminExcludesAFlaggedSite: va sends a ×10^6 update every round. The
// norm check leaves it out of round 1; the admin then excludes it with a
// signed record the coordinator relays to the audit log. From the next
// round on va gets no training task, the status and the verify report name
// the exclusion, and the coordinator alone, an observer or a record for
// another study cannot exclude anyone.
func TestAdminExcludesAFlaggedSite(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 3, 3, 3)
	st.NormBound = 1
	var logs logtest.Buffer
	gate := newGate()
	gate.close()
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Client: func(site string, kc *client.Config) {
		if site == "va" {
			kc.Tamper = func(round uint64, delta []float64) {
				if round == 2 {
					gate.pass() // round 2 stays open until the admin has decided
				}
				for i := range delta {
					delta[i] *= 1e6
				}
			}
		}
	}})
	startClients(t, fed, nil)
	s := waitStatus(t, fed, 3*time.Minute, "round 1 committed with va left out", func(s *pb.StudyStatus) bool {
		return s.RoundsCompleted == 1 && slices.Contains(s.LastExcluded, "va")
	})
	if s.Phase != "round_open" || s.Round != 2 {
		t.Fatalf("status %s round %d, want round 2 open", s.Phase, s.Round)
	}

	conn, err := fed.Dial(fed.PKI.Admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	admin := pb.NewStudyAdminClient(conn)
	exclusion := func(study, site string, from uint64) []byte {
		env, err := audit.Sign(fed.PKI.Admin, audit.ExclusionRecord(study, site, from, "past the norm bound in round 1", fed.PKI.Admin.ID, true, time.Now().UnixNano()))
		if err != nil {
			t.Fatal(err)
		}
		return env.Marshal()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Refused: an observer calling, a record for another study, an unknown
	// site, a round already on the log (the log's rules), and the
	// coordinator's own signature on an admin's record.
	oconn, err := fed.Dial(fed.PKI.Regulator)
	if err != nil {
		t.Fatal(err)
	}
	defer oconn.Close()
	if _, err := pb.NewStudyAdminClient(oconn).Exclude(ctx, &pb.ExcludeRequest{Envelope: exclusion(st.ID, "va", 2)}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("an observer's exclusion: %v", err)
	}
	for name, env := range map[string][]byte{
		"another study": exclusion("other", "va", 2),
		"unknown site":  exclusion(st.ID, "nowhere", 2),
		"garbage":       []byte("not an envelope"),
	} {
		if _, err := admin.Exclude(ctx, &pb.ExcludeRequest{Envelope: env}); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := admin.Exclude(ctx, &pb.ExcludeRequest{Envelope: exclusion(st.ID, "va", 1)}); status.Code(err) != codes.FailedPrecondition ||
		!strings.Contains(err.Error(), "already on the log") {
		t.Fatalf("an exclusion from a round on the log: %v", err)
	}
	forged, err := audit.Sign(fed.PKI.Coordinator, audit.ExclusionRecord(st.ID, "va", 2, "forged", fed.PKI.Coordinator.ID, true, time.Now().UnixNano()))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := fed.AuditClient(fed.PKI.Coordinator)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Append(ctx, forged.Marshal()); err == nil || !strings.Contains(err.Error(), "wrong role") {
		t.Fatalf("the coordinator's own exclusion appended: %v", err)
	}

	s, err = admin.Exclude(ctx, &pb.ExcludeRequest{Envelope: exclusion(st.ID, "va", 2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Exclusions) != 1 || s.Exclusions[0].Site != "va" || s.Exclusions[0].FromRound != 2 || s.Exclusions[0].By != fed.PKI.Admin.ID {
		t.Fatalf("status exclusions %v", s.Exclusions)
	}
	if got := metricValue(t, fed.Coordinator(), `fedledger_coordinator_exclusions_total{change="excluded"}`); got != 1 {
		t.Fatalf("exclusions metric %v, want 1", got)
	}
	gate.reopen()

	res, err := fed.Wait(4 * time.Minute)
	if err != nil {
		t.Fatalf("%v\n%s", err, logs.String())
	}
	for _, r := range res.Rounds {
		if r.Failed {
			t.Fatalf("round %d failed: %s", r.Round, r.Reason)
		}
		if r.Round >= 2 && (slices.Contains(r.Contributors, "va") || slices.Contains(r.Excluded, "va") || r.Projections["va"] != 0) {
			t.Fatalf("round %d still took va's update: contributors %v, left out %v", r.Round, r.Contributors, r.Excluded)
		}
	}
	report, _, err := fed.Verify(context.Background(), res.Model)
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	if err := report.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "excluded va from round 2") || len(report.Exclusions) != 1 {
		t.Fatalf("the verify report does not name the exclusion:\n%s", text.String())
	}
}
