package fedtest

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator"
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

// LeftOutAdmin is an admin who excludes, from the next round on, every
// site a round's norm check left out, once each, in the background (the
// coordinator calls OnRound from its event loop). Done, when set, hears
// each exclusion's outcome; Wait waits for those under way.
type LeftOutAdmin struct {
	Done func(site string, from uint64, reason string, err error)

	mu   sync.Mutex
	seen map[string]bool
	wg   sync.WaitGroup
}

// LeftOut excludes r's left-out sites not excluded yet.
func (a *LeftOutAdmin) LeftOut(ctx context.Context, fed *Federation, study string, r coordinator.RoundReport) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.seen == nil {
		a.seen = map[string]bool{}
	}
	for _, site := range r.Excluded {
		if a.seen[site] {
			continue
		}
		a.seen[site] = true
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			from, reason := uint64(r.Round)+1, fmt.Sprintf("its update was past the norm bound in round %d", r.Round)
			err := fed.Exclude(ctx, study, site, from, reason)
			if a.Done != nil {
				a.Done(site, from, reason, err)
			}
		}()
	}
}

// Wait waits for the exclusions under way.
func (a *LeftOutAdmin) Wait() { a.wg.Wait() }
