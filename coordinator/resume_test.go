package coordinator_test

import (
	"context"
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/fedtest"
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
