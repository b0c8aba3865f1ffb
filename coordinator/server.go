package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/tlsutil"
	"github.com/fedledger/fedledger/internal/version"
	pb "github.com/fedledger/fedledger/proto"
)

var errNotClient = errors.New("coordinator: caller's certificate does not have the client role")

// server implements the Federation gRPC service on top of the Coordinator.
type server struct {
	pb.UnimplementedFederationServer
	c *Coordinator
}

// session is one client's live Participate stream.
type session struct {
	client string
	out    chan *pb.CoordinatorMessage
	ctx    context.Context
	cancel context.CancelFunc
}

// push queues a message for the client without ever blocking the study
// goroutine; a client too slow to drain 64 messages is disconnected.
func (s *session) push(m *pb.CoordinatorMessage) {
	select {
	case s.out <- m:
	default:
		s.cancel()
	}
}

// authorize returns the verified identity of an approved client, and logs
// and refuses anyone else.
func (c *Coordinator) authorize(ctx context.Context, rpc string) (tlsutil.Peer, error) {
	p, err := tlsutil.PeerFromContext(ctx)
	if err == nil && p.Role != tlsutil.RoleClient {
		err = fmt.Errorf("%w: %q is %q", errNotClient, p.ID, p.Role)
	} else if err == nil && !c.approved[p.ID] {
		err = fmt.Errorf("%w: %q", ErrUnknownClient, p.ID)
	}
	if err != nil {
		c.log.Warn("refused caller", slog.String("rpc", rpc), slog.String("peer", p.ID), slog.Any("err", err))
		return p, toStatus(err)
	}
	return p, nil
}

func (c *Coordinator) register(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.sessions[s.client]; old != nil {
		old.cancel() // a newer connection replaces the old one
	}
	c.sessions[s.client] = s
}

func (c *Coordinator) unregister(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions[s.client] == s {
		delete(c.sessions, s.client)
	}
}

func (c *Coordinator) sessionCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sessions)
}

func (c *Coordinator) studySpec() *pb.StudySpec {
	st := c.cfg.Study
	hidden := make([]uint32, len(st.Model.Hidden))
	for i, h := range st.Model.Hidden {
		hidden[i] = uint32(h)
	}
	t := st.Training
	return &pb.StudySpec{
		StudyId: st.ID,
		Model:   &pb.ModelSpec{Kind: st.Model.Kind, Inputs: uint32(st.Model.Inputs), Hidden: hidden},
		Training: &pb.TrainingParams{Optimizer: t.Optimizer, LearningRate: t.LearningRate, BatchSize: uint32(t.BatchSize),
			Epochs: uint32(t.Epochs), LocalSteps: uint32(t.LocalSteps), ProxMu: t.ProxMu, Seed: t.Seed},
		Rounds: uint32(st.Rounds), MinClients: uint32(st.MinClients), Strategy: st.Strategy.Name, Mode: "plaintext",
	}
}

// Participate is the client's control stream.
func (s *server) Participate(stream pb.Federation_ParticipateServer) error {
	c := s.c
	p, err := c.authorize(stream.Context(), "Participate")
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return status.Error(codes.InvalidArgument, "coordinator: the first message on Participate must be Hello")
	}
	if err := stream.Send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Welcome{Welcome: &pb.Welcome{
		CoordinatorVersion: version.String(), ClientId: p.ID, Study: c.studySpec(),
	}}}); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sess := &session{client: p.ID, out: make(chan *pb.CoordinatorMessage, 64), ctx: ctx, cancel: cancel}
	c.mu.Lock()
	finished := c.finished
	c.mu.Unlock()
	if finished != nil {
		return stream.Send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Finished{Finished: finished}})
	}
	c.register(sess)
	defer func() {
		c.unregister(sess)
		c.post(evLeft{sess})
	}()
	if !c.post(evJoined{sess}) {
		return toStatus(errStudyOver)
	}

	recvErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			m, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			switch msg := m.Msg.(type) {
			case *pb.ClientMessage_Refusal:
				c.post(evRefusal{client: p.ID, m: msg.Refusal})
			case *pb.ClientMessage_Eval:
				c.post(evEval{client: p.ID, m: msg.Eval})
			}
		}
	}()
	defer wg.Wait()
	for {
		select {
		case m := <-sess.out:
			if err := stream.Send(m); err != nil {
				return err
			}
			if m.GetFinished() != nil {
				return nil
			}
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return status.Error(codes.Aborted, "coordinator: connection replaced or closed")
		}
	}
}

// FetchModel streams a stored model.
func (s *server) FetchModel(req *pb.FetchModelRequest, stream pb.Federation_FetchModelServer) error {
	c := s.c
	if _, err := c.authorize(stream.Context(), "FetchModel"); err != nil {
		return err
	}
	if req.StudyId != c.cfg.Study.ID {
		return toStatus(fmt.Errorf("%w: %q", ErrWrongStudy, req.StudyId))
	}
	if len(req.Sha256) != 32 {
		return status.Errorf(codes.InvalidArgument, "coordinator: model hash has %d bytes, want 32", len(req.Sha256))
	}
	b, err := c.store.Get([32]byte(req.Sha256))
	if err != nil {
		return toStatus(err)
	}
	for _, ch := range chunk.Split(req.StudyId, 0, b, c.cfg.ChunkSize) {
		if err := stream.Send(ch); err != nil {
			return err
		}
	}
	return nil
}

// SubmitUpdate receives one update, checks it fully, and hands it to the
// round; the receipt is sent only once the round has accepted it.
func (s *server) SubmitUpdate(stream pb.Federation_SubmitUpdateServer) error {
	c := s.c
	p, err := c.authorize(stream.Context(), "SubmitUpdate")
	if err != nil {
		return err
	}
	u, hdr, err := c.receiveUpdate(p.ID, stream)
	if err != nil {
		c.metrics.updates.WithLabelValues("rejected").Inc()
		c.log.Warn("update rejected", slog.String("client", p.ID), slog.Any("err", err))
		return toStatus(err)
	}
	reply := make(chan error, 1)
	if !c.post(evUpdate{u: u, hdr: hdr, reply: reply}) {
		return toStatus(errStudyOver)
	}
	select {
	case err = <-reply:
	case <-c.stopped:
		err = errStudyOver
	}
	if err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&pb.SubmitReceipt{StudyId: u.Study, Round: u.Round, ContentSha256: u.Hash[:]})
}

func (c *Coordinator) receiveUpdate(client string, stream pb.Federation_SubmitUpdateServer) (Update, *pb.UpdateHeader, error) {
	var u Update
	first, err := stream.Recv()
	if err != nil {
		return u, nil, err
	}
	hdr := first.Header
	if hdr == nil {
		return u, nil, fmt.Errorf("%w: first chunk has no header", ErrBadUpdate)
	}
	if hdr.Encoding != aggregation.EncodingWeightedDelta {
		return u, nil, fmt.Errorf("%w: encoding %q, this study takes %q", ErrBadUpdate, hdr.Encoding, aggregation.EncodingWeightedDelta)
	}
	if len(hdr.ParentSha256) != 32 {
		return u, nil, fmt.Errorf("%w: parent hash has %d bytes", ErrBadUpdate, len(hdr.ParentSha256))
	}
	want := int64(8 * c.cfg.Study.Model.NumParams())
	if first.TotalSize != uint64(want) {
		return u, nil, fmt.Errorf("%w: %d bytes, a %s update is %d", ErrBadUpdate, first.TotalSize, c.cfg.Study.Model, want)
	}
	a, err := chunk.NewAssembler(first, want, c.cfg.Study.ID, nil)
	if err != nil {
		return u, nil, err
	}
	for !a.Done() {
		ch, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return u, nil, fmt.Errorf("%w: stream ended early", chunk.ErrChunk)
			}
			return u, nil, err
		}
		if err := a.Add(ch); err != nil {
			return u, nil, err
		}
	}
	payload, sum, err := a.Bytes()
	if err != nil {
		return u, nil, err
	}
	if _, err := aggregation.DecodeWeightedDelta(payload, c.cfg.Study.Model.NumParams()); err != nil {
		return u, nil, err
	}
	return Update{
		Client: client, Study: a.Study(), Round: a.Round(), Parent: [32]byte(hdr.ParentSha256), Hash: sum,
		Weight: hdr.NumSamples, Payload: payload,
	}, hdr, nil
}
