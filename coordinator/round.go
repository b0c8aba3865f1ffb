package coordinator

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Errors of the round protocol, testable with errors.Is. The server maps
// them to gRPC status codes in one place (status.go).
var (
	ErrUnknownClient = errors.New("coordinator: client is not approved for this study")
	ErrWrongStudy    = errors.New("coordinator: update is for another study")
	ErrWrongRound    = errors.New("coordinator: update is for another round")
	ErrWrongParent   = errors.New("coordinator: update was trained from another parent model")
	ErrDuplicate     = errors.New("coordinator: client already submitted an update this round")
	ErrRoundClosed   = errors.New("coordinator: round is closed")
	ErrNotAssigned   = errors.New("coordinator: client was not given this round's task")
	ErrBadUpdate     = errors.New("coordinator: malformed update")
)

// RoundConfig fixes what one round accepts.
type RoundConfig struct {
	Study      string
	Round      uint64
	Parent     [32]byte
	Approved   []string
	MinClients int
	Deadline   time.Time
}

// Update is one client's contribution as the round sees it. Payload is
// opaque here (plaintext or ciphertext).
type Update struct {
	Client  string
	Study   string
	Round   uint64
	Parent  [32]byte
	Hash    [32]byte
	Weight  uint64
	Payload []byte
}

// Events a Round takes.
type (
	// Joined: a client connected (or reconnected).
	Joined struct{ Client string }
	// Left: a client's connection ended.
	Left struct{ Client string }
	// Refused: a client declined this round's task.
	Refused struct{ Client, Reason string }
	// Received: a complete update arrived.
	Received struct{ Update Update }
	// Tick: time passed.
	Tick struct{ Now time.Time }
)

// Actions a Round asks its driver to take.
type (
	// SendTask: give the client this round's train task.
	SendTask struct{ Client string }
	// Aggregate: the round closed with these updates, in client-id order.
	Aggregate struct{ Updates []Update }
	// Fail: the round closed without aggregating.
	Fail struct{ Reason string }
)

// Phase of a round.
type Phase int

// Phases.
const (
	Open Phase = iota
	Aggregating
	Failed
)

// Round is the deterministic state machine of one round. It is not safe
// for concurrent use; the driver owns it.
type Round struct {
	cfg      RoundConfig
	phase    Phase
	approved map[string]bool
	live     map[string]bool
	assigned map[string]bool
	refused  map[string]string
	updates  map[string]Update
}

// NewRound opens a round; live lists the clients connected now, each of
// which is sent the task.
func NewRound(cfg RoundConfig, live []string) (*Round, []any) {
	r := &Round{
		cfg: cfg, approved: map[string]bool{}, live: map[string]bool{}, assigned: map[string]bool{},
		refused: map[string]string{}, updates: map[string]Update{},
	}
	for _, c := range cfg.Approved {
		r.approved[c] = true
	}
	var acts []any
	for _, c := range sorted(live) {
		acts = append(acts, r.join(c)...)
	}
	return r, acts
}

// Phase is the round's current phase.
func (r *Round) Phase() Phase { return r.phase }

// Closed reports whether the round has ended (aggregating or failed).
func (r *Round) Closed() bool { return r.phase != Open }

// Contributors lists the clients whose updates were accepted, sorted.
func (r *Round) Contributors() []string { return sortedKeys(r.updates) }

// Missing lists the approved clients that were given the task but did not
// report, sorted.
func (r *Round) Missing() []string {
	var out []string
	for c := range r.assigned {
		if _, ok := r.updates[c]; !ok {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// Step applies one event. An error rejects the event (the update, usually)
// without changing the round.
func (r *Round) Step(ev any) ([]any, error) {
	switch e := ev.(type) {
	case Joined:
		if !r.approved[e.Client] {
			return nil, fmt.Errorf("%w: %q", ErrUnknownClient, e.Client)
		}
		return r.join(e.Client), nil
	case Left:
		delete(r.live, e.Client)
		return r.check(), nil
	case Refused:
		if !r.approved[e.Client] {
			return nil, fmt.Errorf("%w: %q", ErrUnknownClient, e.Client)
		}
		if _, done := r.updates[e.Client]; !done && r.phase == Open {
			r.refused[e.Client] = e.Reason
		}
		return r.check(), nil
	case Received:
		if err := r.accept(e.Update); err != nil {
			return nil, err
		}
		return r.check(), nil
	case Tick:
		if r.phase != Open || e.Now.Before(r.cfg.Deadline) {
			return nil, nil
		}
		if len(r.updates) >= r.cfg.MinClients {
			return r.aggregate(), nil
		}
		return r.fail(fmt.Sprintf("deadline passed with %d of the %d updates needed", len(r.updates), r.cfg.MinClients)), nil
	}
	return nil, fmt.Errorf("coordinator: unknown round event %T", ev)
}

func (r *Round) join(c string) []any {
	if !r.approved[c] {
		return nil
	}
	r.live[c] = true
	_, reported := r.updates[c]
	if r.phase != Open || reported {
		return nil
	}
	r.assigned[c] = true
	delete(r.refused, c) // a reconnecting client may try again
	return []any{SendTask{Client: c}}
}

// accept validates an update against the round; it changes nothing on error.
func (r *Round) accept(u Update) error {
	switch {
	case !r.approved[u.Client]:
		return fmt.Errorf("%w: %q", ErrUnknownClient, u.Client)
	case u.Study != r.cfg.Study:
		return fmt.Errorf("%w: %q, this is %q", ErrWrongStudy, u.Study, r.cfg.Study)
	case u.Round != r.cfg.Round:
		return fmt.Errorf("%w: round %d, this is round %d", ErrWrongRound, u.Round, r.cfg.Round)
	case r.phase != Open:
		return fmt.Errorf("%w: round %d no longer takes updates", ErrRoundClosed, r.cfg.Round)
	case u.Parent != r.cfg.Parent:
		return fmt.Errorf("%w: %x, round %d starts from %x", ErrWrongParent, u.Parent[:6], r.cfg.Round, r.cfg.Parent[:6])
	case !r.assigned[u.Client]:
		return fmt.Errorf("%w: %q", ErrNotAssigned, u.Client)
	case u.Weight == 0:
		return fmt.Errorf("%w: zero sample count", ErrBadUpdate)
	}
	if prev, ok := r.updates[u.Client]; ok {
		return fmt.Errorf("%w: %q already sent %x", ErrDuplicate, u.Client, prev.Hash[:6])
	}
	r.updates[u.Client] = u
	delete(r.refused, u.Client)
	return nil
}

// check closes the round once nothing more can be gained by waiting: every
// live assigned client has reported (and there are at least K updates), or
// K can no longer be reached because too many approved clients refused.
func (r *Round) check() []any {
	if r.phase != Open {
		return nil
	}
	pending := 0
	for c := range r.live {
		if _, ok := r.updates[c]; !ok && r.assigned[c] {
			if _, no := r.refused[c]; !no {
				pending++
			}
		}
	}
	if pending == 0 && len(r.updates) >= r.cfg.MinClients {
		return r.aggregate()
	}
	possible := len(r.approved) - len(r.refused)
	if possible < r.cfg.MinClients {
		return r.fail(fmt.Sprintf("only %d approved clients can still contribute (%d refused), %d needed", possible, len(r.refused), r.cfg.MinClients))
	}
	return nil
}

func (r *Round) aggregate() []any {
	r.phase = Aggregating
	ups := make([]Update, 0, len(r.updates))
	for _, c := range sortedKeys(r.updates) {
		ups = append(ups, r.updates[c])
	}
	return []any{Aggregate{Updates: ups}}
}

func (r *Round) fail(reason string) []any {
	r.phase = Failed
	return []any{Fail{Reason: reason}}
}

func sorted(s []string) []string {
	out := append([]string(nil), s...)
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
