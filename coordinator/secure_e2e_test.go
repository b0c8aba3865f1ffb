package coordinator_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
	pb "github.com/fedledger/fedledger/proto"
)

// siteStudyDir is where fedtest's client of site keeps its key material
// for the study.
func siteStudyDir(t testing.TB, fed *fedtest.Federation, site, study string) string {
	t.Helper()
	kc, err := fed.ClientConfig(site)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(kc.DataDir, "sites", site, "studies", study)
}

// copyKeyDir copies a site's key directory (secret share and setup) to a
// fresh directory.
func copyKeyDir(t testing.TB, dir string) string {
	t.Helper()
	out := t.TempDir()
	for _, name := range []string{"share.key", "setup.bin"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestSecureStudyOverMTLS runs a secure study (collective key setup,
// encrypted signed updates, threshold decryption by t=3 of 4, every round
// countersigned by its decryptors and committed to a three-node audit log)
// over real gRPC + mTLS, and checks its outcome, its metrics, where the
// secrets live, and the regulator's verification.
func TestSecureStudyOverMTLS(t *testing.T) {
	rounds := 3
	if testing.Short() {
		rounds = 1 // see slowUnderRace
	}
	st := secureStudy(t, aggregation.FedAdam, rounds, 3, 3)
	dir := t.TempDir()
	fed := startFed(t, fedtest.Config{Dir: dir, Study: st, AuditNodes: 3})
	clients := startClients(t, fed, nil)
	res := wait(t, fed)
	if len(res.Rounds) != rounds {
		t.Fatalf("%d rounds, want %d", len(res.Rounds), rounds)
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 4 || len(r.Decryptors) != 3 || len(r.Countersignatures) != 3 {
			t.Fatalf("round %d: failed=%v (%s) contributors=%v decryptors=%v countersignatures=%d", r.Round, r.Failed, r.Reason, r.Contributors, r.Decryptors, len(r.Countersignatures))
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
	co := fed.Coordinator()
	for name, want := range map[string]float64{
		`fedledger_coordinator_rounds_total{outcome="aggregated"}`:         float64(rounds),
		`fedledger_coordinator_updates_total{result="accepted"}`:           4 * float64(rounds),
		`fedledger_coordinator_decryption_shares_total{result="accepted"}`: 3 * float64(rounds),
		`fedledger_coordinator_countersignatures_total{result="accepted"}`: 3 * float64(rounds),
		`fedledger_coordinator_sketches_total{result="accepted"}`:          4 * float64(rounds),
		`fedledger_coordinator_plaintext_mode`:                             0,
	} {
		if got := metricValue(t, co, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	// Each site's evaluation of the last round's start model, as it
	// reported it, is a gauge per site, and on the round record.
	fams, _ := co.Metrics().Gather()
	sites := map[string]bool{}
	for _, f := range fams {
		if f.GetName() != "fedledger_coordinator_site_test" {
			continue
		}
		for _, m := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			if l["model"] == "global" && l["metric"] == "accuracy" && m.GetGauge().GetValue() > 0 && m.GetGauge().GetValue() <= 1 {
				sites[l["site"]] = true
			}
		}
	}
	if len(sites) != 4 {
		t.Errorf("per-site accuracy gauges for %v, want the 4 hospitals", sites)
	}
	// Every contributor sketched: the decryptors checked each aggregate
	// without downloading a single contribution.
	for _, r := range res.Rounds {
		for _, d := range r.Decryptors {
			if got := registryValue(t, clients[d].Metrics(), "fedledger_client_aggregate_check_downloads_total"); got != 0 {
				t.Errorf("%s downloaded %v contributions to check aggregates", d, got)
			}
		}
	}
	if metricValue(t, co, "fedledger_coordinator_key_setup_seconds") <= 0 {
		t.Error("key setup duration not recorded")
	}
	// The coordinator stores ciphertexts (4 contributions, 1 aggregate and
	// 3 decryption shares a round) and no key material; every hospital
	// holds its secret share in a 0600 file.
	coordDir := filepath.Join(dir, "coordinator")
	cts, _ := filepath.Glob(filepath.Join(coordDir, "ciphertexts", "*"))
	if len(cts) != rounds*(4+1+3) {
		t.Errorf("coordinator stores %d ciphertext payloads, want %d", len(cts), rounds*(4+1+3))
	}
	filepath.WalkDir(coordDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".key") {
			t.Errorf("coordinator data dir holds key file %s", p)
		}
		return nil
	})
	for _, h := range train.Hospitals {
		share := filepath.Join(siteStudyDir(t, fed, h, st.ID), "share.key")
		if fi, err := os.Stat(share); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: secret share file: %v (%v)", h, fi, err)
		}
	}
	// The regulator's offline check names the parameter set, the key
	// holders and the collective key, and who decrypted and countersigned.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, _, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Mode != "secure" || rep.HEParams != secure.Default.ID || rep.Threshold != 3 || !slices.Equal(rep.KeyHolders, train.Hospitals) ||
		rep.CollectiveKey != hexOf(res.Rounds[0].CollectiveKey) || len(rep.Rounds) != rounds {
		t.Fatalf("verify report: mode %s, HE %q, t=%d, key holders %v, key %s (rounds say %x), %d rounds", rep.Mode, rep.HEParams, rep.Threshold,
			rep.KeyHolders, rep.CollectiveKey, res.Rounds[0].CollectiveKey, len(rep.Rounds))
	}
	for i, r := range rep.Rounds {
		if !slices.Equal(r.Decryptors, res.Rounds[i].Decryptors) || !slices.Equal(r.Countersigners, res.Rounds[i].Decryptors) {
			t.Errorf("round %d on the log: decryptors %v, countersigners %v", r.Round, r.Decryptors, r.Countersigners)
		}
		// Each contributor's evaluation of the round's parent model is on
		// the log, signed by it (the rules checked every signature).
		for _, h := range train.Hospitals {
			if acc, ok := r.Evaluations[h]["global_test_accuracy"]; !ok || acc != res.Rounds[i].ParentTest[h].Accuracy {
				t.Errorf("round %d on the log: %s's signed accuracy %v (%v), it reported %v", r.Round, h, acc, ok, res.Rounds[i].ParentTest[h].Accuracy)
			}
		}
	}
}

// TestSecureRoundSurvivesDropoutAfterUpload: N = 4, t = 3. One hospital
// uploads its round-1 update and vanishes; the three others (slower)
// upload after that. The round must still decrypt all four contributions
// (the vanished one's key is covered by the survivors' Shamir shares),
// with the three survivors as the active set and countersigners, and the
// next round must complete with them alone.
func TestSecureRoundSurvivesDropoutAfterUpload(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 2, 2, 3)
	st.RoundDeadline = 30 * time.Second
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1})
	vanish := []string{"va"}
	hooks := map[string][]grpc.DialOption{}
	for _, h := range train.Hospitals {
		if slices.Contains(vanish, h) {
			hooks[h] = []grpc.DialOption{fedtest.Hook(fedtest.SubmitUpdate, nil, func() {
				go fed.StopClient(h) // gone right after the receipt
			})}
		} else {
			var uploads atomic.Int32
			hooks[h] = []grpc.DialOption{fedtest.Hook(fedtest.SubmitUpdate, func() error {
				if uploads.Add(1) == 1 {
					time.Sleep(1500 * time.Millisecond) // upload after the others have vanished
				}
				return nil
			}, nil)}
		}
	}
	clients := startClients(t, fed, hooks)
	res := wait(t, fed)
	if len(res.Rounds) != 2 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	survivors := []string{"cleveland", "hungary", "switzerland"}
	r1, r2 := res.Rounds[0], res.Rounds[1]
	if r1.Failed || len(r1.Contributors) != 4 || !slices.Equal(r1.Decryptors, survivors) {
		t.Fatalf("round 1: failed=%v (%s) contributors=%v decryptors=%v", r1.Failed, r1.Reason, r1.Contributors, r1.Decryptors)
	}
	// va left before it could sketch: each decryptor downloaded its
	// contribution, and only that one, to check round 1's aggregate.
	for _, s := range survivors {
		if got := registryValue(t, clients[s].Metrics(), "fedledger_client_aggregate_check_downloads_total"); got != 1 {
			t.Errorf("%s downloaded %v contributions to check the aggregates, want va's alone", s, got)
		}
	}
	if r2.Failed || !slices.Equal(r2.Contributors, survivors) {
		t.Fatalf("round 2: failed=%v (%s) contributors=%v", r2.Failed, r2.Reason, r2.Contributors)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, _, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 2 || len(rep.Rounds[0].Sites) != 4 || !slices.Equal(rep.Rounds[0].Countersigners, survivors) {
		t.Fatalf("the log's rounds: %+v", rep.Rounds)
	}
}

// TestSecureRoundFailsWhenADecryptorVanishes: a member of the active set
// disconnects instead of giving its share. The round fails with the reason
// (the parent model stays; the log records the failure), and the next
// round decrypts with the others.
func TestSecureRoundFailsWhenADecryptorVanishes(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 2, 3, 3)
	st.RoundDeadline = 30 * time.Second
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1})
	startClients(t, fed, map[string][]grpc.DialOption{"hungary": {fedtest.Hook(fedtest.SubmitShare, func() error {
		go fed.StopClient("hungary")
		return context.Canceled
	}, nil)}})
	res := wait(t, fed)
	if len(res.Rounds) != 2 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	r1, r2 := res.Rounds[0], res.Rounds[1]
	if !r1.Failed || !strings.Contains(r1.Reason, `"hungary"`) || r1.Model != r1.Parent {
		t.Fatalf("round 1: failed=%v reason %q, want a failure naming hungary", r1.Failed, r1.Reason)
	}
	if r2.Failed || len(r2.Contributors) != 3 || slices.Contains(r2.Decryptors, "hungary") || r2.Parent != r1.Parent {
		t.Fatalf("round 2: failed=%v (%s) contributors=%v decryptors=%v", r2.Failed, r2.Reason, r2.Contributors, r2.Decryptors)
	}
	if r1.Model == r2.Model {
		t.Fatal("round 2 did not produce a new model")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []audit.Kind
	for _, rec := range studyRecords(t, b, st.ID) {
		kinds = append(kinds, rec.Kind)
		if rec.Kind == audit.KindRoundFailed && !slices.ContainsFunc(rec.Hyperparameters, func(p audit.Param) bool {
			return p.Name == "failure" && strings.Contains(p.Value, `"hungary"`)
		}) {
			t.Errorf("the failed round's record does not say why: %v", rec.Hyperparameters)
		}
	}
	if want := []audit.Kind{audit.KindStudyCreated, audit.KindKeySetupDone, audit.KindRoundFailed, audit.KindRoundCompleted}; !slices.Equal(kinds, want) {
		t.Fatalf("the log holds %v, want %v", kinds, want)
	}
}

// TestSecureServerRejectsBadCiphertextsOnTheWire: while round 1 is open, a
// second connection with cleveland's own certificate (the one bound at key
// setup) sends malformed, truncated, wrong-round, unsigned, mis-signed,
// plaintext and wrong-parent updates, made with cleveland's real key
// material, and a decryption share nobody asked for. Each gets its status
// code, none is counted, and the study then completes normally with
// cleveland's real update.
func TestSecureServerRejectsBadCiphertextsOnTheWire(t *testing.T) {
	st := secureStudy(t, aggregation.FedAvg, 1, 4, 3)
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ident, err := fed.PKI.Site("cleveland")
	if err != nil {
		t.Fatal(err)
	}
	api := rawAPI(t, fed, ident)
	signer := ident.TLSCert.PrivateKey.(ed25519.PrivateKey)
	_, _, initial, err := coordinator.InitialModel(st)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	attack := func() error {
		once.Do(func() {
			// The attacker holds a copy of cleveland's key material (the
			// real client keeps its own contributions beside the original).
			p, err := secure.LoadParticipant(copyKeyDir(t, siteStudyDir(t, fed, "cleveland", st.ID)), "cleveland")
			if err != nil {
				t.Error(err)
				return
			}
			good, err := p.Contribute(1, initial[:], make([]float64, st.Model.NumParams()), 199)
			if err != nil {
				t.Error(err)
				return
			}
			round2, _ := p.Contribute(2, initial[:], make([]float64, st.Model.NumParams()), 199)
			sign := func(round uint64, parent [32]byte, b []byte) []byte {
				c := audit.Contribution{Site: "cleveland", UpdateHash: sha256.Sum256(b), Samples: 199}
				return ed25519.Sign(signer, c.Message(st.ID, round, parent))
			}
			update := func(round uint64, parent [32]byte, b []byte, enc string, sig []byte) []*pb.Chunk {
				ch := chunk.Split(st.ID, round, b, chunk.DefaultSize)
				ch[0].Header = &pb.UpdateHeader{ParentSha256: parent[:], NumSamples: 199, Encoding: enc, Signature: sig, DataManifestSha256: make([]byte, 32)}
				return ch
			}
			garbage := bytes.Clone(good)
			copy(garbage[4:], "JUNK") // framing intact, envelope magic wrong
			plain, _ := aggregation.EncodeWeightedDelta(make([]float64, 14), make([]float64, 14), 1)
			share := chunk.Split(st.ID, 1, make([]byte, p.Setup.ShareSize()), chunk.DefaultSize)
			share[0].Share = &pb.ShareHeader{AggregateSha256: make([]byte, 32)}
			enc := secure.EncodingContribution
			for _, c := range []struct {
				name   string
				share  bool
				chunks []*pb.Chunk
				code   codes.Code
				msg    string
			}{
				{"plaintext update in a secure study", false, update(1, initial, plain, aggregation.EncodingWeightedDelta, sign(1, initial, plain)), codes.InvalidArgument, "encoding"},
				{"malformed ciphertext", false, update(1, initial, garbage, enc, sign(1, initial, garbage)), codes.InvalidArgument, "magic"},
				{"truncated ciphertext", false, update(1, initial, good[:len(good)-64], enc, sign(1, initial, good[:len(good)-64])), codes.InvalidArgument, "bytes"},
				{"envelopes of another round", false, update(1, initial, round2, enc, sign(1, initial, round2)), codes.InvalidArgument, "round 2"},
				{"unsigned contribution", false, update(1, initial, good, enc, nil), codes.InvalidArgument, "signature"},
				{"signed for another round", false, update(1, initial, good, enc, sign(2, initial, good)), codes.InvalidArgument, "signature"},
				{"signed for another parent", false, update(1, initial, good, enc, sign(1, [32]byte{}, good)), codes.InvalidArgument, "signature"},
				{"trained from another parent", false, update(1, [32]byte{1}, good, enc, sign(1, [32]byte{1}, good)), codes.FailedPrecondition, "parent"},
				{"update for the wrong round", false, update(2, initial, round2, enc, sign(2, initial, round2)), codes.FailedPrecondition, "round"},
				{"malformed decryption share", true, share, codes.InvalidArgument, "envelope"},
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
	startClients(t, fed, map[string][]grpc.DialOption{"cleveland": {fedtest.Hook(fedtest.SubmitUpdate, attack, nil)}})
	res := wait(t, fed)
	if len(res.Rounds) != 1 || res.Rounds[0].Failed || len(res.Rounds[0].Contributors) != 4 {
		t.Fatalf("round outcome %+v", res.Rounds)
	}
	co := fed.Coordinator()
	for name, want := range map[string]float64{
		`fedledger_coordinator_updates_total{result="accepted"}`:           4,
		`fedledger_coordinator_updates_total{result="rejected"}`:           9,
		`fedledger_coordinator_decryption_shares_total{result="accepted"}`: 3,
		`fedledger_coordinator_decryption_shares_total{result="rejected"}`: 1,
	} {
		if got := metricValue(t, co, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

// TestSecureClientRestartsFromItsKeyMaterial: a hospital's client process
// is stopped after round 1 and a new one (same certificate, same data
// directory) takes its place. It must load its secret share and the
// study's public setup from disk, without a second key setup, and keep
// contributing, decrypting and countersigning. (With a new certificate
// its peers and the log would refuse its signatures: identities are bound
// at key setup, see docs/DESIGN.md.)
func TestSecureClientRestartsFromItsKeyMaterial(t *testing.T) {
	slowUnderRace(t)
	st := secureStudy(t, aggregation.FedAvg, 3, 4, 4) // every round needs all four, and all four decrypt
	st.RoundDeadline = 30 * time.Second
	const site = "switzerland"
	var ref fedRef
	var shareBefore []byte
	restartErr := make(chan error, 1)
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1, Coordinator: func(cc *coordinator.Config) {
		cc.OnRound = func(r coordinator.RoundReport) {
			if r.Round == 1 {
				fed := ref.Load()
				// Before round 2 is announced: the process goes, a new
				// one starts on the same directory.
				fed.StopClient(site)
				shareBefore, _ = os.ReadFile(filepath.Join(siteStudyDir(t, fed, site, st.ID), "share.key"))
				_, err := fed.StartClient(site, nil)
				restartErr <- err
			}
		}
	}})
	ref.Store(fed)
	startClients(t, fed, nil)
	res := wait(t, fed)
	select {
	case err := <-restartErr:
		if err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatal("the client was not restarted")
	}
	if len(res.Rounds) != 3 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 4 || !slices.Contains(r.Decryptors, site) || !slices.ContainsFunc(r.Countersignatures, func(c audit.Countersignature) bool { return c.Site == site }) {
			t.Errorf("round %d: failed=%v (%s) contributors=%v decryptors=%v", r.Round, r.Failed, r.Reason, r.Contributors, r.Decryptors)
		}
	}
	shareAfter, err := os.ReadFile(filepath.Join(siteStudyDir(t, fed, site, st.ID), "share.key"))
	if err != nil || len(shareBefore) == 0 || !bytes.Equal(shareBefore, shareAfter) {
		t.Fatalf("the restarted client's secret share changed (or is missing: %v)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, b, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	keySetups := 0
	for _, rec := range studyRecords(t, b, st.ID) {
		if rec.Kind == audit.KindKeySetupDone {
			keySetups++
		}
	}
	if keySetups != 1 {
		t.Fatalf("%d key setups on the log, want 1", keySetups)
	}
}
