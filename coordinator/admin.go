package coordinator

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/grpcauth"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// adminServer implements StudyAdmin: the study's status for admins and
// observers, and the start of a study waiting for an admin. It keeps
// answering after the study has ended, for as long as the coordinator
// lingers (Config.Linger).
type adminServer struct {
	pb.UnimplementedStudyAdminServer
	c *Coordinator
}

func (a *adminServer) authorize(ctx context.Context, rpc string, roles ...tlsutil.Role) (tlsutil.Peer, error) {
	p, err := grpcauth.RequireRole(ctx, rpc, roles...)
	if err != nil {
		a.c.log.Warn("refused caller", slog.String("rpc", rpc), slog.String("peer", p.ID), slog.Any("err", err))
		return p, status.Error(codes.PermissionDenied, err.Error())
	}
	return p, nil
}

// Status reports the study's phase, round, who is connected and who has
// reported, the last round's metrics, what it is waiting for, and once it
// has ended the final model's path and each site's results. Admins and
// observers only.
func (a *adminServer) Status(ctx context.Context, _ *pb.StudyStatusRequest) (*pb.StudyStatus, error) {
	if _, err := a.authorize(ctx, "StudyAdmin.Status", tlsutil.RoleAdmin, tlsutil.RoleObserver); err != nil {
		return nil, err
	}
	return a.c.statusProto(), nil
}

func (c *Coordinator) statusProto() *pb.StudyStatus {
	s := c.statusSnapshot()
	out := &pb.StudyStatus{StudyId: c.cfg.Study.ID, Mode: c.cfg.Study.Mode, Phase: s.Phase.String(), Round: s.Round, Rounds: uint32(s.Rounds),
		Connected: s.Connected, Reported: s.Reported, RoundsCompleted: uint32(s.Completed), RoundsFailed: uint32(s.Failed),
		LastTrainLoss: s.LastTrainLoss, LastParentTestAccuracy: s.LastParentTestAccuracy, LatestModelSha256: s.LatestModel[:],
		Failure: s.Failure, WaitingFor: s.WaitingFor, FinalModelPath: c.FinalModelPath()}
	out.LastExcluded = s.Excluded
	for _, x := range s.Exclusions {
		out.Exclusions = append(out.Exclusions, &pb.SiteExclusion{Site: x.Site, FromRound: x.From, By: x.By, Reason: x.Reason})
	}
	for _, f := range s.Flags {
		out.LastFlags = append(out.LastFlags, &pb.AnomalyFlag{Site: f.Site, Reason: f.Reason})
	}
	if b, _ := c.cfg.Study.DPBudget(); b != nil {
		out.DpEpsilonBudget, out.DpDelta = b.Epsilon, b.Delta
		out.DpEpsilonSpent, _ = b.Spent(s.Completed + s.Failed)
	}
	if c.over() {
		// The study machine takes no more events once the study is over,
		// so its view of who is connected stops there; while the
		// coordinator lingers, its own sessions say who still is.
		out.Connected = c.liveSessions()
	}
	pbm := func(m model.Metrics) *pb.Metrics {
		return &pb.Metrics{Loss: m.Loss, Accuracy: m.Accuracy, Auc: m.AUC, N: uint64(m.N)}
	}
	for _, site := range sortedSites(s.LastParentTest) {
		sm := &pb.SiteMetrics{Site: site, Test: pbm(s.LastParentTest[site])}
		if p, ok := s.LastPersonalTest[site]; ok {
			sm.Personal = pbm(p)
		}
		out.LastRound = append(out.LastRound, sm)
	}
	for _, site := range sortedSites(s.FinalTest) {
		m := s.FinalTest[site]
		sm := &pb.SiteMetrics{Site: site, Test: &pb.Metrics{Loss: m.Loss, Accuracy: m.Accuracy, Auc: m.AUC, N: uint64(m.N)}}
		if p, ok := s.FinalPersonal[site]; ok {
			sm.Personal = &pb.Metrics{Loss: p.Loss, Accuracy: p.Accuracy, Auc: p.AUC, N: uint64(p.N)}
		}
		out.FinalTest = append(out.FinalTest, sm)
	}
	return out
}

// Start starts a study configured to wait for an admin. Admins only.
func (a *adminServer) Start(ctx context.Context, req *pb.StartStudyRequest) (*pb.StudyStatus, error) {
	p, err := a.authorize(ctx, "StudyAdmin.Start", tlsutil.RoleAdmin)
	if err != nil {
		return nil, err
	}
	if req.StudyId != a.c.cfg.Study.ID {
		return nil, status.Errorf(codes.NotFound, "coordinator: this coordinator runs study %q, not %q", a.c.cfg.Study.ID, req.StudyId)
	}
	if err := a.c.post(study.StartRequested{By: p.ID}, true); err != nil {
		return nil, toStatus(err)
	}
	return a.c.statusProto(), nil
}

// over reports whether the study has ended (successfully or not).
func (c *Coordinator) over() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.finished != nil
}

// liveSessions are the sites with a Participate stream open, sorted.
func (c *Coordinator) liveSessions() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return sortedSites(c.sessions)
}
