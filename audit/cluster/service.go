package cluster

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/grpcauth"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// auditServer is the AuditLog gRPC service of a node.
type auditServer struct {
	pb.UnimplementedAuditLogServer
	n *Node
}

// A request a follower forwarded to the leader carries this metadata key;
// a node that is no longer the leader answers it with Unavailable instead
// of forwarding again, so requests never loop.
const forwardedKey = "x-fedledger-forwarded"

type noForwardKey struct{}

func forwarded(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
}

// inbound marks a handler context whose request was already forwarded.
func inbound(ctx context.Context) context.Context {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(forwardedKey)) > 0 {
		return context.WithValue(ctx, noForwardKey{}, true)
	}
	return ctx
}

func mayForward(ctx context.Context) bool { return ctx.Value(noForwardKey{}) == nil }

// retryable reports a forwarded call's error that a later attempt (on a
// new leader) may not hit.
func retryable(err error) bool { return status.Code(err) == codes.Unavailable }

// Roles allowed to call each RPC; anything else is refused and logged.
var (
	readers  = []tlsutil.Role{tlsutil.RoleAdmin, tlsutil.RoleCoordinator, tlsutil.RoleClient, tlsutil.RoleAuditNode, tlsutil.RoleObserver}
	writers  = []tlsutil.Role{tlsutil.RoleAdmin, tlsutil.RoleCoordinator, tlsutil.RoleAuditNode}
	nodeOnly = []tlsutil.Role{tlsutil.RoleAuditNode}
)

func (s *auditServer) authorize(ctx context.Context, rpc string, roles []tlsutil.Role) (tlsutil.Peer, error) {
	p, err := grpcauth.RequireRole(ctx, rpc, roles...)
	if err != nil {
		s.n.log.Warn("refused caller", slog.String("rpc", rpc), slog.String("peer", p.ID), slog.Any("err", err))
		return p, status.Error(codes.PermissionDenied, err.Error())
	}
	s.n.log.Debug("access", slog.String("rpc", rpc), slog.String("peer", p.ID), slog.String("role", string(p.Role)))
	s.n.metrics.access.WithLabelValues(p.ID, rpc).Inc()
	s.n.access.record(p, time.Now())
	return p, nil
}

// auditStatus maps the package's errors to gRPC codes, in one place.
func auditStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, audit.ErrWrongRole), errors.Is(err, audit.ErrUntrustedCert), errors.Is(err, audit.ErrSignerMismatch), errors.Is(err, audit.ErrBadSignature):
		code = codes.PermissionDenied
	case errors.Is(err, audit.ErrConflict), errors.Is(err, audit.ErrStudyExists):
		code = codes.AlreadyExists
	case errors.Is(err, audit.ErrMalformed), errors.Is(err, audit.ErrNonCanonical), errors.Is(err, audit.ErrVersion), errors.Is(err, audit.ErrBadCheckpoint):
		code = codes.InvalidArgument
	case errors.Is(err, audit.ErrUnknownStudy), errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, audit.ErrInconsistent):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrNoLeader), errors.Is(err, audit.ErrQuorum), leaderErr(err), errors.Is(err, raft.ErrEnqueueTimeout):
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	default:
		var re *audit.RuleError
		if errors.As(err, &re) {
			code = codes.FailedPrecondition
		}
	}
	return status.Error(code, err.Error())
}

// leaderOnly refuses a forwarded request on a node that is not the leader.
func (s *auditServer) leaderOnly(ctx context.Context) error {
	if !mayForward(ctx) && !s.n.IsLeader() {
		return status.Errorf(codes.Unavailable, "audit: %s is no longer the leader", s.n.id)
	}
	return nil
}

func (s *auditServer) Append(ctx context.Context, req *pb.AppendRequest) (*pb.AppendResponse, error) {
	if _, err := s.authorize(ctx, "Append", writers); err != nil {
		return nil, err
	}
	ctx = inbound(ctx)
	if err := s.leaderOnly(ctx); err != nil {
		return nil, err
	}
	res, err := s.n.Append(ctx, req.Envelope)
	if err != nil {
		return nil, auditStatus(err)
	}
	return &pb.AppendResponse{Index: res.Index, LeafHash: res.LeafHash[:], TreeSize: res.TreeSize}, nil
}

func (s *auditServer) Get(ctx context.Context, req *pb.GetRequest) (*pb.Entry, error) {
	if _, err := s.authorize(ctx, "Get", readers); err != nil {
		return nil, err
	}
	if err := s.n.serving(); err != nil {
		return nil, err
	}
	leaf, err := s.n.fsm.Ledger().Log().Leaf(req.Index)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "audit: no entry %d (log size %d)", req.Index, s.n.fsm.Ledger().Log().Size())
	}
	return &pb.Entry{Index: req.Index, Envelope: leaf}, nil
}

func (s *auditServer) Latest(ctx context.Context, _ *pb.LatestRequest) (*pb.SignedCheckpoint, error) {
	if _, err := s.authorize(ctx, "Latest", readers); err != nil {
		return nil, err
	}
	ctx = inbound(ctx)
	if err := s.leaderOnly(ctx); err != nil {
		return nil, err
	}
	signed, signers, err := s.n.Checkpoint(ctx)
	if err != nil {
		return nil, auditStatus(err)
	}
	return &pb.SignedCheckpoint{Note: signed, Signers: signers}, nil
}

func (s *auditServer) LatestOutput(ctx context.Context, req *pb.LatestOutputRequest) (*pb.LatestOutputResponse, error) {
	if _, err := s.authorize(ctx, "LatestOutput", readers); err != nil {
		return nil, err
	}
	ctx = inbound(ctx)
	if err := s.leaderOnly(ctx); err != nil {
		return nil, err
	}
	h, round, err := s.n.LatestOutput(ctx, req.StudyId)
	if err != nil {
		return nil, auditStatus(err)
	}
	return &pb.LatestOutputResponse{ModelSha256: h[:], Round: round}, nil
}

func (s *auditServer) StudyRecord(ctx context.Context, req *pb.LatestOutputRequest) (*pb.Entry, error) {
	if _, err := s.authorize(ctx, "StudyRecord", readers); err != nil {
		return nil, err
	}
	ctx = inbound(ctx)
	if err := s.leaderOnly(ctx); err != nil {
		return nil, err
	}
	env, idx, err := s.n.StudyRecord(ctx, req.StudyId)
	if err != nil {
		return nil, auditStatus(err)
	}
	return &pb.Entry{Index: idx, Envelope: env}, nil
}

func (s *auditServer) ListStudies(ctx context.Context, _ *pb.ListStudiesRequest) (*pb.ListStudiesResponse, error) {
	if _, err := s.authorize(ctx, "ListStudies", readers); err != nil {
		return nil, err
	}
	if err := s.n.serving(); err != nil {
		return nil, err
	}
	out := &pb.ListStudiesResponse{}
	for _, st := range s.n.fsm.Ledger().Studies() {
		out.Studies = append(out.Studies, studySummaryPB(st))
	}
	return out, nil
}

// studySummaryPB is a study's summary on the wire. Hashes that are not
// there yet (the collective key before the key setup, the optimizer state
// before the first completed round) are left empty, not zero.
func studySummaryPB(st audit.StudySummary) *pb.StudySummary {
	out := &pb.StudySummary{StudyId: st.ID, CreatedBy: st.CreatedBy, ApprovedSites: st.ApprovedSites,
		MinContributors: st.MinContributors, ExpiresUnixNanos: st.ExpiresAtUnixNs, LastRound: st.LastRound,
		LatestModelSha256: st.LatestModel[:], RoundsCompleted: st.Completed, RoundsFailed: st.Failed, KeySetupDone: st.KeySetupDone,
		Rounds: st.Rounds, Secure: st.Secure, HeParams: st.HEParams, Threshold: st.Threshold, KeyHolders: st.KeyHolders}
	if st.KeySetupDone {
		out.CollectiveKeySha256 = st.CollectiveKeyHash[:]
	}
	if st.OptimizerState != (audit.Hash{}) {
		out.OptimizerStateSha256 = st.OptimizerState[:]
	}
	return out
}

func (s *auditServer) ProveInclusion(ctx context.Context, req *pb.InclusionRequest) (*pb.Proof, error) {
	if _, err := s.authorize(ctx, "ProveInclusion", readers); err != nil {
		return nil, err
	}
	if err := s.n.serving(); err != nil {
		return nil, err
	}
	lg := s.n.fsm.Ledger().Log()
	if req.Index < 0 || req.Index >= req.TreeSize || req.TreeSize > lg.Size() {
		return nil, status.Errorf(codes.InvalidArgument, "audit: inclusion of %d in a tree of %d (log size %d)", req.Index, req.TreeSize, lg.Size())
	}
	p, err := lg.ProveInclusion(req.Index, req.TreeSize)
	if err != nil {
		return nil, auditStatus(err)
	}
	return proofPB(p), nil
}

func (s *auditServer) ProveConsistency(ctx context.Context, req *pb.ConsistencyRequest) (*pb.Proof, error) {
	if _, err := s.authorize(ctx, "ProveConsistency", readers); err != nil {
		return nil, err
	}
	if err := s.n.serving(); err != nil {
		return nil, err
	}
	lg := s.n.fsm.Ledger().Log()
	if req.OldSize < 0 || req.OldSize > req.NewSize || req.NewSize > lg.Size() {
		return nil, status.Errorf(codes.InvalidArgument, "audit: consistency %d -> %d (log size %d)", req.OldSize, req.NewSize, lg.Size())
	}
	p, err := lg.ProveConsistency(req.OldSize, req.NewSize)
	if err != nil {
		return nil, auditStatus(err)
	}
	return proofPB(p), nil
}

func proofPB(p []tlog.Hash) *pb.Proof {
	out := &pb.Proof{}
	for _, h := range p {
		out.Hashes = append(out.Hashes, h[:])
	}
	return out
}

func (s *auditServer) Export(req *pb.ExportRequest, stream pb.AuditLog_ExportServer) error {
	if _, err := s.authorize(stream.Context(), "Export", readers); err != nil {
		return err
	}
	if err := s.n.serving(); err != nil {
		return err
	}
	b, err := s.n.Export(stream.Context())
	if err != nil {
		return auditStatus(err)
	}
	for _, c := range chunk.Split(req.StudyId, 0, b.Marshal(), chunk.DefaultSize) {
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *auditServer) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	p, err := s.authorize(ctx, "Join", []tlsutil.Role{tlsutil.RoleAuditNode, tlsutil.RoleAdmin})
	if err != nil {
		return nil, err
	}
	if p.Role == tlsutil.RoleAuditNode && p.ID != req.Id {
		return nil, status.Errorf(codes.PermissionDenied, "audit: node %q may only join itself, not %q", p.ID, req.Id)
	}
	if err := tlsutil.ValidID(req.Id); err != nil || req.Address == "" {
		return nil, status.Errorf(codes.InvalidArgument, "audit: join needs a valid id and an address (%v)", err)
	}
	ctx = inbound(ctx)
	if err := s.leaderOnly(ctx); err != nil {
		return nil, err
	}
	idx, err := s.n.Join(ctx, req.Id, req.Address, req.Voter)
	if err != nil {
		return nil, auditStatus(err)
	}
	return &pb.JoinResponse{CommitIndex: idx}, nil
}

func (s *auditServer) Remove(ctx context.Context, req *pb.RemoveRequest) (*pb.RemoveResponse, error) {
	p, err := s.authorize(ctx, "Remove", []tlsutil.Role{tlsutil.RoleAuditNode, tlsutil.RoleAdmin})
	if err != nil {
		return nil, err
	}
	if p.Role == tlsutil.RoleAuditNode && p.ID != req.Id {
		return nil, status.Errorf(codes.PermissionDenied, "audit: node %q may only remove itself, not %q", p.ID, req.Id)
	}
	ctx = inbound(ctx)
	if err := s.leaderOnly(ctx); err != nil {
		return nil, err
	}
	if err := s.n.Remove(ctx, req.Id); err != nil {
		return nil, auditStatus(err)
	}
	return &pb.RemoveResponse{}, nil
}

func (s *auditServer) Cosign(ctx context.Context, req *pb.CosignRequest) (*pb.CosignResponse, error) {
	p, err := s.authorize(ctx, "Cosign", nodeOnly)
	if err != nil {
		return nil, err
	}
	if err := s.n.serving(); err != nil {
		return nil, err
	}
	out, err := s.n.cosign(req.Note, p)
	if err != nil {
		s.n.log.Warn("cosignature refused", slog.String("from", p.ID), slog.Any("err", err))
		return nil, auditStatus(err)
	}
	return &pb.CosignResponse{Note: out}, nil
}

func (s *auditServer) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
	if _, err := s.authorize(ctx, "Status", readers); err != nil {
		return nil, err
	}
	return s.n.Status(), nil
}
