package coordinator

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

var (
	t0     = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	parent = [32]byte{1, 2, 3}
	four   = []string{"cleveland", "hungary", "switzerland", "va"}
)

func newTestRound(k int, live ...string) (*Round, []any) {
	return NewRound(RoundConfig{Study: "s", Round: 2, Parent: parent, Approved: four, MinClients: k, Deadline: t0.Add(time.Minute)}, live)
}

func upd(client string) Update {
	return Update{Client: client, Study: "s", Round: 2, Parent: parent, Hash: [32]byte{byte(len(client))}, Weight: 10}
}

func mustStep(t *testing.T, r *Round, ev any) []any {
	t.Helper()
	acts, err := r.Step(ev)
	if err != nil {
		t.Fatalf("%T: %v", ev, err)
	}
	return acts
}

func TestRoundAssignsTasksToLiveClients(t *testing.T) {
	_, acts := newTestRound(3, "va", "cleveland")
	want := []any{SendTask{"cleveland"}, SendTask{"va"}}
	if !reflect.DeepEqual(acts, want) {
		t.Fatalf("actions %v, want %v", acts, want)
	}
}

func TestRoundCompletesWhenAllLiveReported(t *testing.T) {
	r, _ := newTestRound(3, four...)
	for _, c := range []string{"va", "cleveland", "hungary"} {
		if acts := mustStep(t, r, Received{upd(c)}); acts != nil {
			t.Fatalf("closed early after %s: %v", c, acts)
		}
	}
	acts := mustStep(t, r, Received{upd("switzerland")})
	agg, ok := acts[0].(Aggregate)
	if !ok || len(agg.Updates) != 4 || agg.Updates[0].Client != "cleveland" || agg.Updates[3].Client != "va" {
		t.Fatalf("want Aggregate of 4 in client order, got %v", acts)
	}
}

// A client drops out mid-round: the round closes with the other three
// (K = 3) as soon as they have reported, without waiting for the deadline.
func TestRoundClientDropsOutMidRound(t *testing.T) {
	r, _ := newTestRound(3, four...)
	mustStep(t, r, Received{upd("cleveland")})
	mustStep(t, r, Left{"switzerland"})
	mustStep(t, r, Received{upd("hungary")})
	acts := mustStep(t, r, Received{upd("va")})
	agg, ok := acts[0].(Aggregate)
	if !ok || len(agg.Updates) != 3 {
		t.Fatalf("want Aggregate of 3, got %v", acts)
	}
	if got := r.Missing(); !reflect.DeepEqual(got, []string{"switzerland"}) {
		t.Fatalf("missing %v", got)
	}
}

// With K = 4 the same dropout fails the round at the deadline, and nothing
// is aggregated.
func TestRoundFailsBelowKAtDeadline(t *testing.T) {
	r, _ := newTestRound(4, four...)
	mustStep(t, r, Left{"switzerland"})
	for _, c := range []string{"cleveland", "hungary", "va"} {
		if acts := mustStep(t, r, Received{upd(c)}); acts != nil {
			t.Fatalf("round closed with %d < K updates: %v", 3, acts)
		}
	}
	if acts := mustStep(t, r, Tick{t0.Add(59 * time.Second)}); acts != nil {
		t.Fatalf("closed before the deadline: %v", acts)
	}
	acts := mustStep(t, r, Tick{t0.Add(time.Minute)})
	if f, ok := acts[0].(Fail); !ok || r.Phase() != Failed {
		t.Fatalf("want Fail, got %v", acts)
	} else {
		t.Log(f.Reason)
	}
	// A late update after the round closed is rejected.
	r2, _ := newTestRound(4, four...)
	mustStep(t, r2, Tick{t0.Add(2 * time.Minute)})
	if _, err := r2.Step(Received{upd("va")}); !errors.Is(err, ErrRoundClosed) {
		t.Fatalf("late update: %v", err)
	}
}

func TestRoundDeadlineWithEnoughUpdatesAggregates(t *testing.T) {
	r, _ := newTestRound(2, four...)
	mustStep(t, r, Received{upd("va")})
	mustStep(t, r, Received{upd("hungary")})
	acts := mustStep(t, r, Tick{t0.Add(time.Minute)})
	if agg, ok := acts[0].(Aggregate); !ok || len(agg.Updates) != 2 {
		t.Fatalf("want Aggregate of 2, got %v", acts)
	}
}

func TestRoundFailsEarlyWhenKUnreachable(t *testing.T) {
	r, _ := newTestRound(3, four...)
	mustStep(t, r, Refused{"va", "policy"})
	acts := mustStep(t, r, Refused{"hungary", "policy"})
	if _, ok := acts[0].(Fail); !ok {
		t.Fatalf("two refusals with K=3 of 4 must fail the round, got %v", acts)
	}
}

func TestRoundRejectsBadUpdates(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*Update)
		want error
	}{
		{"wrong study", func(u *Update) { u.Study = "other" }, ErrWrongStudy},
		{"wrong round", func(u *Update) { u.Round = 3 }, ErrWrongRound},
		{"stale round", func(u *Update) { u.Round = 1 }, ErrWrongRound},
		{"unknown client", func(u *Update) { u.Client = "mayo" }, ErrUnknownClient},
		{"wrong parent", func(u *Update) { u.Parent = [32]byte{9} }, ErrWrongParent},
		{"zero weight", func(u *Update) { u.Weight = 0 }, ErrBadUpdate},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newTestRound(1, four...)
			u := upd("va")
			tc.mod(&u)
			acts, err := r.Step(Received{u})
			if !errors.Is(err, tc.want) || acts != nil {
				t.Fatalf("got %v %v, want %v", acts, err, tc.want)
			}
			if len(r.Contributors()) != 0 || r.Closed() {
				t.Fatal("a rejected update changed the round")
			}
		})
	}
}

func TestRoundRejectsDuplicate(t *testing.T) {
	r, _ := newTestRound(4, four...)
	mustStep(t, r, Received{upd("va")})
	again := upd("va")
	again.Hash = [32]byte{42}
	if _, err := r.Step(Received{again}); !errors.Is(err, ErrDuplicate) {
		t.Fatalf("duplicate: %v", err)
	}
	if len(r.Contributors()) != 1 {
		t.Fatal("duplicate was counted")
	}
}

func TestRoundRejectsUnassignedClient(t *testing.T) {
	r, _ := newTestRound(1, "va")
	if _, err := r.Step(Received{upd("hungary")}); !errors.Is(err, ErrNotAssigned) {
		t.Fatalf("update from a client never given the task: %v", err)
	}
	// Once it connects it is assigned and may contribute.
	acts := mustStep(t, r, Joined{"hungary"})
	if !reflect.DeepEqual(acts, []any{SendTask{"hungary"}}) {
		t.Fatalf("join: %v", acts)
	}
	mustStep(t, r, Received{upd("hungary")})
}

func TestRoundUnknownClientCannotJoin(t *testing.T) {
	r, _ := newTestRound(1)
	if _, err := r.Step(Joined{"mayo"}); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("unknown client joined: %v", err)
	}
}
