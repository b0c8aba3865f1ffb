package coordinator_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/fedtest"
	pb "github.com/fedledger/fedledger/proto"
)

// restartAfterRound makes fed's coordinator restart once round n is
// committed: OnRound signals, and restart (run by the test goroutine)
// does it and reports how it went.
type restartAfterRound struct {
	n       int
	reached chan struct{}
}

func newRestartAfterRound(n int) *restartAfterRound {
	return &restartAfterRound{n: n, reached: make(chan struct{}, 1)}
}

func (r *restartAfterRound) onRound(rep coordinator.RoundReport) {
	if rep.Round == r.n {
		select {
		case r.reached <- struct{}{}:
		default:
		}
	}
}

// restart waits for round n and restarts the coordinator as a crash
// would.
func (r *restartAfterRound) restart(t testing.TB, fed *fedtest.Federation) {
	t.Helper()
	select {
	case <-r.reached:
	case <-time.After(3 * time.Minute):
		t.Fatalf("round %d was never committed", r.n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fed.RestartCoordinator(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCoordinatorResumesFromTheLog: a secure FedAdam study with an audit
// log; the coordinator is stopped (as a crash would) right after round 2
// is committed and a new one starts on the same data directory and
// address. It must resume at round 3 (no second key setup, no round
// recorded twice) while the hospitals reconnect on their own, and finish
// the study; the log ends with the final model as the study's latest
// output after exactly 4 rounds.
func TestCoordinatorResumesFromTheLog(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAdam, 4, 4, 3)
	r := newRestartAfterRound(2)
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 3, Coordinator: func(cc *coordinator.Config) { cc.OnRound = r.onRound }})
	first := fed.Coordinator()
	startClients(t, fed, nil)
	r.restart(t, fed)
	if got := len(first.Result().Rounds); got != 0 {
		t.Fatalf("the interrupted coordinator reports a result of %d rounds", got)
	}
	res := wait(t, fed)
	if len(res.Rounds) != 2 || res.Rounds[0].Round != 3 || res.Rounds[1].Round != 4 {
		t.Fatalf("resumed rounds %+v, want rounds 3 and 4", res.Rounds)
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 4 {
			t.Fatalf("round %d: failed=%v (%s) contributors=%v", r.Round, r.Failed, r.Reason, r.Contributors)
		}
	}
	if metric := metricValue(t, fed.Coordinator(), "fedledger_coordinator_key_setup_seconds"); metric != 0 {
		t.Fatalf("the resumed coordinator ran key setup again (%v s)", metric)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, b, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 4 {
		t.Fatalf("the final model's lineage has %d rounds, want 4", len(rep.Rounds))
	}
	// Study created, key setup, 4 rounds: nothing twice.
	recs := studyRecords(t, b, st.ID)
	if len(recs) != 6 || len(b.Leaves) != 6 {
		t.Fatalf("log has %d entries (%d of the study), want 6", len(b.Leaves), len(recs))
	}
	if last := recs[5]; last.Round != 4 || last.OutputModel != audit.Hash(res.Model) {
		t.Fatalf("the log's last round %d ends at %x; the study at %x", last.Round, last.OutputModel[:4], res.Model[:4])
	}
}

// TestResumedStudyEndsWithTheUninterruptedModel: a plaintext study is
// deterministic (each site's training is seeded by the study and round,
// sums are taken in site order), so a coordinator restarted after round 2
// and again in the middle of round 3 (countersigned, its record not yet
// committed: the hospitals countersign the re-run's identical outcome
// again) must end with exactly the model an uninterrupted run of the same
// study ends with, bit for bit, with the same four rounds on the log.
func TestResumedStudyEndsWithTheUninterruptedModel(t *testing.T) {
	st := plainStudy(t, aggregation.FedAdam, 4, 4)
	straight := startFed(t, fedtest.Config{Study: st, AuditNodes: 1})
	startClients(t, straight, nil)
	want := wait(t, straight)
	straight.Close()

	r := newRestartAfterRound(2)
	hold := newRecordHold(3)
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1, Recorder: hold.wrap,
		Coordinator: func(cc *coordinator.Config) { cc.OnRound = r.onRound }})
	startClients(t, fed, nil)
	r.restart(t, fed)
	// Round 3 has been countersigned; its record is held back: restart
	// again, mid-round.
	select {
	case <-hold.held:
	case <-time.After(3 * time.Minute):
		t.Fatal("round 3 never reached its record")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fed.RestartCoordinator(ctx); err != nil {
		t.Fatal(err)
	}
	got := wait(t, fed)
	if got.Model != want.Model {
		t.Fatalf("the restarted study ended at %x, the uninterrupted one at %x", got.Model[:8], want.Model[:8])
	}
	if len(got.Rounds) != 2 || got.Rounds[0].Round != 3 || got.Rounds[0].Failed || got.Rounds[1].Failed {
		t.Fatalf("the last coordinator ran rounds %+v, want 3 and 4", got.Rounds)
	}
	for i, r := range got.Rounds {
		w := want.Rounds[2+i]
		if r.Parent != w.Parent || r.Model != w.Model || r.OptimizerAfter != w.OptimizerAfter {
			t.Errorf("round %d: %x -> %x, uninterrupted %x -> %x", r.Round, r.Parent[:4], r.Model[:4], w.Parent[:4], w.Model[:4])
		}
	}
	rep, b, err := fed.Verify(ctx, got.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 4 || len(studyRecords(t, b, st.ID)) != 5 {
		t.Fatalf("lineage of %d rounds, %d records of the study; want 4 and 5", len(rep.Rounds), len(studyRecords(t, b, st.ID)))
	}
}

// TestSecureRestartsKeepTheStudysKeyOnEveryRecord restarts the coordinator
// of a secure study at three points: once key setup is committed and
// round 1 is open (its updates held back at the hospitals), in the middle
// of round 2 (its decryption shares held back), and right after round 3
// is committed. Whatever each resumed coordinator does with the round it
// finds open, the regulator's report of the final model names the study's
// HE parameter set and collective key, the log holds one key setup, and
// every round record of the study (completed or failed) carries the HE
// parameter id and the key-setup record's collective-key hash: no record
// of a secure study reads as unencrypted.
func TestSecureRestartsKeepTheStudysKeyOnEveryRecord(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 4, 3, 3)
	st.RoundDeadline = 30 * time.Second
	updates, shares := newGate(), newGate()
	updates.close() // round 1's updates wait at the hospitals
	after3 := newRestartAfterRound(3)
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 3, Coordinator: func(cc *coordinator.Config) {
		cc.OnRound = func(r coordinator.RoundReport) {
			if r.Round == 1 {
				shares.close() // round 2's decryption shares wait at the hospitals
			}
			after3.onRound(r)
		}
	}})
	hooks := []grpc.DialOption{fedtest.Hook(fedtest.SubmitUpdate, updates.pass, nil), fedtest.Hook(fedtest.SubmitShare, shares.pass, nil)}
	for _, h := range fed.Sites() {
		startClient(t, fed, h, hooks...)
	}
	restart := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := fed.RestartCoordinator(ctx); err != nil {
			t.Fatalf("restart %s: %v", what, err)
		}
		t.Logf("coordinator restarted %s", what)
	}
	// 1. Key setup is on the log, round 1 is open, nothing uploaded yet.
	waitStatus(t, fed, 2*time.Minute, "round 1 open", func(s *pb.StudyStatus) bool { return s.Phase == "round_open" && s.Round == 1 })
	restart("after key setup, before round 1")
	updates.reopen()
	// 2. Round 2 is decrypting; no share has reached the coordinator.
	waitStatus(t, fed, 2*time.Minute, "round 2 decrypting", func(s *pb.StudyStatus) bool { return s.Phase == "decrypting" && s.Round == 2 })
	restart("mid-round 2, while decrypting")
	shares.reopen()
	// 3. Round 3 is committed.
	after3.restart(t, fed)
	res := wait(t, fed)
	if len(res.Rounds) != 1 || res.Rounds[0].Round != 4 || res.Rounds[0].Failed {
		t.Fatalf("the last coordinator ran %+v, want round 4 completed", res.Rounds)
	}
	if metric := metricValue(t, fed.Coordinator(), "fedledger_coordinator_key_setup_seconds"); metric != 0 {
		t.Fatalf("a resumed coordinator ran key setup again (%v s)", metric)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, b, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	var keySetup *audit.Record
	var rounds []uint64
	var roundRecs []*audit.Record
	for _, rec := range studyRecords(t, b, st.ID) {
		switch rec.Kind {
		case audit.KindKeySetupDone:
			if keySetup != nil {
				t.Fatal("two key setups on the log")
			}
			keySetup = rec
		case audit.KindRoundCompleted, audit.KindRoundFailed:
			rounds = append(rounds, rec.Round)
			roundRecs = append(roundRecs, rec)
			why := ""
			if i := slices.IndexFunc(rec.Hyperparameters, func(p audit.Param) bool { return p.Name == "failure" }); i >= 0 {
				why = ": " + rec.Hyperparameters[i].Value
			}
			t.Logf("round %d: %s%s", rec.Round, rec.Kind, why)
		}
	}
	if keySetup == nil || keySetup.HEParamsID != secure.Default.ID {
		t.Fatalf("key setup on the log: %+v", keySetup)
	}
	if !slices.Equal(rounds, []uint64{1, 2, 3, 4}) {
		t.Fatalf("the log holds rounds %v, want 1..4 once each", rounds)
	}
	for _, rec := range roundRecs {
		if rec.HEParamsID != secure.Default.ID || rec.CollectiveKeyHash != keySetup.CollectiveKeyHash {
			t.Errorf("round %d (%s) carries HE parameters %q and collective key %x; the study's are %q and %x",
				rec.Round, rec.Kind, rec.HEParamsID, rec.CollectiveKeyHash[:8], secure.Default.ID, keySetup.CollectiveKeyHash[:8])
		}
	}
	if rep.Mode != "secure" || rep.HEParams != secure.Default.ID || rep.CollectiveKey != hexOf(keySetup.CollectiveKeyHash) ||
		!slices.Equal(rep.KeyHolders, fed.Sites()) || len(rep.Rounds) < 2 {
		t.Fatalf("verify report: mode %s, HE parameters %q, collective key %s, key holders %v, %d rounds",
			rep.Mode, rep.HEParams, rep.CollectiveKey, rep.KeyHolders, len(rep.Rounds))
	}
}
