package console

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// LogNode is what an audit node's console reads from its node; Node
// adapts a *cluster.Node.
type LogNode interface {
	ID() string
	// State is the replica's state: healthy, recovering, halted or
	// inconsistent. Only a healthy replica's entries are shown.
	State() string
	Status() *pb.StatusResponse
	// Ledger is this node's replica.
	Ledger() *audit.Ledger
	// Checkpoint is the tree head now, signed by the leader and cosigned
	// by the voters.
	Checkpoint(ctx context.Context) (signed []byte, signers []string, err error)
	// Export is a cosigned checkpoint and every entry up to it.
	Export(ctx context.Context) (*audit.Bundle, error)
	// LastCosigned is the last checkpoint this node cosigned as a witness.
	LastCosigned() (audit.Checkpoint, bool)
	// Evidence are the checkpoints this node refused to cosign.
	Evidence() [][]byte
}

// Node adapts a running audit node for its console.
func Node(n *cluster.Node) LogNode { return clusterNode{n} }

type clusterNode struct{ *cluster.Node }

func (n clusterNode) Ledger() *audit.Ledger { return n.FSM().Ledger() }

// AuditNodeConfig is what an audit node's console reads.
type AuditNodeConfig struct {
	Node LogNode
	// Trust checks checkpoints and verifies models.
	Trust TrustFunc
	// PageSize is the entries per page (0: 50).
	PageSize int
	// MaxUpload bounds an uploaded model file (0: 256 MiB).
	MaxUpload int64
	// Timeout bounds what one page waits for the cluster (0: 30 s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// Validate checks the configuration.
func (c AuditNodeConfig) Validate() error {
	if c.Node == nil || c.Trust == nil {
		return errors.New("console: an audit node's console needs its node and a trust")
	}
	if c.PageSize < 0 || c.MaxUpload < 0 || c.Timeout < 0 {
		return fmt.Errorf("console: page size %d, upload limit %d, timeout %v", c.PageSize, c.MaxUpload, c.Timeout)
	}
	return nil
}

type auditConsole struct {
	cfg AuditNodeConfig
	log *slog.Logger

	mu   sync.Mutex
	seen []seenCheckpoint // the checkpoints this console has been shown, oldest first
}

// seenCheckpoint is a cosigned checkpoint this console fetched.
type seenCheckpoint struct {
	cp      audit.Checkpoint
	signers []string
	at      time.Time
}

// maxSeen is how many checkpoints the console remembers.
const maxSeen = 20

// NewAuditNode is an audit node's console: / (the node and the cluster),
// /entries (the log, paged), /entries/{index} (an entry and its
// inclusion proof), /checkpoints, and /verify (a model against the log).
func NewAuditNode(cfg AuditNodeConfig) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.PageSize == 0 {
		cfg.PageSize = 50
	}
	if cfg.MaxUpload == 0 {
		cfg.MaxUpload = 256 << 20
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 30 * time.Second
	}
	a := &auditConsole{cfg: cfg, log: cfg.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.overview)
	mux.HandleFunc("GET /entries", a.entries)
	mux.HandleFunc("GET /entries/{index}", a.entry)
	mux.HandleFunc("GET /checkpoints", a.checkpoints)
	mux.HandleFunc("GET /verify", a.verifyForm)
	mux.HandleFunc("POST /verify", a.verify)
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		renderError(w, r, http.StatusNotFound, fmt.Sprintf("no page %s on audit node %s's console", r.URL.Path, cfg.Node.ID()))
	})
	return a.healthy(mux), nil
}

// healthy refuses every page but the static files while the replica is
// not healthy (recovering after corruption, halted): its entries are
// not the log's.
func (a *auditConsole) healthy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st := a.cfg.Node.State(); st != "healthy" && !strings.HasPrefix(r.URL.Path, "/static/") {
			renderError(w, r, http.StatusServiceUnavailable, fmt.Sprintf("audit node %s's replica is %s; it serves no reads until it is healthy", a.cfg.Node.ID(), st))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (a *auditConsole) page(title, current string, body any) page {
	nav := []navItem{{Href: "/", Label: "Node"}, {Href: "/entries", Label: "Entries"}, {Href: "/checkpoints", Label: "Checkpoints"},
		{Href: "/verify", Label: "Verify a model"}}
	for i := range nav {
		nav[i].Current = nav[i].Href == current
	}
	return page{Title: title, Console: "audit node " + a.cfg.Node.ID(), Nav: nav, Body: body}
}

type nodeBody struct {
	Status  *pb.StatusResponse
	State   string
	Root    string
	Studies []audit.StudySummary
}

func (a *auditConsole) overview(w http.ResponseWriter, r *http.Request) {
	st := a.cfg.Node.Status()
	render(w, r, http.StatusOK, "node", a.page("Audit node "+st.Id, "/", nodeBody{Status: st, State: a.cfg.Node.State(),
		Root: hex.EncodeToString(st.Root), Studies: a.cfg.Node.Ledger().Studies()}), a.log)
}

// entryRow is one entry in the list.
type entryRow struct {
	Index     int64
	Kind      string
	Study     string
	Round     uint64
	Submitter string
	Time      time.Time
	Bytes     int
	LeafHash  string
	Err       string
}

func entryRowOf(i int64, leaf []byte) entryRow {
	h := tlog.RecordHash(leaf)
	row := entryRow{Index: i, Bytes: len(leaf), LeafHash: hex.EncodeToString(h[:])}
	env, err := audit.UnmarshalEnvelope(leaf)
	if err != nil {
		row.Err = err.Error()
		return row
	}
	rec, err := audit.UnmarshalRecord(env.Body)
	if err != nil {
		row.Err = err.Error()
		return row
	}
	row.Kind, row.Study, row.Round, row.Submitter, row.Time = rec.Kind.String(), rec.StudyID, rec.Round, rec.SubmitterID, time.Unix(0, rec.TimestampUnixNs)
	return row
}

type entriesBody struct {
	Size       int64
	Page, Last int
	From, To   int64 // shown: [From, To)
	Rows       []entryRow
	Prev, Next int
}

func (a *auditConsole) entries(w http.ResponseWriter, r *http.Request) {
	lg := a.cfg.Node.Ledger().Log()
	size := lg.Size()
	last := max(1, int((size+int64(a.cfg.PageSize)-1)/int64(a.cfg.PageSize)))
	p := 1
	if s := r.URL.Query().Get("page"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			renderError(w, r, http.StatusBadRequest, fmt.Sprintf("page %q: want a page number from 1 to %d", s, last))
			return
		}
		if n > last {
			renderError(w, r, http.StatusNotFound, fmt.Sprintf("page %d: the log has %d entries, %d pages of %d", n, size, last, a.cfg.PageSize))
			return
		}
		p = n
	}
	body := entriesBody{Size: size, Page: p, Last: last, From: int64(p-1) * int64(a.cfg.PageSize)}
	body.To = min(size, body.From+int64(a.cfg.PageSize))
	if p > 1 {
		body.Prev = p - 1
	}
	if p < last {
		body.Next = p + 1
	}
	for i := body.From; i < body.To; i++ {
		leaf, err := lg.Leaf(i)
		if err != nil {
			break
		}
		body.Rows = append(body.Rows, entryRowOf(i, leaf))
	}
	render(w, r, http.StatusOK, "entries", a.page("Entries", "/entries", body), a.log)
}

// entryBody is one entry, decoded, with its inclusion proof.
type entryBody struct {
	Row      entryRow
	Record   *audit.Record
	Signer   string
	Evals    []evalRow
	Proof    *proofView
	ProofErr string
}

type evalRow struct {
	Site    string
	Figures []audit.Metric
}

// proofView is an entry's inclusion proof in a cosigned checkpoint, and
// whether it verifies.
type proofView struct {
	Checkpoint checkpointView
	Hashes     []string
	// Verified: the checkpoint has a quorum of trusted signatures and the
	// proof leads from the entry to its root.
	Verified bool
	Reason   string
}

func (a *auditConsole) entry(w http.ResponseWriter, r *http.Request) {
	s := r.PathValue("index")
	i, err := strconv.ParseInt(s, 10, 64)
	if err != nil || i < 0 || strconv.FormatInt(i, 10) != s {
		renderError(w, r, http.StatusBadRequest, fmt.Sprintf("entry %q: want an index, 0 or more", s))
		return
	}
	lg := a.cfg.Node.Ledger()
	leaf, err := lg.Log().Leaf(i)
	if err != nil {
		renderError(w, r, http.StatusNotFound, fmt.Sprintf("entry %d: this replica has %d entries", i, lg.Log().Size()))
		return
	}
	body := entryBody{Row: entryRowOf(i, leaf)}
	if env, err := audit.UnmarshalEnvelope(leaf); err == nil {
		if c, err := x509.ParseCertificate(env.CertDER); err == nil {
			body.Signer = c.Subject.CommonName
			if len(c.Subject.OrganizationalUnit) == 1 {
				body.Signer += " (" + c.Subject.OrganizationalUnit[0] + ")"
			}
		}
		if rec, err := audit.UnmarshalRecord(env.Body); err == nil {
			body.Record = rec
			for _, e := range rec.Evaluations {
				body.Evals = append(body.Evals, evalRow{Site: e.Site, Figures: e.Metrics})
			}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	body.Proof, err = a.prove(ctx, i, leaf)
	if err != nil {
		body.ProofErr = err.Error()
	}
	render(w, r, http.StatusOK, "entry", a.page(fmt.Sprintf("Entry %d", i), "/entries", body), a.log)
}

// cosigned fetches the checkpoint the voters cosign now and opens it
// against the trust; a checkpoint that does not open comes back with the
// reason.
func (a *auditConsole) cosigned(ctx context.Context) (audit.Checkpoint, []string, error) {
	signed, _, err := a.cfg.Node.Checkpoint(ctx)
	if err != nil {
		return audit.Checkpoint{}, nil, fmt.Errorf("no cosigned checkpoint now: %w", err)
	}
	trust, err := a.cfg.Trust(ctx)
	if err != nil {
		return audit.Checkpoint{}, nil, fmt.Errorf("the audit nodes' keys: %w", err)
	}
	cp, signers, err := audit.OpenCheckpoint(signed, trust.Keys, trust.Quorum)
	if err == nil && trust.Origin != "" && cp.Origin != trust.Origin {
		err = fmt.Errorf("%w: checkpoint of log %q, trusted log is %q", audit.ErrBadCheckpoint, cp.Origin, trust.Origin)
	}
	if err != nil {
		return cp, signers, err
	}
	a.remember(cp, signers)
	return cp, signers, nil
}

// prove is entry i's inclusion proof in the checkpoint cosigned now,
// computed from this replica and checked against the checkpoint's root.
func (a *auditConsole) prove(ctx context.Context, i int64, leaf []byte) (*proofView, error) {
	cp, signers, err := a.cosigned(ctx)
	if err != nil {
		return nil, err
	}
	trust, _ := a.cfg.Trust(ctx)
	pv := &proofView{Checkpoint: checkpointView{Origin: cp.Origin, Size: cp.Size, Root: hex.EncodeToString(cp.Root[:]), Signers: signers, Quorum: trust.Quorum}}
	if i >= cp.Size {
		pv.Reason = fmt.Sprintf("entry %d is not yet under the cosigned checkpoint (size %d)", i, cp.Size)
		return pv, nil
	}
	lg, err := a.replicaAtLeast(ctx, cp.Size)
	if err != nil {
		return pv, err
	}
	proof, err := lg.Log().ProveInclusion(i, cp.Size)
	if err != nil {
		return pv, err
	}
	for _, h := range proof {
		pv.Hashes = append(pv.Hashes, hex.EncodeToString(h[:]))
	}
	if err := audit.CheckInclusion(proof, i, cp.Size, cp.Root, leaf); err != nil {
		pv.Reason = "the proof does not lead to the checkpoint's root: " + err.Error()
		return pv, nil
	}
	pv.Verified = true
	return pv, nil
}

// replicaAtLeast waits briefly for this replica to hold size entries (a
// follower may trail the leader's checkpoint by a few milliseconds).
func (a *auditConsole) replicaAtLeast(ctx context.Context, size int64) (*audit.Ledger, error) {
	for {
		lg := a.cfg.Node.Ledger()
		if lg.Log().Size() >= size {
			return lg, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("this replica has %d entries, the checkpoint %d: %w", lg.Log().Size(), size, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// remember keeps a cosigned checkpoint the console was shown.
func (a *auditConsole) remember(cp audit.Checkpoint, signers []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.seen); n > 0 && a.seen[n-1].cp == cp {
		a.seen[n-1].signers = signers
		return
	}
	a.seen = append(a.seen, seenCheckpoint{cp: cp, signers: signers, at: time.Now()})
	if len(a.seen) > maxSeen {
		a.seen = a.seen[len(a.seen)-maxSeen:]
	}
}

type checkpointsBody struct {
	Current    *checkpointView
	CurrentErr string
	// Witness is this node's last cosigned checkpoint.
	Witness  *checkpointView
	Evidence []evidenceView
	Seen     []seenView
}

type evidenceView struct {
	Checkpoint checkpointView
	Err        string
}

// seenView is a checkpoint the console has been shown, and whether this
// replica proves the one before it is its prefix.
type seenView struct {
	Checkpoint checkpointView
	At         time.Time
	Consistent string // "" for the first
}

func (a *auditConsole) checkpoints(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	var body checkpointsBody
	cp, signers, err := a.cosigned(ctx)
	if err != nil {
		body.CurrentErr = err.Error()
	} else {
		trust, _ := a.cfg.Trust(ctx)
		body.Current = &checkpointView{Origin: cp.Origin, Size: cp.Size, Root: hex.EncodeToString(cp.Root[:]), Signers: signers, Quorum: trust.Quorum}
	}
	if w, ok := a.cfg.Node.LastCosigned(); ok {
		body.Witness = &checkpointView{Origin: w.Origin, Size: w.Size, Root: hex.EncodeToString(w.Root[:]), Signers: []string{a.cfg.Node.ID()}}
	}
	for _, e := range a.cfg.Node.Evidence() {
		ev := evidenceView{}
		if c, err := audit.PeekCheckpoint(e); err == nil {
			ev.Checkpoint = checkpointView{Origin: c.Origin, Size: c.Size, Root: hex.EncodeToString(c.Root[:])}
		} else {
			ev.Err = err.Error()
		}
		body.Evidence = append(body.Evidence, ev)
	}
	a.mu.Lock()
	seen := slices.Clone(a.seen)
	a.mu.Unlock()
	lg := a.cfg.Node.Ledger()
	for i := len(seen) - 1; i >= 0; i-- {
		s := seen[i]
		sv := seenView{Checkpoint: checkpointView{Origin: s.cp.Origin, Size: s.cp.Size, Root: hex.EncodeToString(s.cp.Root[:]), Signers: s.signers}, At: s.at}
		if i > 0 {
			sv.Consistent = consistency(lg, seen[i-1].cp, s.cp)
		}
		body.Seen = append(body.Seen, sv)
	}
	render(w, r, http.StatusOK, "checkpoints", a.page("Checkpoints", "/checkpoints", body), a.log)
}

// consistency proves, from this replica, that old is a prefix of cur, and
// says whether the proof checks against both roots.
func consistency(lg *audit.Ledger, old, cur audit.Checkpoint) string {
	if old.Size == cur.Size {
		if old.Root == cur.Root {
			return "same tree"
		}
		return "INCONSISTENT: same size, another root"
	}
	if old.Size == 0 {
		return "extends the empty tree"
	}
	p, err := lg.Log().ProveConsistency(old.Size, cur.Size)
	if err != nil {
		return "no proof: " + err.Error()
	}
	if err := audit.CheckConsistency(p, old.Size, old.Root, cur.Size, cur.Root); err != nil {
		return "INCONSISTENT: " + err.Error()
	}
	return fmt.Sprintf("extends size %d (consistency proof of %d hashes checks)", old.Size, len(p))
}

// verifyBody is the verify page: its form, and a verdict once asked.
type verifyBody struct {
	MaxUpload string
	SHA256    string
	Study     string
	// InputErr is a problem with what was asked (400).
	InputErr string
	Asked    bool
	Verified bool
	Reason   string
	Model    string
	FileName string
	Report   *audit.Report
}

func (a *auditConsole) verifyForm(w http.ResponseWriter, r *http.Request) {
	render(w, r, http.StatusOK, "verify", a.page("Verify a model", "/verify", verifyBody{MaxUpload: sizeText(a.cfg.MaxUpload)}), a.log)
}

// verify checks a model against the log as `fedledger verify --audit`
// does: a bundle exported now (a cosigned checkpoint and every entry),
// the checkpoint against the trust, every entry through the rules, the
// root recomputed, and the model walked back to its study's initial
// model. A model that fails is a 200 page saying FAILED and why; only a
// bad request (no model, a malformed hash) is a 400.
func (a *auditConsole) verify(w http.ResponseWriter, r *http.Request) {
	body := verifyBody{MaxUpload: sizeText(a.cfg.MaxUpload)}
	bad := func(status int, msg string) {
		body.InputErr = msg
		render(w, r, status, "verify", a.page("Verify a model", "/verify", body), a.log)
	}
	r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxUpload+1<<20)
	err := r.ParseMultipartForm(32 << 20)
	if errors.Is(err, http.ErrNotMultipart) {
		err = r.ParseForm() // a hash alone may come URL-encoded
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			bad(http.StatusRequestEntityTooLarge, fmt.Sprintf("the upload is larger than %s", body.MaxUpload))
			return
		}
		bad(http.StatusBadRequest, "the form could not be read: "+err.Error())
		return
	}
	body.SHA256 = strings.TrimSpace(r.PostFormValue("sha256"))
	body.Study = strings.TrimSpace(r.PostFormValue("study"))
	var sum audit.Hash
	var f multipart.File
	var hdr *multipart.FileHeader
	err = http.ErrMissingFile
	if r.MultipartForm != nil {
		defer r.MultipartForm.RemoveAll()
		f, hdr, err = r.FormFile("model")
	}
	switch {
	case err == nil:
		defer f.Close()
		data, err := io.ReadAll(io.LimitReader(f, a.cfg.MaxUpload+1))
		if err != nil {
			bad(http.StatusBadRequest, "the uploaded file could not be read: "+err.Error())
			return
		}
		if int64(len(data)) > a.cfg.MaxUpload {
			bad(http.StatusRequestEntityTooLarge, fmt.Sprintf("the model file is larger than %s", body.MaxUpload))
			return
		}
		body.FileName = hdr.Filename
		sum = sha256.Sum256(data)
		body.Model = hexOf(sum)
		if len(data) == 0 {
			bad(http.StatusBadRequest, "the uploaded file is empty")
			return
		}
		body.Asked = true
		if _, _, err := model.Decode(data); err != nil {
			body.Reason = fmt.Sprintf("%s is not a fedledger model file: %v", hdr.Filename, err)
			a.verdict(w, r, body)
			return
		}
	case errors.Is(err, http.ErrMissingFile):
		if body.SHA256 == "" {
			bad(http.StatusBadRequest, "give a model file or its SHA-256")
			return
		}
		h, err := hex.DecodeString(strings.ToLower(body.SHA256))
		if err != nil || len(h) != len(sum) {
			bad(http.StatusBadRequest, fmt.Sprintf("SHA-256 %q: want 64 hex digits", body.SHA256))
			return
		}
		copy(sum[:], h)
		body.Model, body.Asked = hexOf(sum), true
	default:
		bad(http.StatusBadRequest, "the uploaded file could not be read: "+err.Error())
		return
	}
	if body.Study != "" && tlsutil.ValidID(body.Study) != nil {
		bad(http.StatusBadRequest, fmt.Sprintf("study %q is not a valid study id", body.Study))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.cfg.Timeout)
	defer cancel()
	b, err := a.cfg.Node.Export(ctx)
	if err != nil {
		renderError(w, r, http.StatusServiceUnavailable, "the log could not be exported to verify against (no cosigned checkpoint now?): "+err.Error())
		return
	}
	trust, err := a.cfg.Trust(ctx)
	if err != nil {
		renderError(w, r, http.StatusServiceUnavailable, "the audit nodes' keys: "+err.Error())
		return
	}
	study := body.Study
	if study == "" {
		if study, err = audit.FindStudy(b, sum); err != nil {
			body.Reason = err.Error()
			a.verdict(w, r, body)
			return
		}
	}
	lin, err := audit.VerifyBundle(b, trust, study, sum)
	if err != nil {
		body.Reason = err.Error()
		a.verdict(w, r, body)
		return
	}
	body.Verified, body.Report = true, audit.NewReport(lin, sum)
	a.verdict(w, r, body)
}

func (a *auditConsole) verdict(w http.ResponseWriter, r *http.Request, body verifyBody) {
	verdict := "VERIFIED"
	if !body.Verified {
		verdict = "FAILED"
	}
	a.log.Info("console: model checked against the log", slog.String("model", body.Model), slog.String("verdict", verdict), slog.String("reason", body.Reason))
	render(w, r, http.StatusOK, "verify", a.page("Verify a model: "+verdict, "/verify", body), a.log)
}

func sizeText(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + " MiB"
	case n >= 1<<10 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}
