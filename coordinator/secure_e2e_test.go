package coordinator_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/client/train"
)

const (
	submitUpdate = "/fedledger.v1.Federation/SubmitUpdate"
	submitShare  = "/fedledger.v1.Federation/SubmitShare"
)

// hook is a client-side stream interceptor for fault injection: before
// runs before the stream opens (an error aborts the call), after runs once
// the server's reply has been received.
func hook(method string, before func() error, after func()) grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, m string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if m != method {
			return streamer(ctx, desc, cc, m, opts...)
		}
		if before != nil {
			if err := before(); err != nil {
				return nil, err
			}
		}
		cs, err := streamer(ctx, desc, cc, m, opts...)
		if err != nil || after == nil {
			return cs, err
		}
		return &afterRecv{ClientStream: cs, after: after}, nil
	})
}

type afterRecv struct {
	grpc.ClientStream
	after func()
}

func (s *afterRecv) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.after()
	}
	return err
}

// runClients starts one client per hospital with its own context and dial
// options and returns a wait function.
func (f *federation) runClients(opts map[string][]grpc.DialOption, cancels map[string]context.CancelFunc) func() {
	var wg sync.WaitGroup
	for _, h := range train.Hospitals {
		c := f.newClient(h, opts[h]...)
		ctx, cancel := context.WithCancel(context.Background())
		if cancels != nil {
			cancels[h] = cancel
		}
		wg.Add(1)
		go func() { defer wg.Done(); defer cancel(); c.Run(ctx) }()
	}
	return wg.Wait
}

// TestSecureStudyOverMTLS runs a secure study (collective key setup, encrypted
// signed updates, threshold decryption by t=3 of 4) over real gRPC + mTLS
// and checks its outcome, its metrics, and where the secrets live.
func TestSecureStudyOverMTLS(t *testing.T) {
	cfg := secureStudyConfig(t, aggregation.FedAdam, 3, 3, 3)
	f := startFederation(t, cfg)
	wait := f.runClients(nil, nil)
	res := f.wait()
	wait()
	if len(res.Rounds) != 3 {
		t.Fatalf("%d rounds, want 3", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 4 || len(r.Decryptors) != 3 {
			t.Fatalf("round %d: failed=%v (%s) contributors=%v decryptors=%v", r.Round, r.Failed, r.Reason, r.Contributors, r.Decryptors)
		}
	}
	spec, params, err := train.DecodeModel(res.ModelBytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range train.Hospitals {
		_, te, _ := train.LoadHeart(h, train.HeartSplitSeed)
		m, _ := train.Evaluate(spec, params, te)
		if rep, ok := res.FinalTest[h]; !ok || rep.Accuracy != m.Accuracy {
			t.Errorf("%s reported %+v, recomputed %+v", h, rep, m)
		}
	}
	for name, want := range map[string]float64{
		`fedledger_coordinator_rounds_total{outcome="aggregated"}`:          3,
		`fedledger_coordinator_updates_total{result="accepted"}`:            12,
		`fedledger_coordinator_decryption_shares_total{result="accepted"}`: 9,
		`fedledger_coordinator_plaintext_mode`:                              0,
	} {
		if got := metricValue(t, f.co, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if metricValue(t, f.co, "fedledger_coordinator_key_setup_seconds") <= 0 {
		t.Error("key setup duration not recorded")
	}
	// The coordinator stored ciphertexts (4 contributions and 1 aggregate
	// a round) and no key material; every hospital holds its secret share
	// in a 0600 file.
	cts, _ := filepath.Glob(filepath.Join(cfg.DataDir, "ciphertexts", "*"))
	if len(cts) != 15 {
		t.Errorf("coordinator stores %d ciphertext payloads, want 15", len(cts))
	}
	filepath.WalkDir(cfg.DataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".key") {
			t.Errorf("coordinator data dir holds key file %s", p)
		}
		return nil
	})
	for h, dir := range f.clientDirs {
		shares, _ := filepath.Glob(filepath.Join(dir, "sites", h, "studies", cfg.Study.ID, "share.key"))
		if len(shares) != 1 {
			t.Errorf("%s: no secret share file in %s", h, dir)
			continue
		}
		if fi, err := os.Stat(shares[0]); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: secret share file mode %v (%v)", h, fi.Mode().Perm(), err)
		}
	}
}

// TestSecureRoundSurvivesDropoutAfterUpload: N = 4, t = 2. Two hospitals
// upload their round-1 update and vanish; the two others (slower) upload
// after that. The round must still decrypt, with the two survivors as the
// active set, and the next round must complete with them alone.
func TestSecureRoundSurvivesDropoutAfterUpload(t *testing.T) {
	cfg := secureStudyConfig(t, aggregation.FedAvg, 2, 2, 2)
	cfg.Study.RoundDeadline = 30 * time.Second
	f := startFederation(t, cfg)
	vanish := []string{"hungary", "va"}
	cancels := map[string]context.CancelFunc{}
	var mu sync.Mutex
	opts := map[string][]grpc.DialOption{}
	for _, h := range train.Hospitals {
		var uploads atomic.Int32
		if slices.Contains(vanish, h) {
			opts[h] = []grpc.DialOption{hook(submitUpdate, nil, func() {
				mu.Lock()
				defer mu.Unlock()
				cancels[h]() // gone right after the receipt
			})}
		} else {
			opts[h] = []grpc.DialOption{hook(submitUpdate, func() error {
				if uploads.Add(1) == 1 {
					time.Sleep(1500 * time.Millisecond) // upload after the others have vanished
				}
				return nil
			}, nil)}
		}
	}
	mu.Lock()
	wait := f.runClients(opts, cancels)
	mu.Unlock()
	res := f.wait()
	wait()
	if len(res.Rounds) != 2 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	r1, r2 := res.Rounds[0], res.Rounds[1]
	if r1.Failed || len(r1.Contributors) != 4 || !slices.Equal(r1.Decryptors, []string{"cleveland", "switzerland"}) {
		t.Fatalf("round 1: failed=%v (%s) contributors=%v decryptors=%v", r1.Failed, r1.Reason, r1.Contributors, r1.Decryptors)
	}
	if r2.Failed || !slices.Equal(r2.Contributors, []string{"cleveland", "switzerland"}) {
		t.Fatalf("round 2: failed=%v (%s) contributors=%v", r2.Failed, r2.Reason, r2.Contributors)
	}
}

// TestSecureRoundFailsWhenADecryptorVanishes: a member of the active set
// disconnects instead of giving its share. The round fails with the reason
// (the parent model stays), and the next round decrypts with the others.
func TestSecureRoundFailsWhenADecryptorVanishes(t *testing.T) {
	cfg := secureStudyConfig(t, aggregation.FedAvg, 2, 3, 3)
	cfg.Study.RoundDeadline = 30 * time.Second
	f := startFederation(t, cfg)
	cancels := map[string]context.CancelFunc{}
	var mu sync.Mutex
	opts := map[string][]grpc.DialOption{"hungary": {hook(submitShare, func() error {
		mu.Lock()
		defer mu.Unlock()
		cancels["hungary"]()
		return context.Canceled
	}, nil)}}
	mu.Lock()
	wait := f.runClients(opts, cancels)
	mu.Unlock()
	res := f.wait()
	wait()
	if len(res.Rounds) != 2 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	r1, r2 := res.Rounds[0], res.Rounds[1]
	if !r1.Failed || !strings.Contains(r1.Reason, `"hungary"`) {
		t.Fatalf("round 1: failed=%v reason %q, want a failure naming hungary", r1.Failed, r1.Reason)
	}
	if r2.Failed || len(r2.Contributors) != 3 || slices.Contains(r2.Decryptors, "hungary") {
		t.Fatalf("round 2: failed=%v (%s) contributors=%v decryptors=%v", r2.Failed, r2.Reason, r2.Contributors, r2.Decryptors)
	}
	if r1.Model == r2.Model {
		t.Fatal("round 2 did not produce a new model")
	}
}
