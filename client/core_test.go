package client

// The in-memory rig for the client's decisions: a fake coordinator (objects
// by hash, the uploads it received), a fake audit log, real identities
// (a consortium CA, client certificates) and real key material: three
// in-process clients run a real key setup, this file playing the
// coordinator's relay, and a real first round (three encrypted updates,
// their aggregate, two decryption shares, the combined model and optimiser
// state, as coordinator/work.go computes them). That is built once per
// test binary (the fixture); every test takes fresh clients over copies of
// the key material (clone), so tests do not share decryption or
// countersigning state and can run in any order.

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// ---- fakes ---------------------------------------------------------------

// fakeCoord is the coordinator as the client sees it: objects by SHA-256,
// and the uploads it accepted.
type fakeCoord struct {
	mu      sync.Mutex
	objects map[[32]byte][]byte
	// wrong, when set for a hash, is served instead of the object.
	wrong   map[[32]byte][]byte
	fetches map[[32]byte]int
	updates []submitted
	shares  []submitted
	// reject, when set, is the verdict on every upload.
	reject error
}

// submitted is one payload the client submitted, with its first chunk's
// header.
type submitted struct {
	study   string
	round   uint64
	payload []byte
	header  *pb.UpdateHeader
	share   *pb.ShareHeader
}

func newFakeCoord(objects map[[32]byte][]byte) *fakeCoord {
	if objects = maps.Clone(objects); objects == nil {
		objects = map[[32]byte][]byte{}
	}
	return &fakeCoord{objects: objects, wrong: map[[32]byte][]byte{}, fetches: map[[32]byte]int{}}
}

// put stores b and names it.
func (f *fakeCoord) put(b []byte) *pb.Object {
	f.mu.Lock()
	defer f.mu.Unlock()
	sum := sha256.Sum256(b)
	f.objects[sum] = b
	return &pb.Object{Sha256: sum[:], Size: uint64(len(b))}
}

// serveWrong makes the coordinator answer a fetch of sum with b.
func (f *fakeCoord) serveWrong(sum []byte, b []byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wrong[[32]byte(sum)] = b
}

func (f *fakeCoord) Fetch(_ context.Context, study string, sum []byte, size uint64, limit int64) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if size > uint64(limit) {
		return nil, fmt.Errorf("fake coordinator: announced object of %d bytes exceeds the limit of %d", size, limit)
	}
	key := [32]byte(sum)
	f.fetches[key]++
	if b, ok := f.wrong[key]; ok {
		return b, nil
	}
	b, ok := f.objects[key]
	if !ok {
		return nil, fmt.Errorf("fake coordinator: no object %x", sum[:8])
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("fake coordinator: object of %d bytes exceeds the limit of %d", len(b), limit)
	}
	return b, nil
}

func (f *fakeCoord) fetched(sum []byte) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.fetches[[32]byte(sum)]
}

// receive reassembles an upload strictly, as the coordinator does, and
// stores its payload (fetchable afterwards, like the coordinator's store).
func (f *fakeCoord) receive(chunks []*pb.Chunk) (submitted, error) {
	if len(chunks) == 0 {
		return submitted{}, errors.New("fake coordinator: empty upload")
	}
	a, err := chunk.NewAssembler(chunks[0], 1<<30, "", nil)
	if err != nil {
		return submitted{}, err
	}
	for _, ch := range chunks[1:] {
		if err := a.Add(ch); err != nil {
			return submitted{}, err
		}
	}
	b, _, err := a.Bytes()
	if err != nil {
		return submitted{}, err
	}
	f.put(b)
	return submitted{study: a.Study(), round: a.Round(), payload: b, header: chunks[0].Header, share: chunks[0].Share}, nil
}

func (f *fakeCoord) SubmitUpdate(_ context.Context, chunks []*pb.Chunk) error {
	return f.take(chunks, &f.updates)
}

func (f *fakeCoord) SubmitShare(_ context.Context, chunks []*pb.Chunk) error {
	return f.take(chunks, &f.shares)
}

// take receives an upload into list, unless the coordinator rejects it.
func (f *fakeCoord) take(chunks []*pb.Chunk, list *[]submitted) error {
	if f.reject != nil {
		return f.reject
	}
	u, err := f.receive(chunks)
	if err != nil {
		return err
	}
	f.mu.Lock()
	*list = append(*list, u)
	f.mu.Unlock()
	return nil
}

// fakeLog is the audit log as the client sees it.
type fakeLog struct {
	mu     sync.Mutex
	output [32]byte
	round  uint64
	record []byte    // the study-created envelope
	key    *[32]byte // the key-setup record's collective key (nil: none)
	err    error
}

func (l *fakeLog) KeySetup(context.Context, string) ([32]byte, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil || l.key == nil {
		return [32]byte{}, false, l.err
	}
	return *l.key, true, nil
}

func (l *fakeLog) LatestOutput(context.Context, string) ([32]byte, uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.output, l.round, l.err
}

func (l *fakeLog) StudyRecord(context.Context, string) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return nil, l.err
	}
	if l.record == nil {
		return nil, audit.ErrUnknownStudy
	}
	return l.record, nil
}

// at sets the log's latest committed output and round.
func (l *fakeLog) at(output []byte, round uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.output, l.round = [32]byte(output), round
}

// ---- clients ------------------------------------------------------------

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// hospitals are the fixture's sites and the shipped data each one holds.
var hospitals = map[string]string{"site-a": "cleveland", "site-b": "hungary", "site-c": "va"}

// siteConfig is a site's configuration: its certificate from pki, its
// heart-disease data, dataDir for its key material, and audit nodes (the
// fake log answers for them).
func siteConfig(pki *audittest.PKI, site, dataDir string) Config {
	cfg := DefaultConfig()
	cfg.CoordinatorAddr = "127.0.0.1:1"
	cfg.TLS = tlsutil.ClientConfig(pki.Hospitals[site], pki.CA.Pool(), "127.0.0.1")
	cfg.Data.Heart = hospitals[site]
	cfg.DataDir = dataDir
	cfg.AuditNodes = []string{"127.0.0.1:2"}
	return cfg
}

// newClient is New without the network: cfg is validated in full, and the
// fake log answers for cfg.AuditNodes.
func newClient(cfg Config, log AuditLog) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	nodes, admins := cfg.AuditNodes, cfg.Policy.Admins
	cfg.AuditNodes, cfg.Policy.Admins = nil, nil
	c, err := New(cfg, quiet)
	if err != nil {
		return nil, err
	}
	c.cfg.AuditNodes, c.cfg.Policy.Admins = nodes, admins
	if len(nodes) > 0 {
		c.audit = log
	}
	return c, nil
}

// ---- the study ----------------------------------------------------------

const studyID = "heart-study"

var sites = []string{"site-a", "site-b", "site-c"}

// secureSpec is the fixture's secure study: logistic regression on the 13
// heart features, K=2 of 3 sites, t=2, FedAdam, 3 rounds.
func secureSpec() *pb.StudySpec {
	s, _ := aggregation.DefaultConfig(aggregation.FedAdam)
	return &pb.StudySpec{
		StudyId: studyID, Model: &pb.ModelSpec{Kind: model.KindLogReg, Inputs: 13},
		Training: &pb.TrainingParams{Optimizer: model.OptAdam, LearningRate: 0.01, BatchSize: 8, LocalSteps: 4, Seed: 7},
		Rounds:   3, MinClients: 2, Strategy: s.Name, Mode: modeSecure, HePreset: secure.Default.ID, Threshold: 2,
		ServerOptimizer: &pb.ServerOptimizer{Name: s.Name, ServerLr: s.ServerLR, Beta1: s.Beta1, Beta2: s.Beta2, Tau: s.Tau},
	}
}

// plaintextSpec is the same study in plaintext mode with FedAvg.
func plaintextSpec() *pb.StudySpec {
	s := secureSpec()
	s.Mode, s.HePreset, s.Threshold = modePlaintext, "", 0
	s.Strategy, s.ServerOptimizer = aggregation.FedAvg, &pb.ServerOptimizer{Name: aggregation.FedAvg, ServerLr: 1}
	return s
}

// strategyOf is the study's server optimiser.
func strategyOf(s *pb.StudySpec) aggregation.Config {
	o := s.ServerOptimizer
	return aggregation.Config{Name: o.Name, ServerLR: o.ServerLr, Beta1: o.Beta1, Beta2: o.Beta2, Tau: o.Tau}
}

// studyRecord is the admin-signed study-created record of s.
func studyRecord(admin *tlsutil.Identity, s *pb.StudySpec, initial [32]byte, approved ...string) ([]byte, error) {
	rec := &audit.Record{Kind: audit.KindStudyCreated, StudyID: s.StudyId, OutputModel: initial, ApprovedSites: approved,
		MinContributors: s.MinClients, Rounds: s.Rounds, Strategy: s.Strategy, TimestampUnixNs: time.Now().UnixNano(), SubmitterID: admin.ID}
	if s.Mode == modeSecure {
		rec.HEParamsID, rec.Threshold = s.HePreset, s.Threshold
	}
	for _, p := range announcedParams(s) {
		if p.Value != "" {
			rec.Hyperparameters = append(rec.Hyperparameters, p)
		}
	}
	env, err := audit.Sign(admin, rec)
	if err != nil {
		return nil, err
	}
	return env.Marshal(), nil
}

// join is the Welcome as the session handles it: checkStudy, then join.
func join(c *Client, s *pb.StudySpec) error {
	if reason := c.checkStudy(context.Background(), s); reason != "" {
		return errors.New(reason)
	}
	c.join(s)
	return nil
}

// ---- key setup, the coordinator's relay --------------------------------

// keySetupTask is the coordinator's KeySetupTask for the fixture's sites,
// at points 1, 2, 3.
func keySetupTask(s *pb.StudySpec) *pb.KeySetupTask {
	t := &pb.KeySetupTask{StudyId: s.StudyId, HePreset: s.HePreset, CrsSeed: []byte("crs seed of the client tests"), Threshold: s.Threshold}
	for i, site := range sites {
		t.Participants = append(t.Participants, &pb.Participant{ClientId: site, Point: uint64(i + 1)})
	}
	return t
}

// runKeySetup relays a key setup among clients (by site), as the
// coordinator does: the task to all, every key share with its certificate
// to all, every share box to its recipient. It returns every site's
// KeySetupDone.
func runKeySetup(pki *audittest.PKI, clients map[string]*Client, task *pb.KeySetupTask) (map[string]*pb.KeySetupDone, error) {
	peers, err := startKeySetup(pki, clients, task)
	if err != nil {
		return nil, err
	}
	return relayKeySetup(clients, task, peers)
}

// startKeySetup gives every participant the task and returns their key
// shares as the coordinator relays them (by site, with the certificate).
func startKeySetup(pki *audittest.PKI, clients map[string]*Client, task *pb.KeySetupTask) (map[string]*pb.PeerKey, error) {
	peers := map[string]*pb.PeerKey{}
	for _, p := range task.Participants {
		out, err := clients[p.ClientId].onKeySetupTask(task)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.ClientId, err)
		}
		if len(out) != 1 || out[0].GetKeyShare() == nil {
			return nil, fmt.Errorf("%s: key setup task answered with %v", p.ClientId, out)
		}
		peers[p.ClientId] = &pb.PeerKey{ClientId: p.ClientId, Certificate: pki.Hospitals[p.ClientId].Cert.Raw, Share: out[0].GetKeyShare()}
	}
	return peers, nil
}

// relayKeySetup relays every participant's key share to every participant
// and every share box to its recipient; it returns the KeySetupDone of
// every site that finished.
func relayKeySetup(clients map[string]*Client, task *pb.KeySetupTask, peers map[string]*pb.PeerKey) (map[string]*pb.KeySetupDone, error) {
	byPoint := map[uint64]string{}
	for _, p := range task.Participants {
		byPoint[p.Point] = p.ClientId
	}
	done := map[string]*pb.KeySetupDone{}
	var boxes []*pb.ShareBox
	collect := func(site string, out []*pb.ClientMessage, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", site, err)
		}
		for _, m := range out {
			switch {
			case m.GetShareBox() != nil:
				boxes = append(boxes, m.GetShareBox())
			case m.GetKeyDone() != nil:
				done[site] = m.GetKeyDone()
			default:
				return fmt.Errorf("%s: unexpected message %T", site, m.Msg)
			}
		}
		return nil
	}
	for _, from := range task.Participants {
		for _, to := range task.Participants {
			out, err := clients[to.ClientId].onPeerKey(peers[from.ClientId])
			if err := collect(to.ClientId, out, err); err != nil {
				return nil, err
			}
		}
	}
	for len(boxes) > 0 {
		b := boxes[0]
		boxes = boxes[1:]
		to := byPoint[b.ToPoint]
		out, err := clients[to].onShareBox(b)
		if err := collect(to, out, err); err != nil {
			return nil, err
		}
	}
	return done, nil
}

// ---- the fixture ------------------------------------------------------

// fixture is a secure study after key setup and one real round.
type fixture struct {
	pki  *audittest.PKI
	spec *pb.StudySpec
	// dirs are the sites' data directories right after key setup; tests
	// copy them (clone) and never write to them.
	dirs    map[string]string
	task    *pb.KeySetupTask
	keyDone map[string]*pb.KeySetupDone
	setup   *secure.Setup // the study's public key material
	// objects is the coordinator's store after round 1.
	objects map[[32]byte][]byte
	initial *pb.Object // the round-0 model
	// round 1: the updates (in site order, as the coordinator lists them),
	// their aggregate, site-a's and site-b's signed decryption shares, and
	// the new model and optimiser state.
	updates       map[string]submitted
	contributions []*pb.Contribution
	aggregate     *pb.Object
	shares        []*pb.SignedShare
	output, after *pb.Object
	sum           []float64 // the decrypted Σ n_i·Δ_i
	weight        float64
}

var (
	fixtureDir  string // TestMain's temporary directory
	fixtureOnce sync.Once
	fixtureVal  *fixture
	fixtureErr  error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "client-fixture-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// secureFixture returns the shared fixture, built on first use.
func secureFixture(t testing.TB) *fixture {
	t.Helper()
	fixtureOnce.Do(func() { fixtureVal, fixtureErr = buildFixture(fixtureDir) })
	if fixtureErr != nil {
		t.Fatalf("fixture: %v", fixtureErr)
	}
	return fixtureVal
}

func buildFixture(dir string) (*fixture, error) {
	ca, err := tlsutil.NewCA("consortium", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	pki, err := audittest.IssuePKI(ca)
	if err != nil {
		return nil, err
	}
	f := &fixture{pki: pki, spec: secureSpec(), dirs: map[string]string{}, updates: map[string]submitted{}}
	spec := specFrom(f.spec.Model)
	params, err := model.InitParams(spec, 1)
	if err != nil {
		return nil, err
	}
	initial, err := model.Encode(spec, params)
	if err != nil {
		return nil, err
	}
	coord := newFakeCoord(nil)
	f.initial = coord.put(initial)
	log := &fakeLog{}
	log.at(f.initial.Sha256, 0)

	// Key setup among three clients working in their own directories.
	clients := map[string]*Client{}
	for _, site := range sites {
		c, err := newClient(siteConfig(pki, site, filepath.Join(dir, "work", site)), log)
		if err != nil {
			return nil, err
		}
		if err := join(c, f.spec); err != nil {
			return nil, fmt.Errorf("%s: %w", site, err)
		}
		clients[site] = c
	}
	f.task = keySetupTask(f.spec)
	if f.keyDone, err = runKeySetup(pki, clients, f.task); err != nil {
		return nil, err
	}
	if len(f.keyDone) != len(sites) {
		return nil, fmt.Errorf("key setup: %d of %d sites done", len(f.keyDone), len(sites))
	}
	for _, site := range sites {
		f.dirs[site] = filepath.Join(dir, "keys", site)
		if err := copyDir(clients[site].cfg.DataDir, f.dirs[site]); err != nil {
			return nil, err
		}
	}
	f.setup = clients["site-a"].keys.participant.Setup
	key := f.setup.KeyHash()
	log.mu.Lock()
	log.key = &key // the coordinator has recorded the key setup
	log.mu.Unlock()

	// Round 1: every site trains and submits.
	ctx := context.Background()
	train := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	var cs []audit.Contribution
	for _, site := range sites {
		if err := clients[site].trainRound(ctx, coord, train); err != nil {
			return nil, fmt.Errorf("%s: train: %w", site, err)
		}
		u := coord.updates[len(coord.updates)-1]
		f.updates[site] = u
		sum := sha256.Sum256(u.payload)
		f.contributions = append(f.contributions, &pb.Contribution{ClientId: site, Sha256: sum[:], Size: uint64(len(u.payload)),
			Signature: u.header.Signature, Samples: u.header.NumSamples, DataManifestSha256: u.header.DataManifestSha256})
		cs = append(cs, audit.Contribution{Site: site, UpdateHash: sum, Samples: u.header.NumSamples,
			DataManifest: audit.Hash(u.header.DataManifestSha256)})
	}
	agg, err := f.setup.Aggregate(1, len(sites), func(i int) ([]byte, error) { return f.updates[sites[i]].payload, nil })
	if err != nil {
		return nil, err
	}
	f.aggregate = coord.put(agg)

	// site-a and site-b give their decryption shares.
	digest := audit.ManifestDigest(studyID, 1, audit.Hash(f.initial.Sha256), cs)
	decrypt := f.decryptTask()
	var payloads [][]byte
	for _, site := range []string{"site-a", "site-b"} {
		if err := clients[site].decryptRound(ctx, coord, decrypt); err != nil {
			return nil, fmt.Errorf("%s: decrypt: %w", site, err)
		}
		u := coord.shares[len(coord.shares)-1]
		sum := sha256.Sum256(u.payload)
		ds := audit.DecryptionShare{Site: site, ShareHash: sum}
		if !ed25519.Verify(pki.Hospitals[site].Cert.PublicKey.(ed25519.PublicKey), ds.Message(studyID, 1, audit.Hash(f.aggregate.Sha256), digest), u.share.Signature) {
			return nil, fmt.Errorf("%s: decryption share signature does not verify", site)
		}
		f.shares = append(f.shares, &pb.SignedShare{ClientId: site, Payload: &pb.Object{Sha256: sum[:], Size: uint64(len(u.payload))}, Signature: u.share.Signature})
		payloads = append(payloads, u.payload)
	}

	// The coordinator's combine (coordinator/work.go).
	if f.sum, f.weight, err = f.setup.Combine(1, agg, payloads, int(f.spec.Threshold)); err != nil {
		return nil, err
	}
	next, after, err := aggregation.NextModel(strategyOf(f.spec), params, nil, f.sum, f.weight)
	if err != nil {
		return nil, err
	}
	out, err := model.Encode(spec, next)
	if err != nil {
		return nil, err
	}
	f.output, f.after = coord.put(out), coord.put(after)
	f.objects = coord.objects
	return f, nil
}

// decryptTask is round 1's decryption task for the active points 1 and 2.
func (f *fixture) decryptTask() *pb.DecryptTask {
	return &pb.DecryptTask{StudyId: studyID, Round: 1, ActivePoints: []uint64{1, 2}, Contributions: cloneContributions(f.contributions),
		AggregateSha256: f.aggregate.Sha256, AggregateSize: f.aggregate.Size, ParentSha256: f.initial.Sha256}
}

// countersignTask is round 1's countersigning task.
func (f *fixture) countersignTask() *pb.CountersignTask {
	t := &pb.CountersignTask{StudyId: studyID, Round: 1, Parent: f.initial, Contributions: cloneContributions(f.contributions),
		Aggregate: f.aggregate, OptimizerAfter: f.after, Output: f.output}
	for _, s := range f.shares {
		t.Shares = append(t.Shares, &pb.SignedShare{ClientId: s.ClientId, Payload: s.Payload, Signature: slices.Clone(s.Signature)})
	}
	return t
}

func cloneContributions(cs []*pb.Contribution) []*pb.Contribution {
	out := make([]*pb.Contribution, len(cs))
	for i, c := range cs {
		out[i] = &pb.Contribution{ClientId: c.ClientId, Sha256: c.Sha256, Size: c.Size, Signature: slices.Clone(c.Signature),
			Samples: c.Samples, DataManifestSha256: c.DataManifestSha256}
	}
	return out
}

// env is one site under test: a fresh Client over the site's data
// directory, with a coordinator and an audit log of its own.
type env struct {
	pki   *audittest.PKI
	spec  *pb.StudySpec
	site  string
	dir   string
	c     *Client
	coord *fakeCoord
	log   *fakeLog
	// edit, when set, changes the site's configuration.
	edit func(*Config)
}

// clone makes an env for site over a copy of its key material, the
// coordinator's store after round 1 and an audit log with round 1 open.
func (f *fixture) clone(t *testing.T, site string) *env {
	t.Helper()
	dir := filepath.Join(t.TempDir(), site)
	if err := copyDir(f.dirs[site], dir); err != nil {
		t.Fatal(err)
	}
	key := f.setup.KeyHash()
	e := &env{pki: f.pki, spec: f.spec, site: site, dir: dir, coord: newFakeCoord(f.objects), log: &fakeLog{key: &key}}
	e.log.at(f.initial.Sha256, 0)
	e.c = e.restart(t)
	return e
}

// restart is a new Client over the env's data directory, as after a
// process restart, joined to the study.
func (e *env) restart(t *testing.T) *Client {
	t.Helper()
	cfg := siteConfig(e.pki, e.site, e.dir)
	if e.edit != nil {
		e.edit(&cfg)
	}
	c, err := newClient(cfg, e.log)
	if err != nil {
		t.Fatal(err)
	}
	if err := join(c, e.spec); err != nil {
		t.Fatal(err)
	}
	return c
}

// studyDir is the site's key material directory.
func (e *env) studyDir() string { return e.c.studyDir(studyID) }

// plainRig is a plaintext study (FedAvg): the sites share one coordinator
// and one audit log, with round 1 open.
type plainRig struct {
	pki     *audittest.PKI
	spec    *pb.StudySpec
	params  []float64 // the initial model's
	initial *pb.Object
	coord   *fakeCoord
	log     *fakeLog
}

func newPlainRig(t *testing.T) *plainRig {
	t.Helper()
	p := &plainRig{pki: audittest.NewPKI(t), spec: plaintextSpec(), coord: newFakeCoord(nil), log: &fakeLog{}}
	spec := specFrom(p.spec.Model)
	var err error
	if p.params, err = model.InitParams(spec, 1); err != nil {
		t.Fatal(err)
	}
	b, err := model.Encode(spec, p.params)
	if err != nil {
		t.Fatal(err)
	}
	p.initial = p.coord.put(b)
	p.log.at(p.initial.Sha256, 0)
	return p
}

// env is a site of the plaintext study (allow_plaintext set).
func (p *plainRig) env(t *testing.T, site string) *env {
	t.Helper()
	e := &env{pki: p.pki, spec: p.spec, site: site, dir: filepath.Join(t.TempDir(), site), coord: p.coord, log: p.log,
		edit: func(c *Config) { c.AllowPlaintext = true }}
	e.c = e.restart(t)
	return e
}

func (p *plainRig) trainTask() *pb.TrainTask {
	return &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: p.initial.Sha256, ParentSize: p.initial.Size}
}

// copyDir copies a directory tree, keeping file modes (the secret share
// must stay 0600).
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(to, info.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, info.Mode().Perm())
	})
}

// wantErr fails unless err is an error whose text contains every one of
// parts.
func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one mentioning %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
}
