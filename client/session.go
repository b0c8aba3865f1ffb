package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/version"
	pb "github.com/fedledger/fedledger/proto"
)

// errFinished ends Run successfully.
var errFinished = errors.New("study finished")

// ErrRefused: the coordinator, or this site's policy, rules out taking
// part; retrying cannot help.
var ErrRefused = errors.New("client: cannot take part")

// Run takes part until the coordinator says the study is over (nil), the
// context ends, or taking part is impossible: the coordinator refuses this
// site, this site refuses the study, or certificates keep failing the
// handshake (ErrRefused, naming why).
func (c *Client) Run(ctx context.Context) error {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(c.cfg.TLS)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)),
	}, c.cfg.DialOptions...)
	backoff := c.cfg.MinBackoff
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	certFailures := 0
	for {
		// A connection per attempt: on a shared one, gRPC answers the
		// calls after a failed handshake with that handshake's error and
		// reconnects on its own backoff (up to two minutes), so attempts
		// would not be handshakes and MinBackoff..MaxBackoff would not be
		// the reconnect delay.
		conn, err := grpc.NewClient(c.cfg.CoordinatorAddr, opts...)
		if err != nil {
			return fmt.Errorf("client: %w", err)
		}
		connected, err := c.session(ctx, pb.NewFederationClient(conn))
		conn.Close()
		switch {
		case errors.Is(err, errFinished):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, ErrRefused):
			return err
		case permanent(err):
			return fmt.Errorf("%w: the coordinator refused this site: %w", ErrRefused, err)
		}
		if cert := certificateFailure(err); cert != "" {
			certFailures++
			c.log.Error("TLS handshake with the coordinator failed on certificates", slog.String("reason", cert),
				slog.Int("attempt", certFailures), slog.Int("of", c.cfg.CertFailures))
			if certFailures >= c.cfg.CertFailures {
				return fmt.Errorf("%w: %d connection attempts failed on certificates (%s) since the last session; retrying cannot fix a certificate: "+
					"check this site's certificate and the consortium CA bundle, or ask the consortium whether it was revoked", ErrRefused, certFailures, cert)
			}
		}
		// Only a session clears the count: a failure that does not name a
		// certificate says nothing about it. Under TLS 1.3 the client's
		// handshake ends before the coordinator checks its certificate,
		// and the coordinator's refusal often shows as a broken pipe
		// rather than its alert.
		if connected {
			backoff, certFailures = c.cfg.MinBackoff, 0
		}
		wait := backoff/2 + time.Duration(rng.Int63n(int64(backoff)))
		c.log.Warn("connection to coordinator lost; retrying", slog.Any("err", err), slog.Duration("in", wait))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// permanent reports a coordinator's answer retrying cannot fix.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated:
		return true
	}
	return false
}

// certificateFailure names a TLS handshake that failed on certificates:
// the coordinator refusing this site's (a remote TLS alert: unknown CA,
// bad, expired or revoked certificate) or this site unable to verify the
// coordinator's. "" for anything else (network, coordinator down).
func certificateFailure(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	for _, s := range []string{"remote error: tls: ", "tls: failed to verify certificate", "x509: "} {
		if i := strings.Index(msg, s); i >= 0 {
			return strings.TrimRight(msg[i:], `"`)
		}
	}
	return ""
}

// session runs one Participate stream; connected reports whether it got as
// far as the Welcome.
func (c *Client) session(ctx context.Context, api pb.FederationClient) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.Participate(ctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Hello{Hello: &pb.Hello{
		ClientVersion: version.String(), Studies: c.cfg.Studies, NumTrain: uint64(c.train.Len()), NumTest: uint64(c.test.Len()),
	}}}); err != nil {
		return false, err
	}
	m, err := stream.Recv()
	if err != nil {
		return false, err
	}
	w := m.GetWelcome()
	if w == nil || w.Study == nil {
		return false, fmt.Errorf("%w: the coordinator did not start with Welcome", ErrRefused)
	}
	if w.ClientId != c.id {
		return false, fmt.Errorf("%w: the coordinator calls this site %q, its certificate says %q", ErrRefused, w.ClientId, c.id)
	}
	if reason := c.checkStudy(ctx, w.Study); reason != "" {
		c.metrics.refusals.Inc()
		c.log.Error("refusing study", slog.String("study", w.Study.StudyId), slog.String("reason", reason))
		stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Refusal{Refusal: &pb.TaskRefusal{StudyId: w.Study.StudyId, Reason: reason}}})
		stream.CloseSend()
		return true, fmt.Errorf("%w: %s", ErrRefused, reason)
	}
	// A Send that fails with io.EOF means the coordinator has ended the
	// stream; what it sent before (a study already finished tells a late
	// site so right after Welcome) and why it ended are read by Recv.
	send := func(m *pb.ClientMessage) error {
		if err := stream.Send(m); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		return nil
	}
	if err := send(&pb.ClientMessage{Msg: &pb.ClientMessage_Accepted{Accepted: &pb.StudyAccepted{StudyId: w.Study.StudyId}}}); err != nil {
		return true, err
	}
	c.join(w.Study)
	c.metrics.connected.Set(1)
	defer c.metrics.connected.Set(0)
	c.log.Info("joined study", slog.String("study", w.Study.StudyId), slog.String("as", w.ClientId),
		slog.String("mode", w.Study.Mode), slog.String("strategy", w.Study.Strategy))
	if w.Study.Mode == modePlaintext {
		c.log.Warn("PLAINTEXT MODE: this hospital's updates are readable by the coordinator (allowed by allow_plaintext)")
	}
	coord := grpcCoordinator{api: api, chunkSize: c.cfg.ChunkSize}
	refuse := func(study string, round uint64, what string, err error) error {
		c.log.Error(what+" refused", slog.String("study", study), slog.Uint64("round", round), slog.Any("err", err))
		return send(&pb.ClientMessage{Msg: &pb.ClientMessage_Refusal{Refusal: &pb.TaskRefusal{StudyId: study, Round: round, Reason: err.Error()}}})
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return true, err
		}
		var out []*pb.ClientMessage
		switch msg := m.Msg.(type) {
		case *pb.CoordinatorMessage_Train:
			if err := c.trainRound(ctx, coord, msg.Train); err != nil {
				c.metrics.rounds.WithLabelValues("failed").Inc()
				if err := refuse(msg.Train.StudyId, msg.Train.Round, "round task", err); err != nil {
					return true, err
				}
			} else {
				c.metrics.rounds.WithLabelValues("submitted").Inc()
			}
		case *pb.CoordinatorMessage_KeySetup:
			out, err = c.onKeySetupTask(msg.KeySetup)
		case *pb.CoordinatorMessage_PeerKey:
			out, err = c.onPeerKey(msg.PeerKey)
		case *pb.CoordinatorMessage_ShareBox:
			out, err = c.onShareBox(msg.ShareBox)
		case *pb.CoordinatorMessage_Decrypt:
			t0 := time.Now()
			if err := c.decryptRound(ctx, coord, msg.Decrypt); err != nil {
				c.metrics.shares.WithLabelValues("refused").Inc()
				err = refuse(msg.Decrypt.StudyId, msg.Decrypt.Round, "decryption share", err)
				if err != nil {
					return true, err
				}
			} else {
				c.metrics.shares.WithLabelValues("given").Inc()
				c.metrics.phase.WithLabelValues("decryption_share").Observe(time.Since(t0).Seconds())
			}
		case *pb.CoordinatorMessage_Sketch:
			t0 := time.Now()
			sk, err := c.sketchRound(msg.Sketch)
			if err != nil {
				c.metrics.sketches.WithLabelValues("refused").Inc()
				if err := refuse(msg.Sketch.StudyId, msg.Sketch.Round, "sketch", err); err != nil {
					return true, err
				}
				continue
			}
			c.metrics.sketches.WithLabelValues("given").Inc()
			c.metrics.phase.WithLabelValues("sketch").Observe(time.Since(t0).Seconds())
			out = []*pb.ClientMessage{sk}
		case *pb.CoordinatorMessage_Bound:
			t0 := time.Now()
			b, err := c.boundRound(ctx, coord, msg.Bound)
			if err != nil {
				if err := refuse(msg.Bound.StudyId, msg.Bound.Round, "norm check", err); err != nil {
					return true, err
				}
				continue
			}
			c.metrics.phase.WithLabelValues("norm_check").Observe(time.Since(t0).Seconds())
			out = []*pb.ClientMessage{b}
		case *pb.CoordinatorMessage_Countersign:
			t0 := time.Now()
			cs, err := c.countersign(ctx, coord, msg.Countersign)
			if err != nil {
				c.metrics.countersigs.WithLabelValues("refused").Inc()
				if err := refuse(msg.Countersign.StudyId, msg.Countersign.Round, "countersignature", err); err != nil {
					return true, err
				}
				continue
			}
			c.metrics.countersigs.WithLabelValues("given").Inc()
			c.metrics.phase.WithLabelValues("countersign").Observe(time.Since(t0).Seconds())
			out = []*pb.ClientMessage{{Msg: &pb.ClientMessage_Countersign{Countersign: cs}}}
		case *pb.CoordinatorMessage_Evaluate:
			met, personal, err := c.evaluate(ctx, coord, msg.Evaluate)
			if err != nil {
				c.log.Error("evaluation failed", slog.Any("err", err))
				continue
			}
			out = []*pb.ClientMessage{{Msg: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{
				StudyId: msg.Evaluate.StudyId, Round: msg.Evaluate.Round, ModelSha256: msg.Evaluate.ModelSha256, Test: toPB(met), Personal: personal}}}}
		case *pb.CoordinatorMessage_Finished:
			f := msg.Finished
			c.log.Info("study finished", slog.Uint64("rounds", f.RoundsCompleted), slog.String("failure", f.Failure))
			stream.CloseSend()
			return true, errFinished
		}
		if err != nil {
			// Key setup: this site refuses, which fails key setup with
			// the reason; it starts over if the study is set up again.
			c.setup = nil
			if err := refuse(c.study.StudyId, 0, "key setup", err); err != nil {
				return true, err
			}
			continue
		}
		for _, m := range out {
			if err := send(m); err != nil {
				return true, err
			}
		}
	}
}

// join makes s the client's study once it has accepted it. Another study
// than the one it had starts with no key material or round state in
// memory (a restarted client loads its key material from data_dir).
func (c *Client) join(s *pb.StudySpec) {
	if c.study == nil || c.study.StudyId != s.StudyId {
		c.keys, c.setup, c.rounds, c.personal, c.initial = nil, nil, roundCache{}, nil, nil
	}
	c.study = s
	c.fit, c.eval, c.evalSplit = c.train, c.test, splitTest
	if f := s.ValidationFraction; f > 0 {
		c.fit, c.eval = holdOut(c.train, f, trialSplitSeed)
		c.evalSplit = splitValidation
		c.log.Info("tuning trial: training on part of the training split, evaluating on the rest; the test split is not used",
			slog.String("study", s.StudyId), slog.Int("fit", c.fit.Len()), slog.Int("validation", c.eval.Len()))
	}
}

// The splits a site evaluates on, as its evaluation statements name them.
const (
	splitTest       = "test"
	splitValidation = "val"
)

// trialSplitSeed fixes which rows a tuning trial holds out: the same in
// every trial, so trials are scored on the same data.
const trialSplitSeed = 0x7e57

// grpcCoordinator is the Coordinator over the Federation service.
type grpcCoordinator struct {
	api       pb.FederationClient
	chunkSize int
}

func (g grpcCoordinator) Fetch(ctx context.Context, study string, sum []byte, size uint64, limit int64) ([]byte, error) {
	if len(sum) != 32 {
		return nil, fmt.Errorf("announced hash has %d bytes", len(sum))
	}
	if size > uint64(limit) {
		return nil, fmt.Errorf("announced object of %d bytes exceeds the limit of %d", size, limit)
	}
	stream, err := g.api.FetchModel(ctx, &pb.FetchModelRequest{StudyId: study, Sha256: sum})
	if err != nil {
		return nil, err
	}
	var a *chunk.Assembler
	for {
		ch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if a == nil {
			a, err = chunk.NewAssembler(ch, limit, study, sum)
		} else {
			err = a.Add(ch)
		}
		if err != nil {
			return nil, fmt.Errorf("object %x: %w", sum[:8], err)
		}
	}
	if a == nil {
		return nil, fmt.Errorf("object %x: empty stream", sum[:8])
	}
	b, _, err := a.Bytes()
	if err != nil {
		return nil, fmt.Errorf("object %x: %w", sum[:8], err)
	}
	return b, nil
}

// upload streams chunks on one call and returns the server's verdict.
func upload(cs grpc.ClientStream, chunks []*pb.Chunk) error {
	for _, ch := range chunks {
		if err := cs.SendMsg(ch); err != nil {
			break // the server's verdict comes from CloseAndRecv
		}
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	return cs.RecvMsg(new(pb.SubmitReceipt))
}

func (g grpcCoordinator) SubmitUpdate(ctx context.Context, chunks []*pb.Chunk) error {
	up, err := g.api.SubmitUpdate(ctx)
	if err != nil {
		return err
	}
	return upload(up, chunks)
}

func (g grpcCoordinator) SubmitShare(ctx context.Context, chunks []*pb.Chunk) error {
	up, err := g.api.SubmitShare(ctx)
	if err != nil {
		return err
	}
	return upload(up, chunks)
}
