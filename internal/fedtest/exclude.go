package fedtest

import (
	"context"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	pb "github.com/fedledger/fedledger/proto"
)

// Exclude signs, as the federation's admin, site's exclusion from study's
// round from (or the first later round that has not stopped collecting
// updates) and has the coordinator relay it to the audit log
// (StudyAdmin.Exclude), as `fedledger study exclude` does.
func (f *Federation) Exclude(ctx context.Context, study, site string, from uint64, reason string) error {
	conn, err := f.Dial(f.PKI.Admin)
	if err != nil {
		return err
	}
	defer conn.Close()
	api := pb.NewStudyAdminClient(conn)
	for try := 0; ; try++ {
		env, err := audit.Sign(f.PKI.Admin, audit.ExclusionRecord(study, site, from, reason, f.PKI.Admin.ID, true, time.Now().UnixNano()))
		if err != nil {
			return err
		}
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		_, err = api.Exclude(cctx, &pb.ExcludeRequest{Envelope: env.Marshal()})
		cancel()
		if status.Code(err) != codes.FailedPrecondition || try == 3 {
			return err
		}
		from++ // that round had collected its updates already
	}
}
