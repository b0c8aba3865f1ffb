package coordinator_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"
	pb "github.com/fedledger/fedledger/proto"
)

// TestStatusAnswersAfterTheStudyEnded: with Config.Linger, the coordinator
// keeps answering StudyAdmin.Status once the study is over: the phase,
// the rounds, the final model's path (the file is that model) and every
// site's final test metrics, as the sites computed them. It still serves
// the final model, tells a hospital that connects late that the study is
// over, and refuses the status to a hospital.
func TestStatusAnswersAfterTheStudyEnded(t *testing.T) {
	finished := make(chan coordinator.StudyResult, 1)
	fed := startFed(t, fedtest.Config{Study: plainStudy(t, aggregation.FedAvg, 2, 4), AuditNodes: 1, Coordinator: func(cc *coordinator.Config) {
		cc.Linger = 5 * time.Minute // ended by the test's cleanup
		cc.OnFinish = func(res coordinator.StudyResult, err error) {
			if err != nil {
				t.Errorf("study ended with %v", err)
			}
			finished <- res
		}
	}})
	startClients(t, fed, nil)
	var res coordinator.StudyResult
	select {
	case res = <-finished:
	case <-time.After(3 * time.Minute):
		t.Fatal("the study did not finish")
	}
	// Every client has been told and has left; the coordinator lingers.
	for _, h := range fed.Sites() {
		if err := fed.ClientErr(h, time.Minute); err != nil {
			t.Fatalf("%s: %v", h, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := fed.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != "finished" || st.RoundsCompleted != 2 || st.RoundsFailed != 0 || st.Failure != "" || st.WaitingFor != "" ||
		[32]byte(st.LatestModelSha256) != res.Model {
		t.Fatalf("status after the end: %v", st)
	}
	// Nobody is connected any more (the coordinator sees each stream end
	// a moment after the client has left).
	waitStatus(t, fed, 10*time.Second, "no site connected", func(s *pb.StudyStatus) bool { return len(s.Connected) == 0 })
	b, err := os.ReadFile(st.FinalModelPath)
	if err != nil || sha256.Sum256(b) != res.Model {
		t.Fatalf("final model path %q: %v", st.FinalModelPath, err)
	}
	spec, params, err := model.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	var sites []string
	for _, m := range st.FinalTest {
		sites = append(sites, m.Site)
		_, te, _ := train.LoadHeart(m.Site, train.HeartSplitSeed)
		want, err := train.Evaluate(spec, params, te)
		if err != nil {
			t.Fatal(err)
		}
		if m.Test.Accuracy != want.Accuracy || m.Test.Auc != want.AUC || int(m.Test.N) != want.N || m.Test.Accuracy != res.FinalTest[m.Site].Accuracy {
			t.Errorf("%s's final test metrics in the status: %v; recomputed %+v", m.Site, m.Test, want)
		}
	}
	if !slices.Equal(sites, fed.Sites()) {
		t.Fatalf("final metrics from %v, want every site in order", sites)
	}
	// A hospital that connects now is told the study is over, at once
	// (not after retrying until it happens to win a race).
	startClient(t, fed, "cleveland")
	if err := fed.ClientErr("cleveland", 10*time.Second); err != nil {
		t.Fatalf("a late client: %v", err)
	}
	// The final model is still served.
	va, err := fed.PKI.Site("va")
	if err != nil {
		t.Fatal(err)
	}
	api := rawAPI(t, fed, va)
	s, err := api.FetchModel(ctx, &pb.FetchModelRequest{StudyId: res.Study, Sha256: res.Model[:]})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		ch, err := s.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("fetching the final model: %v", err)
		}
		got = append(got, ch.Data...)
	}
	if sha256.Sum256(got) != res.Model {
		t.Fatal("the final model served after the end is not the final model")
	}
	// Still answering, the same; and only to admins and observers.
	again, err := fed.Status(ctx)
	if err != nil || again.FinalModelPath != st.FinalModelPath || len(again.FinalTest) != 4 {
		t.Fatalf("status asked again: %v, %v", again, err)
	}
	conn, err := fed.Dial(va)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := pb.NewStudyAdminClient(conn).Status(ctx, &pb.StudyStatusRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a hospital asking for the status: %v, want PermissionDenied", err)
	}
}
