package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// ErrNoAuditLog: an admin's record needs the audit log, and this
// coordinator runs without one.
var ErrNoAuditLog = errors.New("coordinator: no audit log configured")

// Exclude relays an admin's signed exclusion or readmission of a site to
// the audit log and, once the log holds it, applies it to the study: from
// the record's round on the site gets no training task (study.Machine).
// The coordinator cannot make one up: the record is the admin's, and the
// audit nodes check the signature and the rules (audit.ExclusionRecord).
// Admins only; the record must be the caller's own.
func (a *adminServer) Exclude(ctx context.Context, req *pb.ExcludeRequest) (*pb.StudyStatus, error) {
	p, err := a.authorize(ctx, "StudyAdmin.Exclude", tlsutil.RoleAdmin)
	if err != nil {
		return nil, err
	}
	rec, err := a.c.checkExclusion(p, req.GetEnvelope())
	if err != nil {
		a.c.log.Warn("exclusion refused", slog.String("admin", p.ID), slog.Any("err", err))
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if st := a.c.statusSnapshot(); pastCollect(st.Phase) && rec.Round <= st.Round {
		return nil, status.Errorf(codes.FailedPrecondition, "coordinator: round %d has collected its updates (phase %s); exclude %s from round %d or later",
			st.Round, st.Phase, rec.MemberID, st.Round+1)
	}
	if err := a.c.recorder.Relay(ctx, req.GetEnvelope()); err != nil {
		a.c.log.Warn("the audit log did not take the exclusion", slog.String("admin", p.ID), slog.String("client", rec.MemberID), slog.Any("err", err))
		code := codes.Unavailable
		switch {
		case errors.Is(err, cluster.ErrRejected), errors.Is(err, audit.ErrConflict):
			code = codes.FailedPrecondition
		case errors.Is(err, ErrNoAuditLog):
			code = codes.FailedPrecondition
		}
		return nil, status.Error(code, err.Error())
	}
	x := audit.Exclusion{Site: rec.MemberID, From: rec.Round, By: rec.SubmitterID, Reason: rec.Param(audit.ParamReason)}
	if err := a.c.post(study.ExclusionChanged{Exclusion: x, Excluded: rec.MemberRemoved}, true); err != nil {
		return nil, toStatus(err)
	}
	return a.c.statusProto(), nil
}

// checkExclusion decodes an admin's membership-change envelope and checks
// what the coordinator can: it is the caller's, for this study, about an
// approved site. The audit log checks the rest.
func (c *Coordinator) checkExclusion(p tlsutil.Peer, raw []byte) (*audit.Record, error) {
	env, err := audit.UnmarshalEnvelope(raw)
	if err != nil {
		return nil, fmt.Errorf("the exclusion: %w", err)
	}
	rec, err := audit.UnmarshalRecord(env.Body)
	if err != nil {
		return nil, fmt.Errorf("the exclusion's record: %w", err)
	}
	switch {
	case rec.Kind != audit.KindMembershipChange || rec.MemberRole != audit.RoleContributor:
		return nil, fmt.Errorf("%w: a %s record (role %q), want a membership change of a %s", audit.ErrExclusion, rec.Kind, rec.MemberRole, audit.RoleContributor)
	case rec.StudyID != c.cfg.Study.ID:
		return nil, fmt.Errorf("%w: the record is for study %q, this coordinator runs %q", audit.ErrExclusion, rec.StudyID, c.cfg.Study.ID)
	case rec.SubmitterID != p.ID:
		return nil, fmt.Errorf("%w: the record is signed as %q, the caller is %q", audit.ErrExclusion, rec.SubmitterID, p.ID)
	case !slices.Contains(c.cfg.Study.Clients, rec.MemberID):
		return nil, fmt.Errorf("%w: %q is not an approved site of the study", audit.ErrExclusion, rec.MemberID)
	}
	return rec, nil
}

// pastCollect: a round is in progress and has stopped collecting updates.
func pastCollect(p study.Phase) bool {
	switch p {
	case study.PhaseBounding, study.PhaseAggregating, study.PhaseSketching, study.PhaseDecrypting, study.PhaseCombining,
		study.PhaseCountersigning, study.PhaseRecording:
		return true
	}
	return false
}

// Relay implements Recorder: an admin's record goes to the log as it is.
func (a *AuditRecorder) Relay(ctx context.Context, env []byte) error {
	return a.retry(ctx, "relaying an admin's record", func(ctx context.Context) error {
		_, err := a.Log.Append(ctx, env)
		return err
	})
}

// Relay implements Recorder: without an audit log there is nowhere to
// record an admin's decision, so none is taken.
func (r LogRecorder) Relay(context.Context, []byte) error {
	return fmt.Errorf("%w: an exclusion is recorded on the audit log, and this coordinator has none", ErrNoAuditLog)
}
