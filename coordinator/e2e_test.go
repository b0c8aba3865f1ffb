package coordinator_test

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"maps"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// TestFedAdamOverMTLS is the foundation's acceptance test: four hospital
// clients and a coordinator over real gRPC + mTLS on loopback, every round
// countersigned by the hospitals and committed to a three-node audit log;
// FedAdam on logistic regression reaches a mean per-hospital test
// accuracy >= 0.70 within 20 rounds, and the regulator verifies the final
// model's 20-round lineage offline.
func TestFedAdamOverMTLS(t *testing.T) {
	fed := startFed(t, fedtest.Config{Study: plainStudy(t, aggregation.FedAdam, 20, 4), AuditNodes: 3})
	startClients(t, fed, nil)
	res := wait(t, fed)
	if len(res.Rounds) != 20 {
		t.Fatalf("%d rounds, want 20", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed || len(r.Contributors) != 4 || len(r.Countersignatures) != 4 {
			t.Fatalf("round %d: failed=%v (%s) contributors=%v countersignatures=%d", r.Round, r.Failed, r.Reason, r.Contributors, len(r.Countersignatures))
		}
	}
	// Check the final model ourselves against every hospital's test split,
	// and against what the clients reported.
	spec, params, err := model.Decode(res.ModelBytes)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(res.ModelBytes) != res.Model {
		t.Fatal("final model bytes do not hash to the reported model")
	}
	var mean float64
	for _, h := range train.Hospitals {
		_, te, _ := train.LoadHeart(h, train.HeartSplitSeed)
		m, err := train.Evaluate(spec, params, te)
		if err != nil {
			t.Fatal(err)
		}
		if rep, ok := res.FinalTest[h]; !ok || rep.Accuracy != m.Accuracy || rep.N != m.N {
			t.Errorf("%s reported %+v, recomputed %+v", h, rep, m)
		}
		t.Logf("%-12s test accuracy %.3f (n=%d)", h, m.Accuracy, m.N)
		mean += m.Accuracy / float64(len(train.Hospitals))
	}
	t.Logf("mean per-hospital test accuracy after 20 FedAdam rounds: %.4f", mean)
	co := fed.Coordinator()
	for name, want := range map[string]float64{
		`fedledger_coordinator_rounds_total{outcome="aggregated"}`:         20,
		`fedledger_coordinator_updates_total{result="accepted"}`:           80,
		`fedledger_coordinator_update_bytes_total`:                         80 * 8 * 14, // n·Δ: 8 bytes for each of 14 parameters
		`fedledger_coordinator_countersignatures_total{result="accepted"}`: 80,
		`fedledger_coordinator_plaintext_mode`:                             1,
		`fedledger_coordinator_key_setup_seconds`:                          0,
		`fedledger_coordinator_task_refusals_total`:                        0,
	} {
		if got := metricValue(t, co, name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if mean < 0.70 {
		t.Fatalf("mean per-hospital accuracy %.4f < 0.70", mean)
	}
	// The regulator's offline check: 20 rounds from the initial model,
	// each contributed and countersigned by all four, not encrypted.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, _, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Verified || len(rep.Rounds) != 20 || rep.Mode != "plaintext" || rep.HEParams != "" || !slices.Equal(rep.Sites, fed.Sites()) {
		t.Fatalf("verify report: verified=%v rounds=%d mode=%s he=%q sites=%v", rep.Verified, len(rep.Rounds), rep.Mode, rep.HEParams, rep.Sites)
	}
	for _, r := range rep.Rounds {
		if !slices.Equal(r.Countersigners, fed.Sites()) || !slices.Equal(r.Sites, fed.Sites()) {
			t.Fatalf("round %d on the log: contributors %v, countersigners %v", r.Round, r.Sites, r.Countersigners)
		}
	}
}

// TestClientDiesMidStudy: with K = 3, one hospital's client is stopped
// once round 2 is committed; every later round completes with the other
// three, the stopped site is no contributor, and the audit log holds the
// five rounds with exactly those contributors and countersigners.
func TestClientDiesMidStudy(t *testing.T) {
	st := plainStudy(t, aggregation.FedAvg, 5, 3)
	st.RoundDeadline = 5 * time.Second
	const after, gone = 2, "switzerland"
	var ref fedRef
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1, Coordinator: func(cc *coordinator.Config) {
		cc.OnRound = func(r coordinator.RoundReport) {
			if r.Round == after {
				ref.Load().StopClient(gone) // before round 3 is announced
			}
		}
	}})
	ref.Store(fed)
	startClients(t, fed, nil)
	res := wait(t, fed)
	if len(res.Rounds) != 5 {
		t.Fatalf("%d rounds", len(res.Rounds))
	}
	for _, r := range res.Rounds {
		if r.Failed {
			t.Fatalf("round %d failed: %s", r.Round, r.Reason)
		}
		want := train.Hospitals
		if r.Round > after {
			want = slices.DeleteFunc(slices.Clone(train.Hospitals), func(s string) bool { return s == gone })
		}
		if !slices.Equal(r.Contributors, want) {
			t.Errorf("round %d: contributors %v, want %v", r.Round, r.Contributors, want)
		}
	}
	if _, ok := res.FinalTest[gone]; ok || len(res.FinalTest) != 3 {
		t.Errorf("final evaluations from %v, want the three remaining sites", slices.Sorted(maps.Keys(res.FinalTest)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, _, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 5 {
		t.Fatalf("the log's lineage has %d rounds, want 5", len(rep.Rounds))
	}
	for i, r := range rep.Rounds {
		if !slices.Equal(r.Sites, res.Rounds[i].Contributors) || slices.Contains(r.Countersigners, gone) != (r.Round <= after) {
			t.Errorf("round %d on the log: contributors %v, countersigners %v", r.Round, r.Sites, r.Countersigners)
		}
	}
}

// TestServerRefusesBadCallers: wrong roles, unapproved ids and certificates
// from another CA are refused on every RPC; health checking answers on the
// same mutual-TLS port.
func TestServerRefusesBadCallers(t *testing.T) {
	st := plainStudy(t, aggregation.FedAvg, 1, 1)
	st.Clients = []string{"va"}
	fed := startFed(t, fedtest.Config{Study: st})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mayo, err := fed.PKI.Issue("mayo", tlsutil.RoleClient)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsutil.NewCA("another consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue("va", tlsutil.RoleClient, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		id   *tlsutil.Identity
		code codes.Code
	}{
		"observer role":     {fed.PKI.Regulator, codes.PermissionDenied},
		"admin role":        {fed.PKI.Admin, codes.PermissionDenied},
		"unapproved client": {mayo, codes.PermissionDenied},
		"another CA":        {foreign, codes.Unavailable},
	} {
		api := rawAPI(t, fed, tc.id)
		var err error
		if s, e := api.FetchModel(ctx, &pb.FetchModelRequest{StudyId: st.ID, Sha256: make([]byte, 32)}); e != nil {
			err = e
		} else {
			_, err = s.Recv()
		}
		if status.Code(err) != tc.code {
			t.Errorf("%s: FetchModel: got %v, want %v", name, err, tc.code)
		}
		p, err := api.Participate(ctx)
		if err == nil {
			p.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Hello{Hello: &pb.Hello{}}})
			_, err = p.Recv()
		}
		if status.Code(err) != tc.code {
			t.Errorf("%s: Participate: got %v, want %v", name, err, tc.code)
		}
		for _, share := range []bool{false, true} {
			if err := upload(ctx, api, share, chunk.Split(st.ID, 1, []byte("x"), 1024)); status.Code(err) != tc.code {
				t.Errorf("%s: upload (share %v): got %v, want %v", name, share, err, tc.code)
			}
		}
	}
	// The coordinator counts the handshakes it refused, by reason (a Go
	// client whose certificate is not from a CA the server asks for sends
	// none: no_certificate). The caller may see its call fail before the
	// server has counted it.
	for deadline := time.Now().Add(10 * time.Second); sumSeries(t, fed.Coordinator().Metrics(), "fedledger_coordinator_refused_handshakes_total") < 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the handshakes from another CA were not counted")
		}
	}
	va, err := fed.PKI.Site("va")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(fed.Addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsutil.ClientConfig(va, fed.PKI.CA.Pool(), "127.0.0.1"))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hr, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: pb.Federation_ServiceDesc.ServiceName})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}
	// Let the study end: the one approved client runs it.
	startClient(t, fed, "va")
	if res := wait(t, fed); len(res.Rounds) != 1 || res.Rounds[0].Failed {
		t.Fatalf("rounds %+v", res.Rounds)
	}
}

// upload streams chunks on a new SubmitUpdate or SubmitShare call and
// returns the coordinator's verdict.
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

// TestServerRejectsBadUpdatesOnTheWire: the test is the study's one
// hospital and speaks the protocol itself over the real stream. It sends
// hand-made updates: a chunk whose data does not match the announced
// hash, updates for the wrong round and study, of the wrong size, without
// a header, unsigned, signed for other samples or another parent, without
// a data manifest. Each gets its status code and none is counted; then a
// good one completes the round and its duplicate is refused. The test
// countersigns the round's outcome as a hospital would (only its
// signature makes the round recordable), answers the final evaluation, and
// the round is on the audit log, vouched for by that countersignature.
func TestServerRejectsBadUpdatesOnTheWire(t *testing.T) {
	st := plainStudy(t, aggregation.FedAvg, 1, 1)
	st.Clients = []string{"va"}
	fed := startFed(t, fedtest.Config{Study: st, AuditNodes: 1})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	va, err := fed.PKI.Site("va")
	if err != nil {
		t.Fatal(err)
	}
	api := rawAPI(t, fed, va)
	signer := va.TLSCert.PrivateKey.(ed25519.PrivateKey)
	sctx, hangUp := context.WithCancel(ctx)
	defer hangUp()
	stream, err := api.Participate(sctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Hello{Hello: &pb.Hello{}}})
	if m, err := stream.Recv(); err != nil || m.GetWelcome() == nil {
		t.Fatalf("welcome: %v %v", m, err)
	}
	stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Accepted{Accepted: &pb.StudyAccepted{StudyId: st.ID}}})
	m, err := stream.Recv()
	if err != nil || m.GetTrain() == nil {
		t.Fatalf("train task: %v %v", m, err)
	}
	task := m.GetTrain()
	n := st.Model.NumParams()
	local := make([]float64, n)
	for i := range local {
		local[i] = 0.01
	}
	payload, err := aggregation.EncodeWeightedDelta(local, make([]float64, n), 10)
	if err != nil {
		t.Fatal(err)
	}
	manifest := sha256.Sum256([]byte("va's data"))

	send := func(study string, round uint64, mutate func([]*pb.Chunk)) error {
		chunks := chunk.Split(study, round, payload, 16)
		stmt := audit.Contribution{Site: "va", UpdateHash: sha256.Sum256(payload), Samples: 10, DataManifest: manifest}
		chunks[0].Header = &pb.UpdateHeader{ParentSha256: task.ParentSha256, NumSamples: 10, Encoding: aggregation.EncodingWeightedDelta,
			Signature: ed25519.Sign(signer, stmt.Message(study, round, audit.Hash(task.ParentSha256))), DataManifestSha256: manifest[:]}
		if mutate != nil {
			mutate(chunks)
		}
		return upload(ctx, api, false, chunks)
	}
	for _, c := range []struct {
		name   string
		study  string
		round  uint64
		mutate func([]*pb.Chunk)
		code   codes.Code
	}{
		{"hash mismatch", st.ID, 1, func(c []*pb.Chunk) { c[2].Data = append([]byte{0xff}, c[2].Data[1:]...) }, codes.InvalidArgument},
		{"wrong round", st.ID, 2, nil, codes.FailedPrecondition},
		{"wrong study", "other-study", 1, nil, codes.InvalidArgument},
		{"wrong size", st.ID, 1, func(c []*pb.Chunk) { c[0].TotalSize = 9 }, codes.InvalidArgument},
		{"no header", st.ID, 1, func(c []*pb.Chunk) { c[0].Header = nil }, codes.InvalidArgument},
		{"wrong encoding", st.ID, 1, func(c []*pb.Chunk) { c[0].Header.Encoding = "secure-v1" }, codes.InvalidArgument},
		{"unsigned", st.ID, 1, func(c []*pb.Chunk) { c[0].Header.Signature = nil }, codes.InvalidArgument},
		{"signed for other samples", st.ID, 1, func(c []*pb.Chunk) { c[0].Header.NumSamples = 11 }, codes.InvalidArgument},
		{"signed for another data manifest", st.ID, 1, func(c []*pb.Chunk) { c[0].Header.DataManifestSha256 = make([]byte, 32) }, codes.InvalidArgument},
		{"no data manifest", st.ID, 1, func(c []*pb.Chunk) { c[0].Header.DataManifestSha256 = nil }, codes.InvalidArgument},
		{"trained from another parent", st.ID, 1, func(c []*pb.Chunk) { c[0].Header.ParentSha256 = make([]byte, 32) }, codes.FailedPrecondition},
		{"zero samples", st.ID, 1, func(c []*pb.Chunk) { c[0].Header.NumSamples = 0 }, codes.InvalidArgument},
	} {
		if err := send(c.study, c.round, c.mutate); status.Code(err) != c.code {
			t.Errorf("%s: got %v, want %v", c.name, err, c.code)
		} else {
			t.Logf("%s: %v", c.name, status.Convert(err).Message())
		}
	}
	co := fed.Coordinator()
	if got := metricValue(t, co, `fedledger_coordinator_updates_total{result="rejected"}`); got != 12 {
		t.Errorf("%v updates counted as rejected, want 12", got)
	}
	if got, ok := lookupValue(t, co.Metrics(), `fedledger_coordinator_updates_total{result="accepted"}`); ok && got != 0 {
		t.Errorf("%v bad updates accepted", got)
	}
	if err := send(st.ID, 1, nil); err != nil {
		t.Fatalf("good update rejected: %v", err)
	}
	// The round closed with the good update; the same update again is
	// refused.
	if err := send(st.ID, 1, nil); status.Code(err) != codes.FailedPrecondition && status.Code(err) != codes.AlreadyExists {
		t.Errorf("resubmission: got %v", err)
	}
	// Countersign the outcome as a hospital would (without recomputing
	// it), and answer the final evaluation so the study ends promptly.
	countersigned := false
	for {
		m, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if cs := m.GetCountersign(); cs != nil {
			out := audit.Outcome{Study: cs.StudyId, Round: cs.Round, Parent: audit.Hash(cs.Parent.Sha256), Aggregate: audit.Hash(cs.Aggregate.Sha256),
				Output: audit.Hash(cs.Output.Sha256), OptimizerAfter: audit.Hash(cs.OptimizerAfter.Sha256)}
			if cs.OptimizerBefore != nil {
				out.OptimizerBefore = audit.Hash(cs.OptimizerBefore.Sha256)
			}
			stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Countersign{Countersign: &pb.Countersignature{StudyId: cs.StudyId, Round: cs.Round,
				OutputSha256: cs.Output.Sha256, Signature: ed25519.Sign(signer, audit.CountersignMessage("va", out))}}})
			countersigned = true
		}
		if e := m.GetEvaluate(); e != nil {
			stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{StudyId: e.StudyId, ModelSha256: e.ModelSha256, Test: &pb.Metrics{N: 1}}}})
		}
		if f := m.GetFinished(); f != nil {
			if f.Failure != "" {
				t.Fatalf("study failed: %s", f.Failure)
			}
			hangUp()
			break
		}
	}
	res := wait(t, fed)
	if !countersigned || len(res.Rounds) != 1 || res.Rounds[0].Failed || !slices.Equal(res.Rounds[0].Contributors, []string{"va"}) {
		t.Fatalf("countersigned %v, round outcome %+v", countersigned, res.Rounds)
	}
	if got := metricValue(t, co, `fedledger_coordinator_updates_total{result="accepted"}`); got != 1 {
		t.Errorf("%v updates accepted, want 1", got)
	}
	rep, _, err := fed.Verify(ctx, res.Model)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) != 1 || !slices.Equal(rep.Rounds[0].Countersigners, []string{"va"}) || rep.Rounds[0].Contributions[0].DataManifest != hexOf(manifest) {
		t.Fatalf("the log's round: %+v", rep.Rounds)
	}
}
