package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
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
	spec, params, err := model.Decode(res.ModelBytes)
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
		`fedledger_coordinator_rounds_total{outcome="aggregated"}`:         3,
		`fedledger_coordinator_updates_total{result="accepted"}`:           12,
		`fedledger_coordinator_decryption_shares_total{result="accepted"}`: 9,
		`fedledger_coordinator_plaintext_mode`:                             0,
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

// loadStudyKey reads the collective public key a hospital stored at key
// setup.
func loadStudyKey(t *testing.T, dir, site, study string) *rlwe.PublicKey {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "sites", site, "studies", study, "keys.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Key []byte `json:"collective_public_key"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	params, _ := secure.Default.Params()
	pk := rlwe.NewPublicKey(params)
	if err := pk.UnmarshalBinary(f.Key); err != nil {
		t.Fatal(err)
	}
	return pk
}

// upload streams chunks on a new SubmitUpdate or SubmitShare call.
func upload(ctx context.Context, api pb.FederationClient, share bool, chunks []*pb.Chunk) error {
	var s interface {
		Send(*pb.Chunk) error
		CloseAndRecv() (*pb.SubmitReceipt, error)
	}
	var err error
	if share {
		s, err = api.SubmitShare(ctx)
	} else {
		s, err = api.SubmitUpdate(ctx)
	}
	if err != nil {
		return err
	}
	for _, c := range chunks {
		if s.Send(c) != nil {
			break
		}
	}
	_, err = s.CloseAndRecv()
	return err
}

// TestSecureServerRejectsBadCiphertextsOnTheWire: while round 1 is open, a
// second connection holding a valid certificate for an approved hospital
// sends malformed, truncated, wrong-round, unsigned and plaintext updates,
// and a decryption share nobody asked for. Each gets a clear status, none
// is counted, and the study then completes normally.
func TestSecureServerRejectsBadCiphertextsOnTheWire(t *testing.T) {
	cfg := secureStudyConfig(t, aggregation.FedAvg, 1, 4, 2)
	f := startFederation(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	study := cfg.Study.ID
	ident, err := f.ca.Issue("cleveland", tlsutil.RoleClient, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	api := dial(t, f.addr, tlsutil.ClientConfig(ident, f.ca.Pool(), "127.0.0.1"))
	signer := ident.TLSCert.PrivateKey.(ed25519.PrivateKey)
	var once sync.Once
	attack := func() error {
		once.Do(func() {
			f.mu.Lock()
			dir := f.clientDirs["cleveland"]
			f.mu.Unlock()
			pk := loadStudyKey(t, dir, "cleveland", study)
			cts, err := secure.Encrypt(secure.Default, pk, make([]float64, cfg.Study.Model.NumParams()), 199)
			if err != nil {
				t.Error(err)
				return
			}
			good, _ := secure.SealPayload(secure.KindContribution, secure.Default, study, 1, cts)
			round2, _ := secure.SealPayload(secure.KindContribution, secure.Default, study, 2, cts)
			sign := func(round uint64, p []byte) []byte {
				c := audit.Contribution{Site: "cleveland", UpdateHash: sha256.Sum256(p), Samples: 199}
				return ed25519.Sign(signer, c.Message(study, round, audit.Hash{}))
			}
			update := func(round uint64, p []byte, enc string, sig []byte) []*pb.Chunk {
				ch := chunk.Split(study, round, p, chunk.DefaultSize)
				ch[0].Header = &pb.UpdateHeader{ParentSha256: make([]byte, 32), NumSamples: 199, Encoding: enc, Signature: sig, DataManifestSha256: make([]byte, 32)}
				return ch
			}
			garbage := append([]byte(nil), good...)
			copy(garbage[4:], "JUNK") // framing intact, envelope magic wrong
			plain, _ := aggregation.EncodeWeightedDelta(make([]float64, 14), make([]float64, 14), 1)
			shareSize, _ := secure.PayloadSize(secure.KindDecryptionShare, secure.Default, study, 1)
			share := chunk.Split(study, 1, make([]byte, shareSize), chunk.DefaultSize)
			share[0].Share = &pb.ShareHeader{AggregateSha256: make([]byte, 32)}
			for _, c := range []struct {
				name   string
				share  bool
				chunks []*pb.Chunk
				code   codes.Code
				msg    string
			}{
				{"plaintext update in a secure study", false, update(1, plain, aggregation.EncodingWeightedDelta, sign(1, plain)), codes.InvalidArgument, "encoding"},
				{"malformed ciphertext", false, update(1, garbage, secure.EncodingContribution, sign(1, garbage)), codes.InvalidArgument, "magic"},
				{"truncated ciphertext", false, update(1, good[:len(good)-64], secure.EncodingContribution, sign(1, good[:len(good)-64])), codes.InvalidArgument, "bytes"},
				{"envelopes of another round", false, update(1, round2, secure.EncodingContribution, sign(1, round2)), codes.InvalidArgument, "round 2"},
				{"unsigned contribution", false, update(1, good, secure.EncodingContribution, nil), codes.InvalidArgument, "signature"},
				{"signed for another round", false, update(1, good, secure.EncodingContribution, sign(2, good)), codes.InvalidArgument, "signature"},
				{"update for the wrong round", false, update(2, round2, secure.EncodingContribution, sign(2, round2)), codes.FailedPrecondition, "round"},
				{"malformed decryption share", true, share, codes.InvalidArgument, "decryption share"},
			} {
				err := upload(ctx, api, c.share, c.chunks)
				if status.Code(err) != c.code || !strings.Contains(err.Error(), c.msg) {
					t.Errorf("%s: got %v, want %v mentioning %q", c.name, err, c.code, c.msg)
				} else {
					t.Logf("%s: %v", c.name, status.Convert(err).Message())
				}
			}
		})
		return nil
	}
	wait := f.runClients(map[string][]grpc.DialOption{"cleveland": {hook(submitUpdate, attack, nil)}}, nil)
	res := f.wait()
	wait()
	if len(res.Rounds) != 1 || res.Rounds[0].Failed || len(res.Rounds[0].Contributors) != 4 {
		t.Fatalf("round outcome %+v", res.Rounds)
	}
	if got := metricValue(t, f.co, `fedledger_coordinator_updates_total{result="accepted"}`); got != 4 {
		t.Errorf("%v updates accepted, want 4", got)
	}
}

// TestSecureClientRestartsFromItsKeyMaterial: a hospital's client process
// is stopped after round 1 and a new one (same certificate, same data
// directory) takes its place. It must load its secret share and the
// collective key from disk and keep contributing and decrypting. (With a
// new certificate its peers would refuse its contributions: identities are
// bound at key setup, see docs/DESIGN.md.)
func TestSecureClientRestartsFromItsKeyMaterial(t *testing.T) {
	cfg := secureStudyConfig(t, aggregation.FedAvg, 3, 4, 4) // every round needs all four, and all four decrypt
	cfg.Study.RoundDeadline = 30 * time.Second
	restarted := make(chan struct{})
	var stop context.CancelFunc
	var mu sync.Mutex
	cfg.OnRound = func(r coordinator.RoundReport) {
		mu.Lock()
		defer mu.Unlock()
		if r.Round == 1 {
			stop()
			close(restarted)
		}
	}
	f := startFederation(t, cfg)
	dir := t.TempDir()
	swiss := f.clientTLS("switzerland", tlsutil.RoleClient)
	var wg sync.WaitGroup
	for _, h := range train.Hospitals {
		var c interface{ Run(context.Context) error }
		if h == "switzerland" {
			c = f.newClientWith(h, swiss, dir)
		} else {
			c = f.newClient(h)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if h == "switzerland" {
			mu.Lock()
			stop = cancel
			mu.Unlock()
		}
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
	}
	<-restarted
	again := f.newClientWith("switzerland", swiss, dir)
	wg.Add(1)
	go func() { defer wg.Done(); again.Run(context.Background()) }()
	res := f.wait()
	wg.Wait()
	if len(res.Rounds) != 3 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	for _, r := range res.Rounds[1:] {
		if r.Failed || len(r.Contributors) != 4 || !slices.Contains(r.Decryptors, "switzerland") {
			t.Errorf("round %d: failed=%v (%s) contributors=%v decryptors=%v", r.Round, r.Failed, r.Reason, r.Contributors, r.Decryptors)
		}
	}
}
