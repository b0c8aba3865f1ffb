package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// Countersigning: the hospitals vouch for each round's new model. This site
// takes what the coordinator says it used (the parent model, the server
// optimiser's state before the round, the aggregate, and in a secure study
// the t decryptors' signed shares), recomputes the decryption and the
// optimiser step itself, and signs the round's outcome only if the model
// and state the coordinator published are what it computed. It checks the
// round is the one the audit log has open, and never countersigns two
// different outcomes of one round.
//
// In a plaintext study the countersigner recomputes the step from the
// plaintext aggregate but cannot check that aggregate is the sum of the
// other sites' updates (it does not see them); secure studies check that
// through the decryptors' re-sum.

// ErrOutcome: the coordinator's published model or optimiser state is not
// what this site computed from the round's inputs.
var ErrOutcome = errors.New("client: countersignature refused")

// tolerance bounds how far a published parameter may be from this site's
// own computation: far below any meaningful change of a model, far above
// the last-bit differences of floating-point code on different CPUs.
const tolerance = 1e-9

// near reports whether a is within the tolerance of b.
func near(a, b float64) bool { return math.Abs(a-b) <= tolerance*(1+math.Abs(b)) }

func (c *Client) countersign(ctx context.Context, coord Coordinator, t *pb.CountersignTask) (*pb.Countersignature, error) {
	start := time.Now()
	s := c.study
	if s == nil || t.StudyId != s.StudyId {
		return nil, fmt.Errorf("countersign task for %q, which is not this client's study", t.StudyId)
	}
	obj := func(o *pb.Object, what string) ([]byte, uint64, error) {
		if o == nil || len(o.Sha256) != 32 {
			return nil, 0, fmt.Errorf("countersign task without the %s", what)
		}
		return o.Sha256, o.Size, nil
	}
	parentSum, parentSize, err := obj(t.Parent, "parent")
	if err != nil {
		return nil, err
	}
	aggSum, aggSize, err := obj(t.Aggregate, "aggregate")
	if err != nil {
		return nil, err
	}
	outSum, outSize, err := obj(t.Output, "new model")
	if err != nil {
		return nil, err
	}
	afterSum, afterSize, err := obj(t.OptimizerAfter, "optimiser state after the round")
	if err != nil {
		return nil, err
	}
	if s.Mode == modeSecure && c.audit == nil {
		return nil, fmt.Errorf("this site countersigns only rounds it can check on the audit log (no audit_nodes)")
	}
	if err := c.checkOnLog(ctx, t.StudyId, t.Round, parentSum); err != nil {
		return nil, err
	}
	outcome := audit.Outcome{Study: t.StudyId, Round: t.Round, Parent: audit.Hash(parentSum), Aggregate: audit.Hash(aggSum),
		Output: audit.Hash(outSum), OptimizerAfter: audit.Hash(afterSum)}
	if t.OptimizerBefore != nil {
		outcome.OptimizerBefore = audit.Hash(t.OptimizerBefore.Sha256)
	}
	signed, err := c.countersigned(t.StudyId)
	if err != nil {
		return nil, err
	}
	round := strconv.FormatUint(t.Round, 10)
	msg := audit.CountersignMessage(c.id, outcome)
	digest := sha256.Sum256(msg)
	if prev, ok := signed.Rounds[round]; ok && prev != hex.EncodeToString(outSum) {
		return nil, fmt.Errorf("%w: round %d: this site already countersigned model %s for it", ErrOutcome, t.Round, prev[:12])
	}
	if prev, ok := signed.Outcomes[round]; ok && prev != hex.EncodeToString(digest[:]) {
		return nil, fmt.Errorf("%w: round %d: this site already countersigned another outcome for it, with the same model "+
			"(the parent, aggregate or optimiser states differ)", ErrOutcome, t.Round)
	}
	m, _, err := manifestFrom(t.StudyId, t.Round, parentSum, t.Contributions)
	if err != nil {
		return nil, err
	}
	var weight uint64
	for _, c := range m.Contributions {
		weight += c.Samples
	}
	rc := c.rounds.at(t.Round)
	cached := func(sum []byte, want [32]byte, have []byte) []byte {
		if have != nil && bytes.Equal(sum, want[:]) {
			return have
		}
		return nil
	}
	var sum []float64
	var total float64
	dim := specFrom(s.Model).NumParams()
	if s.Mode == modeSecure {
		if sum, total, err = c.combineShares(ctx, coord, t, m, rc, cached); err != nil {
			return nil, err
		}
	} else {
		agg := cached(aggSum, rc.aggSum, rc.aggregate)
		if agg == nil {
			if agg, err = c.fetch(ctx, coord, t.StudyId, aggSum, aggSize, int64(8*(dim+1))); err != nil {
				return nil, fmt.Errorf("aggregate: %w", err)
			}
		}
		if sum, total, err = aggregation.DecodeSum(agg, dim); err != nil {
			return nil, fmt.Errorf("aggregate: %w", err)
		}
	}
	if math.Abs(total-float64(weight)) > 0.5 {
		return nil, fmt.Errorf("%w: the aggregate's total weight is %.3f, the contributions declare %d", ErrOutcome, total, weight)
	}
	parent := rc.params
	if rc.parent != [32]byte(parentSum) || parent == nil {
		if _, parent, err = c.fetchModel(ctx, coord, t.StudyId, parentSum, parentSize); err != nil {
			return nil, fmt.Errorf("parent: %w", err)
		}
	}
	var before []byte
	if t.OptimizerBefore != nil {
		if before, err = c.fetch(ctx, coord, t.StudyId, t.OptimizerBefore.Sha256, t.OptimizerBefore.Size, c.cfg.MaxModelBytes*3); err != nil {
			return nil, fmt.Errorf("optimiser state before the round: %w", err)
		}
	}
	strategy, err := strategyFrom(s)
	if err != nil {
		return nil, err
	}
	next, after, err := aggregation.NextModel(strategy, parent, before, sum, total)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOutcome, err)
	}
	if err := c.compareModel(ctx, coord, t.StudyId, outSum, outSize, next); err != nil {
		return nil, err
	}
	if err := c.compareState(ctx, coord, t.StudyId, afterSum, afterSize, after); err != nil {
		return nil, err
	}
	signed.Rounds[round], signed.Outcomes[round] = hex.EncodeToString(outSum), hex.EncodeToString(digest[:])
	if err := c.saveCountersigned(t.StudyId, signed); err != nil {
		return nil, err
	}
	c.log.Info("round countersigned", slog.Uint64("round", t.Round), slog.String("model", hex.EncodeToString(outSum[:8])),
		slog.Duration("took", time.Since(start)))
	return &pb.Countersignature{StudyId: t.StudyId, Round: t.Round, OutputSha256: outSum, Signature: c.sign(msg)}, nil
}

// combineShares decrypts the aggregate with the decryptors' shares, after
// checking each is signed, by a key holder bound at key setup, over this
// aggregate and this manifest, and there are exactly t of them.
func (c *Client) combineShares(ctx context.Context, coord Coordinator, t *pb.CountersignTask, m secure.Manifest, rc *roundCache,
	cached func([]byte, [32]byte, []byte) []byte) ([]float64, float64, error) {
	k, err := c.studyKeys()
	if err != nil {
		return nil, 0, err
	}
	setup := k.participant.Setup
	if len(t.Shares) != k.participant.Threshold() {
		return nil, 0, fmt.Errorf("%w: %d decryption shares, the study's threshold is %d", ErrOutcome, len(t.Shares), k.participant.Threshold())
	}
	digest := audit.ManifestDigest(m.Study, m.Round, m.Parent, m.Contributions)
	agg := cached(t.Aggregate.Sha256, rc.aggSum, rc.aggregate)
	if agg == nil {
		if agg, err = c.fetch(ctx, coord, t.StudyId, t.Aggregate.Sha256, t.Aggregate.Size, setup.AggregateSize()); err != nil {
			return nil, 0, fmt.Errorf("aggregate: %w", err)
		}
	}
	shares := make([][]byte, len(t.Shares))
	seen := map[string]bool{}
	for i, sh := range t.Shares {
		pub, holder := k.peers[sh.ClientId]
		if !holder || seen[sh.ClientId] || sh.Payload == nil || len(sh.Payload.Sha256) != 32 {
			return nil, 0, fmt.Errorf("%w: decryption share %d is not a distinct key holder's", ErrOutcome, i)
		}
		seen[sh.ClientId] = true
		ds := audit.DecryptionShare{Site: sh.ClientId, ShareHash: audit.Hash(sh.Payload.Sha256)}
		if !ed25519.Verify(pub, ds.Message(t.StudyId, t.Round, audit.Hash(t.Aggregate.Sha256), digest), sh.Signature) {
			return nil, 0, fmt.Errorf("%w: the decryption share of %q is not signed by it over this aggregate and manifest", ErrOutcome, sh.ClientId)
		}
		if shares[i] = cached(sh.Payload.Sha256, rc.shareSum, rc.share); shares[i] == nil {
			if shares[i], err = c.fetch(ctx, coord, t.StudyId, sh.Payload.Sha256, sh.Payload.Size, setup.ShareSize()); err != nil {
				return nil, 0, fmt.Errorf("decryption share of %q: %w", sh.ClientId, err)
			}
		}
	}
	sum, weight, err := setup.Combine(t.Round, agg, shares, k.participant.Threshold())
	if err != nil {
		return nil, 0, fmt.Errorf("%w: the shares do not decrypt the aggregate: %v", ErrOutcome, err)
	}
	return sum, weight, nil
}

// compareModel checks the published model is this site's computation.
func (c *Client) compareModel(ctx context.Context, coord Coordinator, study string, sum []byte, size uint64, want []float64) error {
	spec, got, err := c.fetchModel(ctx, coord, study, sum, size)
	if err != nil {
		return fmt.Errorf("new model: %w", err)
	}
	if spec.String() != specFrom(c.study.Model).String() || len(got) != len(want) {
		return fmt.Errorf("%w: the new model is %s, the study's is %s", ErrOutcome, spec, specFrom(c.study.Model))
	}
	for i := range want {
		if !near(got[i], want[i]) {
			return fmt.Errorf("%w: parameter %d of the new model is %v, this site computed %v", ErrOutcome, i, got[i], want[i])
		}
	}
	return nil
}

// compareState checks the published optimiser state is this site's
// computation.
func (c *Client) compareState(ctx context.Context, coord Coordinator, study string, sum []byte, size uint64, want []byte) error {
	b, err := c.fetch(ctx, coord, study, sum, size, c.cfg.MaxModelBytes*3)
	if err != nil {
		return fmt.Errorf("optimiser state after the round: %w", err)
	}
	if bytes.Equal(b, want) {
		return nil
	}
	got, err := aggregation.UnmarshalServerOptimizer(b)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrOutcome, err)
	}
	w, _ := aggregation.UnmarshalServerOptimizer(want)
	if got.Config() != w.Config() || got.Steps != w.Steps || len(got.M) != len(w.M) {
		return fmt.Errorf("%w: the optimiser state after the round is not this site's (config, step or size)", ErrOutcome)
	}
	for i := range w.M {
		if !near(got.M[i], w.M[i]) || !near(got.V[i], w.V[i]) {
			return fmt.Errorf("%w: moment %d of the optimiser state differs from this site's computation", ErrOutcome, i)
		}
	}
	return nil
}

// countersignedFile records, per study, what this site countersigned for
// each round, so it never vouches for two outcomes of one round (a
// restarted coordinator re-running a round gets the same answer or none).
// The model alone does not identify an outcome: the same model can come
// with other optimiser states (FedAvg's differ only in their step count).
type countersignedFile struct {
	Rounds map[string]string `json:"rounds"` // round → model SHA-256
	// Outcomes are the SHA-256 of the countersignature's message, which
	// binds the whole outcome (absent in files written before it).
	Outcomes map[string]string `json:"outcomes"` // round → SHA-256
}

func (c *Client) countersignedPath(study string) string {
	if c.cfg.DataDir == "" {
		return ""
	}
	return filepath.Join(c.studyDir(study), "countersigned.json")
}

func (c *Client) countersigned(study string) (*countersignedFile, error) {
	f := &countersignedFile{Rounds: map[string]string{}, Outcomes: map[string]string{}}
	path := c.countersignedPath(study)
	if path == "" {
		if c.csMemory == nil {
			c.csMemory = f
		}
		return c.csMemory, nil
	}
	b, err := fsutil.ReadFileChecked(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return nil, fmt.Errorf("countersigning state: %w", err)
	}
	if err := json.Unmarshal(b, f); err != nil || f.Rounds == nil || f.Outcomes == nil {
		return nil, fmt.Errorf("countersigning state %s is damaged: %v", path, err)
	}
	return f, nil
}

func (c *Client) saveCountersigned(study string, f *countersignedFile) error {
	path := c.countersignedPath(study)
	if path == "" {
		return nil
	}
	b, _ := json.MarshalIndent(f, "", "  ")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileChecked(path, b, 0o600)
}
