package coordinator

import (
	"context"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// Study phases, as StudyAdmin.Status reports them.
const (
	PhaseCreated    = "created" // waiting for an admin's start
	PhaseWaiting    = "waiting_for_clients"
	PhaseKeySetup   = "key_setup"
	PhaseRoundOpen  = "round_open"
	PhaseDecrypting = "decrypting"
	PhaseFinished   = "finished"
	PhaseFailed     = "failed"
)

// evStart is an admin's start of a study created with manual start.
type evStart struct {
	by    string
	reply chan error
}

// setStatus updates the status under the lock.
func (c *Coordinator) setStatus(f func(s *pb.StudyStatus)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f(c.status)
}

// statusSnapshot is a copy of the current status.
func (c *Coordinator) statusSnapshot() *pb.StudyStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return proto.Clone(c.status).(*pb.StudyStatus)
}

// adminServer implements StudyAdmin.
type adminServer struct {
	pb.UnimplementedStudyAdminServer
	c *Coordinator
}

func (a *adminServer) authorize(ctx context.Context, rpc string, roles ...tlsutil.Role) (tlsutil.Peer, error) {
	p, err := tlsutil.RequireRole(ctx, rpc, roles...)
	if err != nil {
		a.c.log.Warn("refused caller", slog.String("rpc", rpc), slog.String("peer", p.ID), slog.Any("err", err))
		return p, status.Error(codes.PermissionDenied, err.Error())
	}
	return p, nil
}

// Status reports the study's phase, round, who is connected and who has
// reported, and the last round's metrics. Admins and observers only.
func (a *adminServer) Status(ctx context.Context, _ *pb.StudyStatusRequest) (*pb.StudyStatus, error) {
	if _, err := a.authorize(ctx, "StudyAdmin.Status", tlsutil.RoleAdmin, tlsutil.RoleObserver); err != nil {
		return nil, err
	}
	return a.c.statusSnapshot(), nil
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
	reply := make(chan error, 1)
	if !a.c.post(evStart{by: p.ID, reply: reply}) {
		return nil, toStatus(errStudyOver)
	}
	select {
	case err = <-reply:
	case <-a.c.stopped:
		err = errStudyOver
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return nil, toStatus(err)
	}
	return a.c.statusSnapshot(), nil
}
