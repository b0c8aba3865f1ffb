package coordinator

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/grpcauth"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	"github.com/fedledger/fedledger/internal/version"
	pb "github.com/fedledger/fedledger/proto"
)

// The Federation service. Handlers authenticate the caller (an approved
// site's client certificate), reassemble and check what only they can
// check (chunk framing and hashes, a payload's encoding: plaintext floats
// or ciphertexts of the study's key), and hand the study machine an event;
// the machine decides. A rejected message is answered with the machine's
// reason as a status code (errors.go).

var (
	errNotClient  = errors.New("coordinator: caller's certificate does not have the client role")
	errWrongStudy = errors.New("coordinator: message is for another study")
	errBadPayload = errors.New("coordinator: malformed payload")
)

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
	p, err := grpcauth.PeerFromContext(ctx)
	if err == nil && p.Role != tlsutil.RoleClient {
		err = fmt.Errorf("%w: %q is %q", errNotClient, p.ID, p.Role)
	} else if err == nil && !c.approved[p.ID] {
		err = fmt.Errorf("%w: %q", study.ErrUnknownClient, p.ID)
	}
	if err != nil {
		c.log.Warn("refused caller", slog.String("rpc", rpc), slog.String("peer", p.ID), slog.Any("err", err))
		return p, toStatus(err)
	}
	return p, nil
}

func identity(p tlsutil.Peer) study.Identity {
	return study.Identity{Site: p.ID, Key: p.PublicKey(), Cert: p.Cert.Raw}
}

func (c *Coordinator) register(s *session) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.sessions[s.client]; old != nil {
		old.cancel() // a newer connection replaces the old one
	}
	c.sessions[s.client] = s
}

// unregister forgets s; it reports whether s was the client's current
// session (a replaced one leaves without the client leaving).
func (c *Coordinator) unregister(s *session) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions[s.client] == s {
		delete(c.sessions, s.client)
		return true
	}
	return false
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
	t, s := st.Training, st.Strategy
	spec := &pb.StudySpec{
		StudyId: st.ID,
		Model:   &pb.ModelSpec{Kind: st.Model.Kind, Inputs: uint32(st.Model.Inputs), Hidden: hidden},
		Training: &pb.TrainingParams{Optimizer: t.Optimizer, LearningRate: t.LearningRate, BatchSize: uint32(t.BatchSize),
			Epochs: uint32(t.Epochs), LocalSteps: uint32(t.LocalSteps), ProxMu: t.ProxMu, Seed: t.Seed},
		Rounds: uint32(st.Rounds), MinClients: uint32(st.MinClients), Strategy: s.Name, Mode: st.Mode,
		HePreset: st.HEPreset, Threshold: uint32(st.Threshold), Features: st.Features,
		ServerOptimizer:    &pb.ServerOptimizer{Name: s.Name, ServerLr: s.ServerLR, Beta1: s.Beta1, Beta2: s.Beta2, Tau: s.Tau},
		ValidationFraction: st.ValidationFraction,
		NormBound:          st.NormBound,
	}
	if d := st.DP; d != nil {
		spec.Dp = &pb.DPParams{Epsilon: d.Epsilon, Delta: d.Delta, NoiseMultiplier: d.NoiseMultiplier, ClipNorm: d.ClipNorm, SampleRate: d.SampleRate, Level: d.Level}
	}
	return spec
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
	c.mu.Lock()
	finished := c.finished
	c.mu.Unlock()
	if finished != nil {
		return stream.Send(&pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Finished{Finished: finished}})
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	sess := &session{client: p.ID, out: make(chan *pb.CoordinatorMessage, sessionQueue), ctx: ctx, cancel: cancel}
	c.register(sess)
	joined := false
	defer func() {
		if c.unregister(sess) && joined {
			c.post(study.Left{Site: p.ID}, false)
		}
	}()

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
			var ev study.Event
			switch msg := m.Msg.(type) {
			case *pb.ClientMessage_Accepted:
				// The client joins the study once it has accepted it.
				if msg.Accepted.StudyId == c.cfg.Study.ID && !joined {
					joined = true
					ev = study.Joined{Site: p.ID}
				}
			case *pb.ClientMessage_Refusal:
				ev = study.Refused{Site: p.ID, Round: msg.Refusal.Round, Reason: msg.Refusal.Reason}
			case *pb.ClientMessage_Eval:
				ev = c.evalIn(p.ID, msg.Eval)
			case *pb.ClientMessage_KeyShare:
				ev = c.keyShareIn(p, msg.KeyShare)
			case *pb.ClientMessage_ShareBox:
				b := msg.ShareBox
				ev = study.ShareBoxIn{Site: p.ID, From: b.FromPoint, To: b.ToPoint, Box: b.Box}
			case *pb.ClientMessage_KeyDone:
				ev = c.keyDoneIn(p.ID, msg.KeyDone)
			case *pb.ClientMessage_Countersign:
				ev = c.countersignIn(p, msg.Countersign)
			case *pb.ClientMessage_Sketch:
				ev = c.sketchIn(p.ID, msg.Sketch)
			case *pb.ClientMessage_Bound:
				ev = c.boundIn(p.ID, msg.Bound)
			}
			if ev == nil {
				continue
			}
			if _, refusal := ev.(study.Refused); !joined && !refusal {
				// Before it joins, a site can only refuse the study; the
				// machine logs and counts that (it acts only on refusals
				// of the tasks it gave).
				continue
			}
			// The machine logs and counts what it refuses.
			c.post(ev, true)
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

func (c *Coordinator) evalIn(site string, m *pb.EvalReport) study.Event {
	if len(m.ModelSha256) != sha256.Size || m.Test == nil {
		return nil
	}
	ev := study.EvalIn{Site: site, Model: audit.Hash(m.ModelSha256), Test: metricsFrom(m.Test)}
	if m.Personal != nil {
		p := metricsFrom(m.Personal)
		ev.Personal = &p
	}
	return ev
}

// keyShareIn turns a key share into an event: its public-key share must
// open under the study's parameters (the machine checks the rest); one
// that does not is a refusal, which fails key setup with the reason.
func (c *Coordinator) keyShareIn(p tlsutil.Peer, m *pb.KeyShare) study.Event {
	st := c.cfg.Study
	refuse := func(err error) study.Event {
		c.log.Warn("invalid key share", slog.String("client", p.ID), slog.Any("err", err))
		return study.Refused{Site: p.ID, Reason: "invalid key share: " + err.Error()}
	}
	switch {
	case !st.Secure():
		return refuse(errors.New("this study runs in plaintext mode"))
	case m.StudyId != st.ID:
		return refuse(fmt.Errorf("%w: %q", errWrongStudy, m.StudyId))
	}
	if err := secure.CheckKeyShare(st.HEPreset, st.ID, m.PkShare); err != nil {
		return refuse(err)
	}
	return study.KeyShareIn{From: identity(p), Point: m.Point, X25519: m.X25519Public, PkShare: m.PkShare, Signature: m.Signature}
}

func (c *Coordinator) keyDoneIn(site string, m *pb.KeySetupDone) study.Event {
	if m.StudyId != c.cfg.Study.ID || len(m.CollectiveKeySha256) != sha256.Size {
		return study.Refused{Site: site, Reason: "key setup confirmation for another study or without a key hash"}
	}
	return study.KeyDoneIn{Site: site, CollectiveKey: audit.Hash(m.CollectiveKeySha256), Signature: m.Signature}
}

func (c *Coordinator) countersignIn(p tlsutil.Peer, m *pb.Countersignature) study.Event {
	if m.StudyId != c.cfg.Study.ID || len(m.OutputSha256) != sha256.Size {
		c.log.Warn("malformed countersignature ignored", slog.String("client", p.ID))
		return nil
	}
	return study.CountersignIn{From: identity(p), Round: m.Round, Output: audit.Hash(m.OutputSha256), Signature: m.Signature}
}

// boundIn turns a key holder's projection shares into an event; shares of
// the wrong shape, or for another study, count as its refusal.
func (c *Coordinator) boundIn(site string, m *pb.ProjectionShares) study.Event {
	st := c.cfg.Study
	ev := study.BoundIn{From: site, Round: m.Round, Shares: map[string][]uint64{}}
	err := error(nil)
	if !st.Secure() || st.NormBound <= 0 || m.StudyId != st.ID {
		err = errors.New("projection shares for another study, or a study without a norm bound")
	}
	for _, s := range m.Shares {
		if err != nil {
			break
		}
		if _, dup := ev.Shares[s.ClientId]; dup || len(s.Residues) != 2 {
			err = fmt.Errorf("projection share for %q repeated, or of %d residues (the preset has 2 primes)", s.ClientId, len(s.Residues))
		}
		ev.Shares[s.ClientId] = s.Residues
	}
	if err != nil {
		c.log.Warn("malformed projection shares", slog.String("client", site), slog.Any("err", err))
		return study.Refused{Site: site, Round: m.Round, Reason: "malformed projection shares: " + err.Error()}
	}
	return ev
}

// sketchIn turns a sketch into an event; one of the wrong size for the
// study's preset, or for another study, counts as the contributor's
// refusal to sketch (the decryptors then download its contribution).
func (c *Coordinator) sketchIn(site string, m *pb.ContributionSketch) study.Event {
	st := c.cfg.Study
	var size int
	p, err := secure.LookupPreset(st.HEPreset)
	if err == nil {
		size, err = secure.SketchSize(p)
	}
	switch {
	case !st.Secure() || m.StudyId != st.ID || len(m.AggregateSha256) != sha256.Size:
		err = errors.New("a sketch for another study, or without the aggregate's hash")
	case err == nil && len(m.Values) != size:
		err = fmt.Errorf("a sketch of %d bytes, the study's preset makes %d", len(m.Values), size)
	}
	if err != nil {
		c.log.Warn("malformed sketch", slog.String("client", site), slog.Any("err", err))
		return study.Refused{Site: site, Round: m.Round, Reason: "malformed sketch: " + err.Error()}
	}
	return study.SketchIn{Round: m.Round, Aggregate: audit.Hash(m.AggregateSha256), Sketch: audit.Sketch{Site: site, Values: m.Values, Signature: m.Signature}}
}

// FetchModel streams a stored model or optimiser state, or (secure mode) a
// stored update, aggregate or decryption share, by its SHA-256.
func (s *server) FetchModel(req *pb.FetchModelRequest, stream pb.Federation_FetchModelServer) error {
	c := s.c
	if _, err := c.authorize(stream.Context(), "FetchModel"); err != nil {
		return err
	}
	if req.StudyId != c.cfg.Study.ID {
		return toStatus(fmt.Errorf("%w: %q", errWrongStudy, req.StudyId))
	}
	if len(req.Sha256) != sha256.Size {
		return status.Errorf(codes.InvalidArgument, "coordinator: object hash has %d bytes, want 32", len(req.Sha256))
	}
	b, err := c.models.Get([32]byte(req.Sha256))
	if errors.Is(err, ErrNotFound) {
		b, err = c.objects.Get([32]byte(req.Sha256))
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

// receive reassembles a chunked payload of exactly want bytes.
func (c *Coordinator) receive(first *pb.Chunk, want int64, recv func() (*pb.Chunk, error)) (*chunk.Assembler, []byte, [32]byte, error) {
	if first.TotalSize != uint64(want) {
		return nil, nil, [32]byte{}, fmt.Errorf("%w: %d bytes, want %d", errBadPayload, first.TotalSize, want)
	}
	a, err := chunk.NewAssembler(first, want, c.cfg.Study.ID, nil)
	if err != nil {
		return nil, nil, [32]byte{}, err
	}
	for !a.Done() {
		ch, err := recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil, nil, [32]byte{}, fmt.Errorf("%w: stream ended early", chunk.ErrChunk)
			}
			return nil, nil, [32]byte{}, err
		}
		if err := a.Add(ch); err != nil {
			return nil, nil, [32]byte{}, err
		}
	}
	payload, sum, err := a.Bytes()
	return a, payload, sum, err
}

// SubmitUpdate receives one update, checks its payload, and hands it to
// the round; the receipt is sent only once the round has accepted it.
func (s *server) SubmitUpdate(stream pb.Federation_SubmitUpdateServer) error {
	c := s.c
	p, err := c.authorize(stream.Context(), "SubmitUpdate")
	if err != nil {
		return err
	}
	ev, err := c.receiveUpdate(p, stream)
	if err != nil {
		// Refused before it reached the round (the machine logs and
		// counts what it refuses itself).
		c.metrics.updates.WithLabelValues("rejected").Inc()
		c.log.Warn("update rejected", slog.String("client", p.ID), slog.Any("err", err))
		return toStatus(err)
	}
	if err := c.post(ev, true); err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&pb.SubmitReceipt{StudyId: c.cfg.Study.ID, Round: ev.Round, ContentSha256: ev.Update.UpdateHash[:]})
}

func (c *Coordinator) receiveUpdate(p tlsutil.Peer, stream pb.Federation_SubmitUpdateServer) (study.UpdateIn, error) {
	var ev study.UpdateIn
	st := c.cfg.Study
	first, err := stream.Recv()
	if err != nil {
		return ev, err
	}
	hdr := first.Header
	if hdr == nil {
		return ev, fmt.Errorf("%w: first chunk has no header", study.ErrBadUpdate)
	}
	encoding, want := aggregation.EncodingWeightedDelta, int64(8*st.Model.NumParams())
	setup := c.keySetup()
	if st.Secure() {
		if setup == nil {
			return ev, fmt.Errorf("%w: key setup has not finished", study.ErrRoundClosed)
		}
		encoding, want = secure.EncodingContribution, setup.ContributionSize()
	}
	switch {
	case hdr.Encoding != encoding:
		return ev, fmt.Errorf("%w: encoding %q, this %s study takes %q", study.ErrBadUpdate, hdr.Encoding, st.Mode, encoding)
	case len(hdr.ParentSha256) != sha256.Size || len(hdr.DataManifestSha256) != sha256.Size:
		return ev, fmt.Errorf("%w: parent and data manifest hashes must have 32 bytes", study.ErrBadUpdate)
	}
	a, payload, sum, err := c.receive(first, want, stream.Recv)
	if err != nil {
		return ev, err
	}
	if setup != nil {
		err = setup.CheckContribution(a.Round(), payload)
	} else {
		_, err = aggregation.DecodeWeightedDelta(payload, st.Model.NumParams())
	}
	if err != nil {
		return ev, fmt.Errorf("%w: %w", study.ErrBadUpdate, err)
	}
	ev = study.UpdateIn{From: identity(p), Round: a.Round(), Parent: audit.Hash(hdr.ParentSha256), Payload: payload,
		Update: audit.Contribution{Site: p.ID, UpdateHash: sum, Samples: hdr.NumSamples, DataManifest: audit.Hash(hdr.DataManifestSha256), Signature: hdr.Signature}}
	if hdr.Train != nil {
		m := metricsFrom(hdr.Train)
		ev.Train = &m
	}
	if hdr.ParentTest != nil {
		m := metricsFrom(hdr.ParentTest)
		ev.ParentTest = &m
	}
	if hdr.PersonalTest != nil {
		m := metricsFrom(hdr.PersonalTest)
		ev.PersonalTest = &m
	}
	if len(hdr.EvaluationSignature) > 0 {
		e := &audit.Evaluation{Site: p.ID, Signature: hdr.EvaluationSignature}
		for _, v := range hdr.Evaluation {
			e.Metrics = append(e.Metrics, audit.Metric{Name: v.Name, Value: v.Value})
		}
		ev.Evaluation = e
	}
	return ev, nil
}

// SubmitShare receives one key holder's decryption shares for a round's
// aggregate, checks they open under the study's parameters, and hands
// them to the round.
func (s *server) SubmitShare(stream pb.Federation_SubmitShareServer) error {
	c := s.c
	p, err := c.authorize(stream.Context(), "SubmitShare")
	if err != nil {
		return err
	}
	ev, err := c.receiveShare(p, stream)
	if err != nil {
		c.metrics.shares.WithLabelValues("rejected").Inc()
		c.log.Warn("decryption share rejected", slog.String("client", p.ID), slog.Any("err", err))
		return toStatus(err)
	}
	if err := c.post(ev, true); err != nil {
		return toStatus(err)
	}
	return stream.SendAndClose(&pb.SubmitReceipt{StudyId: c.cfg.Study.ID, Round: ev.Round, ContentSha256: ev.Share.ShareHash[:]})
}

func (c *Coordinator) receiveShare(p tlsutil.Peer, stream pb.Federation_SubmitShareServer) (study.ShareIn, error) {
	var ev study.ShareIn
	setup := c.keySetup()
	if setup == nil {
		return ev, fmt.Errorf("%w: no secure key setup in this study", study.ErrRoundClosed)
	}
	if _, ok := setup.Points()[p.ID]; !ok {
		return ev, fmt.Errorf("%w: %q", study.ErrNotKeyHolder, p.ID)
	}
	first, err := stream.Recv()
	if err != nil {
		return ev, err
	}
	hdr := first.Share
	if hdr == nil || len(hdr.AggregateSha256) != sha256.Size {
		return ev, fmt.Errorf("%w: first chunk has no share header with a 32-byte aggregate hash", errBadPayload)
	}
	a, payload, sum, err := c.receive(first, setup.ShareSize(), stream.Recv)
	if err != nil {
		return ev, err
	}
	if err := setup.CheckShare(a.Round(), payload); err != nil {
		return ev, fmt.Errorf("%w: %w", errBadPayload, err)
	}
	return study.ShareIn{Site: p.ID, Round: a.Round(), Aggregate: audit.Hash(hdr.AggregateSha256), Payload: payload,
		Share: audit.DecryptionShare{Site: p.ID, ShareHash: sum, Signature: hdr.Signature}}, nil
}

func metricsFrom(m *pb.Metrics) model.Metrics {
	return model.Metrics{Loss: m.Loss, Accuracy: m.Accuracy, AUC: m.Auc, N: int(m.N)}
}

func sortedSites[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
