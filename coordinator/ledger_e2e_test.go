package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/logtest"
	pb "github.com/fedledger/fedledger/proto"
)

// The audit log's rules refuse a round unless the hospitals vouch for
// it. These tests check the coordinator never submits a record the log
// would refuse, that the log refuses one made without the hospitals, and
// that the study waits out a log without quorum.

// rewriteCountersign makes a hospital's client send f's message instead of
// its countersignature of round.
func rewriteCountersign(round uint64, f func(*pb.Countersignature) *pb.ClientMessage) grpc.DialOption {
	return fedtest.OnSend(fedtest.Participate, func(m proto.Message) proto.Message {
		cs := m.(*pb.ClientMessage).GetCountersign()
		if cs == nil || cs.Round != round {
			return m
		}
		return f(proto.Clone(cs).(*pb.Countersignature))
	})
}

// TestCountersignRefusalsFailTheRoundCleanly: in a secure study (t = 3,
// the decryptors countersign), cleveland's countersignature of round 1 is
// tampered with on the wire and hungary refuses to countersign round 2.
// Neither round can be vouched for, so neither goes on the log as
// completed: each fails cleanly (the tampered signature is rejected and
// counted, the round fails at the countersigning deadline; the refusal
// fails round 2 at once), is recorded as failed with its reason, and the
// study goes on: round 3 completes from the initial model. The log never
// had to refuse anything the coordinator submitted.
func TestCountersignRefusalsFailTheRoundCleanly(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 3, 3, 3)
	st.PhaseTimeout = 5 * time.Second // how long the rejected countersignature is waited for
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1})
	startClients(t, fed, map[string][]grpc.DialOption{
		"cleveland": {rewriteCountersign(1, func(cs *pb.Countersignature) *pb.ClientMessage {
			cs.Signature[0] ^= 1
			return &pb.ClientMessage{Msg: &pb.ClientMessage_Countersign{Countersign: cs}}
		})},
		"hungary": {rewriteCountersign(2, func(cs *pb.Countersignature) *pb.ClientMessage {
			return &pb.ClientMessage{Msg: &pb.ClientMessage_Refusal{Refusal: &pb.TaskRefusal{StudyId: cs.StudyId, Round: cs.Round,
				Reason: "this site does not vouch for round 2"}}}
		})},
	})
	res := wait(t, fed)
	if len(res.Rounds) != 3 {
		t.Fatalf("%d rounds, want 3", len(res.Rounds))
	}
	r1, r2, r3 := res.Rounds[0], res.Rounds[1], res.Rounds[2]
	if !r1.Failed || !strings.Contains(r1.Reason, "countersign") || r1.Model != r1.Parent || len(r1.Countersignatures) != 0 {
		t.Errorf("round 1: failed=%v (%s), countersignatures %d", r1.Failed, r1.Reason, len(r1.Countersignatures))
	}
	if !r2.Failed || !strings.Contains(r2.Reason, "countersign") || r2.Parent != r1.Parent {
		t.Errorf("round 2: failed=%v (%s)", r2.Failed, r2.Reason)
	}
	if r3.Failed || r3.Parent != r1.Parent || len(r3.Countersignatures) != 3 {
		t.Fatalf("round 3: failed=%v (%s) from %x, %d countersignatures", r3.Failed, r3.Reason, r3.Parent[:4], len(r3.Countersignatures))
	}
	co := fed.Coordinator()
	// cleveland's tampered countersignature is rejected (round 2's may
	// be too, if they arrive once hungary's refusal has failed it).
	if got, _ := lookupValue(t, co.Metrics(), `fedledger_coordinator_countersignatures_total{result="rejected"}`); got < 1 {
		t.Errorf("%v countersignatures counted as rejected, want at least cleveland's tampered one", got)
	}
	if got := metricValue(t, co, `fedledger_coordinator_countersignatures_total{result="accepted"}`); got < 2+3 {
		t.Errorf("%v countersignatures accepted, want at least 5", got)
	}
	if got := metricValue(t, co, `fedledger_coordinator_rounds_total{outcome="failed"}`); got != 2 {
		t.Errorf("%v rounds counted as failed, want 2", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, b, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 1 || rep.Rounds[0].Round != 3 {
		t.Fatalf("the final model's lineage: %+v", rep.Rounds)
	}
	var kinds []audit.Kind
	for _, rec := range studyRecords(t, b, st.ID) {
		kinds = append(kinds, rec.Kind)
		if rec.Kind == audit.KindRoundFailed {
			i := slices.IndexFunc(rec.Hyperparameters, func(p audit.Param) bool { return p.Name == "failure" })
			if i < 0 || !strings.Contains(rec.Hyperparameters[i].Value, "countersign") {
				t.Errorf("round %d's failure record does not say why: %v", rec.Round, rec.Hyperparameters)
			}
		}
	}
	want := []audit.Kind{audit.KindStudyCreated, audit.KindKeySetupDone, audit.KindRoundFailed, audit.KindRoundFailed, audit.KindRoundCompleted}
	if !slices.Equal(kinds, want) {
		t.Fatalf("the log holds %v, want %v", kinds, want)
	}
	if n := auditRejections(t, fed); n != 0 {
		t.Fatalf("the audit log refused %v appends", n)
	}
}

// TestFabricatedRoundIsRefused: once round 1 is committed, a round 2 made
// up with the coordinator's key alone (the right parent, HE parameters,
// collective key and optimiser chain, but contributions and decryption
// shares with random signatures, and no countersignatures) is refused by
// the audit log; so is the same round with forged countersignatures. The
// study's own round 2 is then committed, and the regulator's verification
// of the fabricated round's claimed output fails.
func TestFabricatedRoundIsRefused(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 2, 3, 3)
	var ref fedRef
	random := func() (h audit.Hash) { rand.Read(h[:]); return h }
	forged := func() []byte { b := make([]byte, ed25519.SignatureSize); rand.Read(b); return b }
	claimed := random()
	var unvouched, forgedCS error
	appended := make(chan struct{})
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1, Coordinator: func(cc *coordinator.Config) {
		cc.OnRound = func(r coordinator.RoundReport) {
			if r.Round != 1 {
				return
			}
			fed := ref.Load()
			// Before the coordinator announces round 2.
			defer close(appended)
			rec := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: st.ID, Round: 2, ParentModel: r.Model, OutputModel: claimed,
				AggregateHash: random(), HEParamsID: r.HEParams, CollectiveKeyHash: r.CollectiveKey, OptimizerBefore: r.OptimizerAfter,
				OptimizerAfter: random(), Strategy: st.Strategy.Name, TimestampUnixNs: time.Now().UnixNano(), SubmitterID: fed.PKI.Coordinator.ID}
			for _, s := range r.Contributors {
				rec.Contributions = append(rec.Contributions, audit.Contribution{Site: s, UpdateHash: random(), Samples: 100, DataManifest: random(), Signature: forged()})
			}
			for _, s := range r.Decryptors {
				rec.DecryptionShares = append(rec.DecryptionShares, audit.DecryptionShare{Site: s, ShareHash: random(), Signature: forged()})
			}
			unvouched = appendRecord(fed, rec)
			for _, s := range r.Decryptors {
				rec.Countersignatures = append(rec.Countersignatures, audit.Countersignature{Site: s, Signature: forged()})
			}
			forgedCS = appendRecord(fed, rec)
		}
	}})
	ref.Store(fed)
	startClients(t, fed, nil)
	res := wait(t, fed)
	select {
	case <-appended:
	default:
		t.Fatal("round 1 was never committed")
	}
	if !errors.Is(unvouched, cluster.ErrRejected) || !strings.Contains(unvouched.Error(), "fewer countersignatures") {
		t.Errorf("a round without countersignatures: %v, want refused for too few countersignatures", unvouched)
	}
	if !errors.Is(forgedCS, cluster.ErrRejected) || !strings.Contains(forgedCS.Error(), "signature does not verify") {
		t.Errorf("a round with forged signatures: %v, want refused for a hospital signature that does not verify", forgedCS)
	}
	if n := auditRejections(t, fed); n != 2 {
		t.Errorf("the audit log refused %v appends, want the 2 fabricated ones", n)
	}
	if len(res.Rounds) != 2 || res.Rounds[1].Failed || res.Rounds[1].Model == claimed {
		t.Fatalf("rounds %+v", res.Rounds)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, _, err := fed.Verify(ctx, [32]byte(claimed)); !errors.Is(err, audit.ErrLineage) {
		t.Fatalf("verifying the fabricated round's output: %v, want a broken lineage", err)
	}
	rep, b, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 2 {
		t.Fatalf("the study's lineage has %d rounds, want 2", len(rep.Rounds))
	}
	for _, rec := range studyRecords(t, b, st.ID) {
		if rec.OutputModel == claimed {
			t.Fatalf("the fabricated round is on the log (round %d)", rec.Round)
		}
	}
}

// appendRecord signs rec with the coordinator's identity and appends it.
func appendRecord(fed *fedtest.Federation, rec *audit.Record) error {
	env, err := audit.Sign(fed.PKI.Coordinator, rec)
	if err != nil {
		return err
	}
	cli, err := fed.AuditClient(fed.PKI.Coordinator)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = cli.Append(ctx, env.Marshal())
	return err
}

// TestAuditLogQuorumLossPausesTheStudy: two of the three audit nodes stop
// just as round 2 is to be recorded. The coordinator says in its status
// that it is waiting for the audit log, and logs it, keeps retrying, and
// once the nodes are back records round 2 and finishes the study, every
// round on the log.
func TestAuditLogQuorumLossPausesTheStudy(t *testing.T) {
	st := plainStudy(t, aggregation.FedAvg, 3, 4)
	var logs logtest.Buffer
	stopNodes, stopped := make(chan struct{}), make(chan struct{})
	var once bool
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 3, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Coordinator: func(cc *coordinator.Config) { cc.RecordTimeout = 2 * time.Second },
		Recorder: func(r coordinator.Recorder) coordinator.Recorder {
			return recorderFunc{r, func(ctx context.Context, rec study.Record) error {
				if rec.Round != nil && rec.Round.Round == 2 && !once {
					once = true
					stopNodes <- struct{}{} // the test stops two nodes
					<-stopped
				}
				return r.Record(ctx, rec)
			}}
		}})
	startClients(t, fed, nil)
	select {
	case <-stopNodes:
	case <-time.After(2 * time.Minute):
		t.Fatal("round 2 never reached its record")
	}
	fed.Audit.StopNode(1)
	fed.Audit.StopNode(2)
	close(stopped)
	s := waitStatus(t, fed, time.Minute, "the coordinator waiting for the audit log", func(s *pb.StudyStatus) bool {
		return s.Phase == "recording" && s.Round == 2 && strings.Contains(s.WaitingFor, "audit log")
	})
	t.Logf("status while the log has no quorum: phase %s, round %d, waiting for %q", s.Phase, s.Round, s.WaitingFor)
	if s.RoundsCompleted != 1 {
		t.Errorf("status says %d rounds completed, want 1", s.RoundsCompleted)
	}
	for deadline := time.Now().Add(time.Minute); !strings.Contains(logs.String(), `msg="audit log unavailable; waiting to record"`); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the coordinator did not log that it is waiting for the audit log")
		}
	}
	for _, i := range []int{1, 2} {
		if err := fed.Audit.StartNode(i); err != nil {
			t.Fatal(err)
		}
	}
	res := wait(t, fed)
	if len(res.Rounds) != 3 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed {
			t.Fatalf("round %d failed: %s", r.Round, r.Reason)
		}
	}
	if !strings.Contains(logs.String(), `msg="retrying the audit log"`) {
		t.Error("the coordinator did not log its retries")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, _, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 3 {
		t.Fatalf("the log's lineage has %d rounds, want 3", len(rep.Rounds))
	}
}

// recorderFunc is a Recorder whose Record is record.
type recorderFunc struct {
	coordinator.Recorder
	record func(context.Context, study.Record) error
}

func (r recorderFunc) Record(ctx context.Context, rec study.Record) error { return r.record(ctx, rec) }
