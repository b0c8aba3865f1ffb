package console

import (
	"context"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	pb "github.com/fedledger/fedledger/proto"
)

// dpParams are a record-level DP study's parameters (ε budget 4).
func dpParams() []audit.Param {
	return []audit.Param{{Name: "local_steps", Value: "20"}, {Name: audit.ParamDPEpsilon, Value: "4"}, {Name: audit.ParamDPDelta, Value: "1e-05"},
		{Name: audit.ParamDPNoiseMultiplier, Value: "2"}, {Name: audit.ParamDPClipNorm, Value: "1"}, {Name: audit.ParamDPSampleRate, Value: "0.05"}}
}

// logFixture is a ledger holding a secure DP study "heart" with two
// completed rounds (the first with the sites' signed evaluations) and a
// failed one, and two audit-node keys that sign its checkpoints.
type logFixture struct {
	*audittest.Fixture
	signers []note.Signer
	trust   audit.Trust
	final   audit.Hash
}

const testOrigin = "test/audit-log"

func newLogFixture(t *testing.T) *logFixture {
	t.Helper()
	f := &logFixture{Fixture: audittest.NewFixtureWith(t, audittest.Options{Threshold: 2, Hyperparameters: dpParams()})}
	r1 := f.Round(1, audittest.Output(0), audittest.Output(1), audittest.Sites...)
	for i, s := range audittest.Sites {
		r1.Evaluations = append(r1.Evaluations, audit.Evaluation{Site: s, Metrics: []audit.Metric{
			{Name: "test_n", Value: float64(10 * (i + 1))}, {Name: "global_test_accuracy", Value: 0.5 + 0.1*float64(i)},
			{Name: "global_test_loss", Value: 0.7 - 0.1*float64(i)}}})
	}
	f.Vouch(r1)
	f.MustApply(t, f.Coord, r1)
	f.MustApply(t, f.Coord, f.Failed(2, audittest.Output(1)))
	f.MustApply(t, f.Coord, f.Round(3, audittest.Output(1), audittest.Output(3), "site-a", "site-b"))
	f.final = audittest.Output(3)
	var vs []note.Verifier
	for _, name := range []string{"audit-1", "audit-2"} {
		s, v := audittest.NoteKeys(t, name)
		f.signers, vs = append(f.signers, s), append(vs, v)
	}
	f.trust = audit.Trust{Roots: f.CA.Pool(), Keys: note.VerifierList(vs...), Quorum: 2, Origin: testOrigin}
	return f
}

func (f *logFixture) trustFunc(context.Context) (audit.Trust, error) { return f.trust, nil }

// fakeNode is an audit node over the fixture's ledger: it signs
// checkpoints with the fixture's keys, as the leader and a witness would.
type fakeNode struct {
	f        *logFixture
	mu       sync.Mutex
	state    string
	cpErr    error
	evidence [][]byte
	// tamper, when set, changes an exported bundle.
	tamper func(*audit.Bundle)
}

func newFakeNode(f *logFixture) *fakeNode { return &fakeNode{f: f, state: "healthy"} }

func (n *fakeNode) ID() string { return "audit-1" }
func (n *fakeNode) State() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state
}
func (n *fakeNode) Ledger() *audit.Ledger { return n.f.L }
func (n *fakeNode) Status() *pb.StatusResponse {
	size, root, _ := n.f.L.Root()
	return &pb.StatusResponse{Id: "audit-1", State: "Leader", LeaderId: "audit-1", LeaderAddress: "127.0.0.1:7600", TreeSize: size, Root: root[:],
		Members: []*pb.Member{{Id: "audit-1", Address: "127.0.0.1:7600", Voter: true}, {Id: "audit-2", Address: "127.0.0.1:7601", Voter: true}}}
}

func (n *fakeNode) Checkpoint(context.Context) ([]byte, []string, error) {
	n.mu.Lock()
	err := n.cpErr
	n.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	size, root, err := n.f.L.Root()
	if err != nil {
		return nil, nil, err
	}
	signed, err := note.Sign(&note.Note{Text: audit.Checkpoint{Origin: testOrigin, Size: size, Root: root}.String()}, n.f.signers...)
	return signed, []string{"audit-1", "audit-2"}, err
}

func (n *fakeNode) Export(ctx context.Context) (*audit.Bundle, error) {
	signed, _, err := n.Checkpoint(ctx)
	if err != nil {
		return nil, err
	}
	b := &audit.Bundle{Checkpoint: signed, Leaves: n.f.L.Leaves()}
	if n.tamper != nil {
		n.tamper(b)
	}
	return b, nil
}

func (n *fakeNode) LastCosigned() (audit.Checkpoint, bool) {
	size, root, _ := n.f.L.Root()
	return audit.Checkpoint{Origin: testOrigin, Size: size, Root: root}, true
}

func (n *fakeNode) Evidence() [][]byte { return n.evidence }

// fakeLog is the coordinator's view of the log: the node's export and
// its ledger's study summaries.
type fakeLog struct {
	n   *fakeNode
	err error
}

func (l *fakeLog) ListStudies(context.Context) ([]*pb.StudySummary, error) {
	if l.err != nil {
		return nil, l.err
	}
	var out []*pb.StudySummary
	for _, s := range l.n.f.L.Studies() {
		out = append(out, &pb.StudySummary{StudyId: s.ID, RoundsCompleted: s.Completed, RoundsFailed: s.Failed, Rounds: s.Rounds,
			Secure: s.Secure, HeParams: s.HEParams, Threshold: s.Threshold, MinContributors: s.MinContributors, LatestModelSha256: s.LatestModel[:]})
	}
	return out, nil
}

func (l *fakeLog) Export(ctx context.Context, _ string, _ int64) (*audit.Bundle, error) {
	if l.err != nil {
		return nil, l.err
	}
	return l.n.Export(ctx)
}

var errDown = errors.New("audit: no leader with a quorum of nodes; nothing was acknowledged")

// get serves one request to h and returns the status and body.
func get(t *testing.T, h http.Handler, method, target string, body io.Reader, contentType string) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, target, body)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	b := w.Body.String()
	if strings.Contains(strings.ToLower(b), "<script") {
		t.Errorf("%s %s: the page has a script", method, target)
	}
	// Text as a reader sees it: &#34; is a quote.
	return w.Code, html.UnescapeString(b)
}
