package client

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// TestCertificateFailure: handshake failures on certificates (the
// coordinator's TLS alert, or this site unable to verify the coordinator)
// are named; network and other errors are not.
func TestCertificateFailure(t *testing.T) {
	handshake := func(reason string) error {
		return status.Error(codes.Unavailable, `connection error: desc = "transport: authentication handshake failed: `+reason+`"`)
	}
	cases := []struct {
		err  error
		want string
	}{
		{handshake("remote error: tls: unknown certificate authority"), "remote error: tls: unknown certificate authority"},
		{handshake("remote error: tls: bad certificate"), "remote error: tls: bad certificate"},
		{handshake("remote error: tls: expired certificate"), "remote error: tls: expired certificate"},
		{handshake("remote error: tls: revoked certificate"), "remote error: tls: revoked certificate"},
		{handshake("tls: failed to verify certificate: x509: certificate signed by unknown authority"),
			"tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{handshake("tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2031-01-01T00:00:00Z is after 2030-01-01T00:00:00Z"),
			"tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time 2031-01-01T00:00:00Z is after 2030-01-01T00:00:00Z"},
		{fmt.Errorf("dial: %w", errors.New("x509: certificate is valid for coord.example, not 127.0.0.1")), "x509: certificate is valid for coord.example, not 127.0.0.1"},
		{nil, ""},
		{status.Error(codes.Unavailable, `connection error: desc = "transport: Error while dialing: dial tcp 127.0.0.1:1: connect: connection refused"`), ""},
		{status.Error(codes.Unavailable, "connection closed before server preface received"), ""},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), ""},
		{io.EOF, ""},
		{context.DeadlineExceeded, ""},
		{status.Error(codes.PermissionDenied, "coordinator: site-z is not an approved site of the study"), ""},
	}
	for _, tc := range cases {
		if got := certificateFailure(tc.err); got != tc.want {
			t.Errorf("certificateFailure(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

// TestPermanent: only the coordinator's refusal of this site ends Run at
// once.
func TestPermanent(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.PermissionDenied, "not approved"), true},
		{status.Error(codes.Unauthenticated, "no certificate"), true},
		{fmt.Errorf("session: %w", status.Error(codes.PermissionDenied, "not approved")), true},
		{status.Error(codes.Unavailable, "coordinator restarting"), false},
		{status.Error(codes.InvalidArgument, "bad chunk"), false},
		{status.Error(codes.Internal, "store failed"), false},
		{errors.New("remote error: tls: unknown certificate authority"), false},
		{io.EOF, false},
		{nil, false},
	}
	for _, tc := range cases {
		if got := permanent(tc.err); got != tc.want {
			t.Errorf("permanent(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// timeout is the test's context, ended after 20 s: a Run that retries
// where it should give up fails the test instead of hanging it.
func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// countingListener counts accepted connections, and with drop set closes
// every other one at once (a network failure, to the client).
type countingListener struct {
	net.Listener
	n    atomic.Int32
	drop atomic.Bool
}

func (l *countingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return c, err
		}
		if n := l.n.Add(1); l.drop.Load() && n%2 == 0 {
			c.Close()
			continue
		}
		return c, nil
	}
}

// serve runs a Federation server with creds on loopback until
// the test ends.
func serve(t *testing.T, creds credentials.TransportCredentials, srv pb.FederationServer) (string, *countingListener) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: lis}
	s := grpc.NewServer(grpc.Creds(creds))
	pb.RegisterFederationServer(s, srv)
	go s.Serve(cl)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), cl
}

// runClient is a site's client of the coordinator at addr, retrying fast.
func runClient(t *testing.T, pki *audittest.PKI, addr string, edit func(*Config)) *Client {
	t.Helper()
	cfg := siteConfig(pki, "site-a", t.TempDir())
	cfg.CoordinatorAddr, cfg.MinBackoff, cfg.MaxBackoff, cfg.CertFailures = addr, time.Millisecond, 5*time.Millisecond, 3
	cfg.AllowPlaintext = true
	if edit != nil {
		edit(&cfg)
	}
	c, err := newClient(cfg, &fakeLog{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestRunCertificates: Run gives up with ErrRefused after CertFailures
// connection attempts that fail on certificates, and keeps retrying on
// network errors.
func TestRunCertificates(t *testing.T) {
	pki := audittest.NewPKI(t)
	otherCA, err := tlsutil.NewCA("another consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCoord, err := otherCA.Issue("coord", tlsutil.RoleCoordinator, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		server credentials.TransportCredentials
		want   string
		exact  bool // every attempt fails on certificates
	}{
		// The coordinator trusts another CA: it rejects this site's
		// certificate in the handshake.
		{"the coordinator rejects this site's certificate", credentials.NewTLS(tlsutil.ServerConfig(pki.Coord, otherCA.Pool())),
			"remote error: tls: ", false},
		// The coordinator's certificate is from another CA.
		{"this site cannot verify the coordinator's certificate", credentials.NewTLS(tlsutil.ServerConfig(otherCoord, pki.CA.Pool())),
			"tls: failed to verify certificate: x509: certificate signed by unknown authority", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, lis := serve(t, tc.server, &scriptServer{})
			c := runClient(t, pki, addr, nil)
			err := c.Run(timeout(t))
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Run: %v, want %v", err, ErrRefused)
			}
			wantErr(t, err, "3 connection attempts failed on certificates", tc.want)
			// Each attempt is a handshake of its own; some of the
			// coordinator's refusals show as broken pipes, which
			// neither count nor clear the count.
			if n := lis.n.Load(); n < 3 || (tc.exact && n != 3) {
				t.Fatalf("%d connections, want %s3", n, map[bool]string{true: "", false: "at least "}[tc.exact])
			}
		})
	}

	t.Run("network errors between certificate failures", func(t *testing.T) {
		addr, lis := serve(t, credentials.NewTLS(tlsutil.ServerConfig(otherCoord, pki.CA.Pool())), &scriptServer{})
		lis.drop.Store(true)
		err := runClient(t, pki, addr, nil).Run(timeout(t))
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("Run: %v, want %v", err, ErrRefused)
		}
		wantErr(t, err, "3 connection attempts failed on certificates")
		if n := lis.n.Load(); n != 5 {
			t.Fatalf("%d connections, want 5: three failing on certificates, two dropped between them", n)
		}
	})

	t.Run("network errors are retried", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close()
		c := runClient(t, pki, addr, nil)
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if err := c.Run(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run with the coordinator down: %v, want it to retry until the context ends", err)
		}
	})
}

// scriptServer is a coordinator whose Participate runs script; it serves
// objects and takes uploads like the real one.
type scriptServer struct {
	pb.UnimplementedFederationServer
	script  func(stream grpc.BidiStreamingServer[pb.ClientMessage, pb.CoordinatorMessage]) error
	coord   *fakeCoord
	updates chan submitted
}

func (s *scriptServer) Participate(stream grpc.BidiStreamingServer[pb.ClientMessage, pb.CoordinatorMessage]) error {
	if s.script == nil {
		return status.Error(codes.Unimplemented, "no script")
	}
	return s.script(stream)
}

func (s *scriptServer) FetchModel(req *pb.FetchModelRequest, stream grpc.ServerStreamingServer[pb.Chunk]) error {
	b, err := s.coord.Fetch(stream.Context(), req.StudyId, req.Sha256, 0, 1<<30)
	if err != nil {
		return status.Error(codes.NotFound, err.Error())
	}
	for _, ch := range chunk.Split(req.StudyId, 0, b, 1024) {
		if err := stream.Send(ch); err != nil {
			return err
		}
	}
	return nil
}

func (s *scriptServer) SubmitUpdate(stream grpc.ClientStreamingServer[pb.Chunk, pb.SubmitReceipt]) error {
	var chunks []*pb.Chunk
	for {
		ch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		chunks = append(chunks, ch)
	}
	u, err := s.coord.receive(chunks)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	s.updates <- u
	return stream.SendAndClose(&pb.SubmitReceipt{StudyId: u.study, Round: u.round})
}

// TestRunSession: the session loop moves messages between the stream and
// the client's decisions: the Welcome's study checked and accepted or
// refused, train, countersign and evaluate tasks answered (over
// FetchModel and SubmitUpdate), refusals sent with their reason, and the
// end of the study ending Run.
func TestRunSession(t *testing.T) {
	pki := audittest.NewPKI(t)
	creds := credentials.NewTLS(tlsutil.ServerConfig(pki.Coord, pki.CA.Pool()))
	type stream = grpc.BidiStreamingServer[pb.ClientMessage, pb.CoordinatorMessage]
	welcome := func(s stream, id string, spec *pb.StudySpec) error {
		hello, err := s.Recv()
		if err != nil {
			return err
		}
		if hello.GetHello() == nil || hello.GetHello().NumTrain == 0 {
			return fmt.Errorf("first message %v", hello)
		}
		return s.Send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Welcome{Welcome: &pb.Welcome{ClientId: id, Study: spec}}})
	}

	t.Run("study refused", func(t *testing.T) {
		got := make(chan *pb.ClientMessage, 1)
		srv := &scriptServer{script: func(s stream) error {
			if err := welcome(s, "site-a", plaintextSpec()); err != nil {
				return err
			}
			m, err := s.Recv()
			got <- m
			return err
		}}
		addr, _ := serve(t, creds, srv)
		c := runClient(t, pki, addr, func(c *Config) { c.AllowPlaintext = false })
		err := c.Run(timeout(t))
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("Run: %v", err)
		}
		wantErr(t, err, "does not set allow_plaintext")
		if r := (<-got).GetRefusal(); r == nil || r.StudyId != studyID || !strings.Contains(r.Reason, "allow_plaintext") {
			t.Fatalf("the coordinator got %v, want the refusal with its reason", r)
		}
		if n := counter(t, c, "fedledger_client_study_refusals_total"); n != 1 {
			t.Fatalf("%v refusals counted", n)
		}
	})

	for _, tc := range []struct {
		name   string
		script func(s stream) error
		want   string
	}{
		{"the coordinator names another site", func(s stream) error { return welcome(s, "site-b", plaintextSpec()) },
			`the coordinator calls this site "site-b", its certificate says "site-a"`},
		{"the coordinator does not start with Welcome", func(s stream) error {
			if _, err := s.Recv(); err != nil {
				return err
			}
			return s.Send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Finished{Finished: &pb.StudyFinished{}}})
		}, "the coordinator did not start with Welcome"},
		{"the coordinator refuses this site", func(s stream) error {
			return status.Error(codes.PermissionDenied, "site-a is not an approved site")
		}, "the coordinator refused this site"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := serve(t, creds, &scriptServer{script: tc.script})
			err := runClient(t, pki, addr, nil).Run(timeout(t))
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("Run: %v, want %v", err, ErrRefused)
			}
			wantErr(t, err, tc.want)
		})
	}

	t.Run("a plaintext round", func(t *testing.T) {
		spec := plaintextSpec()
		mspec := specFrom(spec.Model)
		params, err := model.InitParams(mspec, 1)
		if err != nil {
			t.Fatal(err)
		}
		initial, err := model.Encode(mspec, params)
		if err != nil {
			t.Fatal(err)
		}
		srv := &scriptServer{coord: newFakeCoord(nil), updates: make(chan submitted, 1)}
		parent := srv.coord.put(initial)
		log := &fakeLog{}
		log.at(parent.Sha256, 0)
		got := make(chan *pb.ClientMessage, 10)
		srv.script = func(s stream) error {
			send := func(m *pb.CoordinatorMessage) error { return s.Send(m) }
			recv := func() (*pb.ClientMessage, error) {
				m, err := s.Recv()
				if err == nil {
					got <- m
				}
				return m, err
			}
			if err := welcome(s, "site-a", spec); err != nil {
				return err
			}
			if m, err := recv(); err != nil || m.GetAccepted() == nil {
				return fmt.Errorf("after Welcome: %v %v", m, err)
			}
			send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
			// A key setup in a plaintext study: refused, the session goes on.
			send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_KeySetup{KeySetup: keySetupTask(spec)}})
			if _, err := recv(); err != nil {
				return err
			}
			// A train task for a round the log does not have open: refused.
			send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Train{Train: &pb.TrainTask{StudyId: studyID, Round: 2,
				ParentSha256: parent.Sha256, ParentSize: parent.Size}}})
			if _, err := recv(); err != nil {
				return err
			}
			send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Train{Train: &pb.TrainTask{StudyId: studyID, Round: 1,
				ParentSha256: parent.Sha256, ParentSize: parent.Size}}})
			var u submitted
			select {
			case u = <-srv.updates:
			case <-s.Context().Done():
				return s.Context().Err()
			}
			// The round's outcome from this one update, as the coordinator
			// computes it.
			d, err := aggregation.DecodeWeightedDelta(u.payload, mspec.NumParams())
			if err != nil {
				return err
			}
			n := float64(u.header.NumSamples)
			agg := srv.coord.put(aggregation.EncodeSum(d, n))
			next, after, err := aggregation.NextModel(strategyOf(spec), params, nil, d, n)
			if err != nil {
				return err
			}
			out, _ := model.Encode(mspec, next)
			output := srv.coord.put(out)
			h := sha256.Sum256(u.payload)
			send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Countersign{Countersign: &pb.CountersignTask{StudyId: studyID, Round: 1,
				Parent: parent, Aggregate: agg, Output: output, OptimizerAfter: srv.coord.put(after),
				Contributions: []*pb.Contribution{{ClientId: "site-a", Sha256: h[:], Size: uint64(len(u.payload)), Signature: u.header.Signature,
					Samples: u.header.NumSamples, DataManifestSha256: u.header.DataManifestSha256}}}}})
			if _, err := recv(); err != nil {
				return err
			}
			// The same round's countersigning task naming another model.
			send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Countersign{Countersign: &pb.CountersignTask{StudyId: studyID, Round: 1,
				Parent: parent, Aggregate: agg, Output: parent, OptimizerAfter: srv.coord.put(after)}}})
			if _, err := recv(); err != nil {
				return err
			}
			send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Evaluate{Evaluate: &pb.EvaluateTask{StudyId: studyID, Round: 1,
				ModelSha256: output.Sha256, ModelSize: output.Size}}})
			if _, err := recv(); err != nil {
				return err
			}
			return send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Finished{Finished: &pb.StudyFinished{StudyId: studyID, RoundsCompleted: 1}}})
		}
		addr, _ := serve(t, creds, srv)
		c := runClient(t, pki, addr, nil)
		c.audit = log
		if err := c.Run(timeout(t)); err != nil {
			t.Fatalf("Run: %v", err)
		}
		close(got)
		var msgs []*pb.ClientMessage
		for m := range got {
			msgs = append(msgs, m)
		}
		if len(msgs) != 6 {
			t.Fatalf("the coordinator got %d messages, want 6: %v", len(msgs), msgs)
		}
		if r := msgs[1].GetRefusal(); r == nil || !strings.Contains(r.Reason, "not this client's secure study") {
			t.Fatalf("key setup in a plaintext study: %v", msgs[1])
		}
		if r := msgs[2].GetRefusal(); r == nil || r.Round != 2 || !strings.Contains(r.Reason, "round 2 is not open on the audit log") {
			t.Fatalf("train task for a round not open: %v", msgs[2])
		}
		if cs := msgs[3].GetCountersign(); cs == nil || cs.Round != 1 || len(cs.Signature) == 0 {
			t.Fatalf("countersigning task: %v", msgs[3])
		}
		if r := msgs[4].GetRefusal(); r == nil || !strings.Contains(r.Reason, "already countersigned") {
			t.Fatalf("countersigning task with another model: %v", msgs[4])
		}
		if e := msgs[5].GetEval(); e == nil || e.Test == nil || e.Test.N != uint64(c.test.Len()) {
			t.Fatalf("evaluation: %v", msgs[5])
		}
	})
}
