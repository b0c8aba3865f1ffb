package console

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/fedledger/fedledger/audit"
	pb "github.com/fedledger/fedledger/proto"
)

// LogReader is what the coordinator's console reads from the audit log; a
// *cluster.Client is one.
type LogReader interface {
	ListStudies(ctx context.Context) ([]*pb.StudySummary, error)
	Export(ctx context.Context, study string, limit int64) (*audit.Bundle, error)
}

// TrustFunc gives what a console checks the log's checkpoints against:
// the consortium CA and the audit nodes' checkpoint keys, a quorum of
// which must have signed (an audit.TrustFile's Trust, or HandshakeTrust).
type TrustFunc func(ctx context.Context) (audit.Trust, error)

// CoordinatorConfig is what the coordinator's console reads.
type CoordinatorConfig struct {
	// Status is the coordinator's live status (coordinator.Coordinator's
	// Status); nil shows none.
	Status func() *pb.StudyStatus
	// Log reads the audit log; nil when the coordinator has none, and
	// only its status is shown.
	Log LogReader
	// Trust checks the log's checkpoints; required with Log.
	Trust TrustFunc
	// ExportLimit bounds an exported log's size (0: 1 GiB).
	ExportLimit int64
	// Timeout bounds what one page waits for the log (0: 30 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Validate checks the configuration.
func (c CoordinatorConfig) Validate() error {
	if c.Log != nil && c.Trust == nil {
		return errors.New("console: reading the audit log needs a trust (the nodes' checkpoint keys)")
	}
	if c.Status == nil && c.Log == nil {
		return errors.New("console: the coordinator's console needs its status or the audit log")
	}
	if c.ExportLimit < 0 || c.Timeout < 0 {
		return fmt.Errorf("console: export limit %d, timeout %v", c.ExportLimit, c.Timeout)
	}
	return nil
}

// coordinatorConsole serves the coordinator's pages.
type coordinatorConsole struct {
	cfg    CoordinatorConfig
	log    *slog.Logger
	replay replayCache
}

// NewCoordinator is the coordinator's console: / (the coordinator's
// status and the studies on the log) and /studies/{id} (one study from
// the log: rounds, charts, sites, privacy, flags).
func NewCoordinator(cfg CoordinatorConfig) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.ExportLimit == 0 {
		cfg.ExportLimit = 1 << 30
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	c := &coordinatorConsole{cfg: cfg, log: cfg.Logger}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", c.overview)
	mux.HandleFunc("GET /studies/{id}", c.study)
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		renderError(w, r, http.StatusNotFound, fmt.Sprintf("no page %s on the coordinator's console", r.URL.Path))
	})
	return mux, nil
}

func (c *coordinatorConsole) page(r *http.Request, title, current string, body any) page {
	nav := []navItem{{Href: "/", Label: "Overview", Current: current == "overview"}}
	if s := c.status(); s != nil && s.StudyId != "" {
		nav = append(nav, navItem{Href: "/studies/" + s.StudyId, Label: "Study " + s.StudyId, Current: current == s.StudyId})
	}
	return page{Title: title, Console: "coordinator", Nav: nav, Body: body}
}

func (c *coordinatorConsole) status() *pb.StudyStatus {
	if c.cfg.Status == nil {
		return nil
	}
	return c.cfg.Status()
}

// statusView is the coordinator's live status, as `fedledger study
// status` prints it.
type statusView struct {
	*pb.StudyStatus
	Latest string
	DP     bool
}

func newStatusView(s *pb.StudyStatus) *statusView {
	if s == nil {
		return nil
	}
	return &statusView{StudyStatus: s, Latest: hex.EncodeToString(s.LatestModelSha256), DP: s.DpEpsilonBudget > 0}
}

type overviewBody struct {
	Status   *statusView
	HasLog   bool
	LogError string
	Studies  []*pb.StudySummary
}

func (c *coordinatorConsole) overview(w http.ResponseWriter, r *http.Request) {
	body := overviewBody{Status: newStatusView(c.status()), HasLog: c.cfg.Log != nil}
	if c.cfg.Log != nil {
		ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
		defer cancel()
		studies, err := c.cfg.Log.ListStudies(ctx)
		if err != nil {
			body.LogError = err.Error()
			c.log.Warn("console: listing the studies on the audit log", slog.Any("err", err))
		}
		body.Studies = studies
	}
	render(w, r, http.StatusOK, "overview", c.page(r, "Coordinator", "overview", body), c.log)
}

type studyBody struct {
	Study      *studyView
	Status     *statusView // when this is the coordinator's study
	Checkpoint checkpointView
	// NotOnLog: the coordinator runs this study, and the log does not
	// have it yet.
	NotOnLog bool
}

// checkpointView is a checkpoint the console checked against its trust.
type checkpointView struct {
	Origin  string
	Size    int64
	Root    string
	Signers []string
	Quorum  int
}

func (c *coordinatorConsole) study(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	st := c.status()
	if c.cfg.Log == nil {
		if st != nil && st.StudyId == id {
			render(w, r, http.StatusOK, "study", c.page(r, "Study "+id, id, studyBody{Status: newStatusView(st), NotOnLog: true}), c.log)
			return
		}
		renderError(w, r, http.StatusNotFound, fmt.Sprintf("study %q: this coordinator has no audit log, and runs another study", id))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), c.cfg.Timeout)
	defer cancel()
	rp, err := c.replayLog(ctx, id)
	if err != nil {
		c.log.Warn("console: reading the audit log", slog.String("study", id), slog.Any("err", err))
		renderError(w, r, http.StatusServiceUnavailable, "the audit log could not be read and checked: "+err.Error())
		return
	}
	body := studyBody{Checkpoint: rp.checkpoint}
	if st != nil && st.StudyId == id {
		body.Status = newStatusView(st)
	}
	v, ok := buildStudy(id, rp.steps, rp.leaves)
	if !ok {
		if body.Status != nil {
			body.NotOnLog = true
			render(w, r, http.StatusOK, "study", c.page(r, "Study "+id, id, body), c.log)
			return
		}
		renderError(w, r, http.StatusNotFound, fmt.Sprintf("study %q is not on the audit log", id))
		return
	}
	body.Study = v
	render(w, r, http.StatusOK, "study", c.page(r, "Study "+id, id, body), c.log)
}

// replayed is a log as the console checked it.
type replayed struct {
	checkpoint checkpointView
	steps      []audit.LineageStep
	leaves     [][]byte
}

// replayLog exports the log and checks it as `fedledger verify` does:
// the checkpoint against the trust (a quorum of node keys), every entry
// through the audit rules, the root recomputed.
func (c *coordinatorConsole) replayLog(ctx context.Context, study string) (*replayed, error) {
	b, err := c.cfg.Log.Export(ctx, study, c.cfg.ExportLimit)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	trust, err := c.cfg.Trust(ctx)
	if err != nil {
		return nil, fmt.Errorf("the audit nodes' keys: %w", err)
	}
	return c.replay.get(b, trust)
}

// replayCache keeps the last replayed log: an export of the same tree
// (the same leaves under the same checkpoint) is not replayed again.
type replayCache struct {
	mu   sync.Mutex
	key  [32]byte
	last *replayed
}

func (rc *replayCache) get(b *audit.Bundle, trust audit.Trust) (*replayed, error) {
	key := sha256.Sum256(b.Marshal())
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.last != nil && rc.key == key {
		return rc.last, nil
	}
	cp, signers, steps, err := audit.ReplayBundle(b, trust)
	if err != nil {
		return nil, err
	}
	rc.key = key
	rc.last = &replayed{checkpoint: checkpointView{Origin: cp.Origin, Size: cp.Size, Root: hex.EncodeToString(cp.Root[:]),
		Signers: signers, Quorum: trust.Quorum}, steps: steps, leaves: b.Leaves}
	return rc.last, nil
}
