package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
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

// sessionQueue bounds the messages queued for one client. Key setup queues
// the most: 2N-1 for N participants (every peer's key share, then N-1
// share boxes), so this allows studies of up to 128 hospitals.
const sessionQueue = 256

// push queues a message for the client without ever blocking the study
// goroutine; a client too slow to drain sessionQueue messages is
// disconnected.
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
		Rounds: uint32(st.Rounds), MinClients: uint32(st.MinClients), Strategy: st.Strategy.Name, Mode: st.Mode,
		HePreset: st.HEPreset, Threshold: uint32(st.Threshold), Features: st.Features,
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
	sess := &session{client: p.ID, out: make(chan *pb.CoordinatorMessage, sessionQueue), ctx: ctx, cancel: cancel}
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

	recvErr := make(chan error, 1)
	accepted := false
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
			case *pb.ClientMessage_Accepted:
				// The client joins the study once it has accepted it.
				if msg.Accepted.StudyId == c.cfg.Study.ID && !accepted {
					accepted = true
					c.post(evJoined{sess})
				}
			case *pb.ClientMessage_Refusal:
				c.post(evRefusal{client: p.ID, m: msg.Refusal})
			case *pb.ClientMessage_Eval:
				c.post(evEval{client: p.ID, m: msg.Eval})
			case *pb.ClientMessage_KeyShare:
				c.post(c.checkKeyShare(p, msg.KeyShare))
			case *pb.ClientMessage_ShareBox:
				c.post(evShareBox{client: p.ID, m: msg.ShareBox})
			case *pb.ClientMessage_KeyDone:
				c.post(evKeyDone{client: p.ID, m: msg.KeyDone})
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

// FetchModel streams a stored model, or in secure mode a stored
// contribution or aggregate (ciphertexts, for decryptors to check).
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
	if errors.Is(err, ErrNotFound) {
		b, err = c.cts.Get([32]byte(req.Sha256))
	}
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
	u, hdr, err := c.receiveUpdate(p.ID, p.PublicKey(), stream)
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

func (c *Coordinator) receiveUpdate(client string, pub ed25519.PublicKey, stream pb.Federation_SubmitUpdateServer) (Update, *pb.UpdateHeader, error) {
	var u Update
	first, err := stream.Recv()
	if err != nil {
		return u, nil, err
	}
	hdr := first.Header
	if hdr == nil {
		return u, nil, fmt.Errorf("%w: first chunk has no header", ErrBadUpdate)
	}
	encoding, want := aggregation.EncodingWeightedDelta, int64(8*c.cfg.Study.Model.NumParams())
	var ks *keyState
	if c.cfg.Study.Secure() {
		if ks = c.keySnapshot(); ks == nil {
			return u, nil, fmt.Errorf("%w: key setup has not finished", ErrRoundClosed)
		}
		encoding, want = secure.EncodingContribution, ks.contributionSize(c.cfg.Study.ID)
	}
	if hdr.Encoding != encoding {
		return u, nil, fmt.Errorf("%w: encoding %q, this %s study takes %q", ErrBadUpdate, hdr.Encoding, c.cfg.Study.Mode, encoding)
	}
	if len(hdr.ParentSha256) != 32 {
		return u, nil, fmt.Errorf("%w: parent hash has %d bytes", ErrBadUpdate, len(hdr.ParentSha256))
	}
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
	if ks != nil {
		if err := c.checkSecureUpdate(a.Study(), a.Round(), payload); err != nil {
			return u, nil, err
		}
	} else if _, err := aggregation.DecodeWeightedDelta(payload, c.cfg.Study.Model.NumParams()); err != nil {
		return u, nil, err
	}
	if len(hdr.DataManifestSha256) != 32 {
		return u, nil, fmt.Errorf("%w: data manifest hash has %d bytes, want 32", ErrBadUpdate, len(hdr.DataManifestSha256))
	}
	stmt := audit.Contribution{Site: client, UpdateHash: sum, Samples: hdr.NumSamples, DataManifest: [32]byte(hdr.DataManifestSha256)}
	if err := verifySig(pub, stmt.Message(a.Study(), a.Round(), [32]byte(hdr.ParentSha256)), hdr.Signature, "contribution"); err != nil {
		return u, nil, err
	}
	return Update{
		Client: client, Study: a.Study(), Round: a.Round(), Parent: [32]byte(hdr.ParentSha256), Hash: sum,
		Weight: hdr.NumSamples, Payload: payload,
	}, hdr, nil
}

// checkKeyShare validates a participant's key share against its
// certificate: the CKG share must open under the study's preset and the
// signature must bind it and the X25519 key to the sender's identity. A
// share that fails becomes a refusal, which fails key setup with the
// reason.
func (c *Coordinator) checkKeyShare(p tlsutil.Peer, m *pb.KeyShare) any {
	st := c.cfg.Study
	refuse := func(err error) any {
		c.log.Warn("invalid key share", slog.String("client", p.ID), slog.Any("err", err))
		return evRefusal{client: p.ID, m: &pb.TaskRefusal{StudyId: m.StudyId, Reason: "invalid key share: " + err.Error()}}
	}
	if !st.Secure() {
		return refuse(errors.New("this study runs in plaintext mode"))
	}
	preset, err := secure.LookupPreset(st.HEPreset)
	if err != nil {
		return refuse(err)
	}
	share, err := secure.OpenPublicKeyShare(m.PkShare, preset, st.ID)
	if err != nil {
		return refuse(err)
	}
	if len(m.X25519Public) != 32 {
		return refuse(fmt.Errorf("X25519 key of %d bytes", len(m.X25519Public)))
	}
	msg := audit.KeyShareMessage(st.ID, p.ID, m.Point, m.X25519Public, sha256.Sum256(m.PkShare))
	if err := verifySig(p.PublicKey(), msg, m.Signature, "key share"); err != nil {
		return refuse(err)
	}
	return evKeyShare{client: p.ID, cert: p.Cert.Raw, m: m, share: share}
}

// SubmitShare receives one key holder's decryption shares for a round's
// aggregate, checks them fully (envelopes, sizes, signature) and hands them
// to the round.
func (s *server) SubmitShare(stream pb.Federation_SubmitShareServer) error {
	c := s.c
	p, err := c.authorize(stream.Context(), "SubmitShare")
	if err != nil {
		return err
	}
	ev, sum, err := c.receiveShare(p, stream)
	if err != nil {
		c.metrics.shares.WithLabelValues("rejected").Inc()
		c.log.Warn("decryption share rejected", slog.String("client", p.ID), slog.Any("err", err))
		return toStatus(err)
	}
	ev.reply = make(chan error, 1)
	if !c.post(ev) {
		return toStatus(errStudyOver)
	}
	select {
	case err = <-ev.reply:
	case <-c.stopped:
		err = errStudyOver
	}
	if err != nil {
		c.metrics.shares.WithLabelValues("rejected").Inc()
		c.log.Warn("decryption share rejected", slog.String("client", p.ID), slog.Any("err", err))
		return toStatus(err)
	}
	c.metrics.shares.WithLabelValues("accepted").Inc()
	return stream.SendAndClose(&pb.SubmitReceipt{StudyId: c.cfg.Study.ID, Round: ev.round, ContentSha256: sum[:]})
}

func (c *Coordinator) receiveShare(p tlsutil.Peer, stream pb.Federation_SubmitShareServer) (evDecShare, [32]byte, error) {
	var ev evDecShare
	st := c.cfg.Study
	ks := c.keySnapshot()
	if ks == nil {
		return ev, [32]byte{}, fmt.Errorf("%w: no secure key setup in this study", ErrRoundClosed)
	}
	if _, ok := ks.points[p.ID]; !ok {
		return ev, [32]byte{}, fmt.Errorf("%w: %q", ErrNotKeyHolder, p.ID)
	}
	first, err := stream.Recv()
	if err != nil {
		return ev, [32]byte{}, err
	}
	hdr := first.Share
	if hdr == nil || len(hdr.AggregateSha256) != 32 {
		return ev, [32]byte{}, fmt.Errorf("%w: first chunk has no share header with a 32-byte aggregate hash", ErrBadShare)
	}
	want := ks.shareSize(st.ID)
	if first.TotalSize != uint64(want) {
		return ev, [32]byte{}, fmt.Errorf("%w: decryption shares of %d bytes, want %d", ErrBadShare, first.TotalSize, want)
	}
	a, err := chunk.NewAssembler(first, want, st.ID, nil)
	if err != nil {
		return ev, [32]byte{}, err
	}
	for !a.Done() {
		ch, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return ev, [32]byte{}, fmt.Errorf("%w: stream ended early", chunk.ErrChunk)
			}
			return ev, [32]byte{}, err
		}
		if err := a.Add(ch); err != nil {
			return ev, [32]byte{}, err
		}
	}
	payload, sum, err := a.Bytes()
	if err != nil {
		return ev, [32]byte{}, err
	}
	shares, err := secure.OpenSharePayload(payload, ks.preset, st.ID, a.Round(), ks.count)
	if err != nil {
		return ev, [32]byte{}, fmt.Errorf("%w: %w", ErrBadShare, err)
	}
	agg := [32]byte(hdr.AggregateSha256)
	ds := audit.DecryptionShare{Site: p.ID, ShareHash: sum, Signature: hdr.Signature}
	manifest, ok := c.decryptionManifest(a.Round(), agg)
	if !ok {
		return ev, [32]byte{}, fmt.Errorf("%w: no decryption of aggregate %x is open in round %d", ErrRoundClosed, agg[:6], a.Round())
	}
	if err := verifySig(p.PublicKey(), ds.Message(st.ID, a.Round(), agg, manifest), hdr.Signature, "decryption share"); err != nil {
		return ev, [32]byte{}, err
	}
	return evDecShare{client: p.ID, round: a.Round(), aggregate: agg, shares: shares, signed: ds}, sum, nil
}
