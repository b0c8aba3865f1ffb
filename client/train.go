package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/privacy"
	pb "github.com/fedledger/fedledger/proto"
)

// roundCache is what this site keeps of the round in progress, so the
// decryption and countersigning steps do not download again what it
// already has: its parent model, its own upload, the aggregate it checked
// and the decryption share it gave.
type roundCache struct {
	round     uint64
	parent    [32]byte
	params    []float64
	upload    []byte
	uploadSum [32]byte
	aggregate []byte
	aggSum    [32]byte
	share     []byte
	shareSum  [32]byte
}

// at returns the cache for round, emptied if it held another round.
func (r *roundCache) at(round uint64) *roundCache {
	if r.round != round {
		*r = roundCache{round: round}
	}
	return r
}

// trainRound answers a train task: check the parent on the audit log,
// fetch it, train, and submit n·(w_local − w_parent), encrypted in a
// secure study, signed over (study, round, parent, this site, payload
// hash, n, data manifest).
func (c *Client) trainRound(ctx context.Context, coord Coordinator, t *pb.TrainTask) error {
	start := time.Now()
	if c.study == nil || t.StudyId != c.study.StudyId {
		return fmt.Errorf("train task for %q, which is not this client's study", t.StudyId)
	}
	if err := c.checkOnLog(ctx, t.StudyId, t.Round, t.ParentSha256); err != nil {
		return err
	}
	spec, parent, err := c.fetchModel(ctx, coord, t.StudyId, t.ParentSha256, t.ParentSize)
	if err != nil {
		return err
	}
	want := specFrom(c.study.Model)
	if spec.String() != want.String() {
		return fmt.Errorf("parent model is %s, the study says %s", spec, want)
	}
	parentTest, err := train.Evaluate(spec, parent, c.eval)
	if err != nil {
		return err
	}
	cfg := trainConfigFrom(c.study.Training)
	cfg.Seed += int64(t.Round) // a fresh shuffle every round, reproducibly
	budget, err := dpBudget(c.study)
	if err != nil {
		return err
	}
	t0 := time.Now()
	from := parent
	if c.personalises() && budget == nil {
		// Not under DP: the personal intercept was fitted without noise,
		// and starting from it would put that fit into the released update.
		from = train.LocalStart(spec, c.cfg.Personal.Method, parent, c.previousPersonal(parent))
	}
	var local []float64
	var st train.TrainStats
	var spent float64
	switch {
	case budget != nil && budget.Level == audit.DPClient:
		if spent, err = c.spendDP(budget, 1); err != nil {
			return err
		}
		if local, st, err = train.Train(ctx, spec, from, c.fit, cfg); err != nil {
			return err
		}
		local = clientLevelUpdate(parent, local, budget, int(c.study.MinClients), privacy.NewGaussian())
	case budget != nil:
		steps, err := dpConfig(budget).Steps(cfg)
		if err != nil {
			return err
		}
		if spent, err = c.spendDP(budget, steps); err != nil {
			return err
		}
		cfg.Seed = secretSeed()
		local, st, err = train.TrainDP(ctx, spec, from, c.fit, cfg, dpConfig(budget), privacy.NewGaussian())
		if err != nil {
			return err
		}
	default:
		if local, st, err = train.Train(ctx, spec, from, c.fit, cfg); err != nil {
			return err
		}
	}
	c.metrics.phase.WithLabelValues("train").Observe(time.Since(t0).Seconds())
	var personalTest *pb.Metrics
	var personalMet *model.Metrics
	if c.personalises() {
		p, m, err := c.personalise(ctx, spec, parent, cfg.Seed)
		if err != nil {
			return fmt.Errorf("personal model: %w", err)
		}
		if err := c.keepPersonal(spec, p); err != nil {
			return fmt.Errorf("keeping the personal model: %w", err)
		}
		personalTest, personalMet = toPB(m), &m
	}
	eval := evaluation(c.id, c.evalSplit, parentTest, personalMet)
	n := uint64(c.fit.Len())
	if budget != nil && budget.Level == audit.DPClient {
		n = 1 // every update weighs the same: its sensitivity is the clip norm
	}
	if b := c.study.NormBound; b > 0 {
		// The study bounds every update's norm; the coordinator checks it
		// under encryption and leaves out an update past it.
		var clipped bool
		if local, clipped = clipUpdate(parent, local, b); clipped {
			c.log.Info("update clipped to the study's norm bound", slog.Uint64("round", t.Round), slog.Float64("bound", b))
		}
	}
	if c.cfg.Tamper != nil {
		delta := make([]float64, len(local))
		for i := range local {
			delta[i] = local[i] - parent[i]
		}
		c.cfg.Tamper(t.Round, delta)
		for i := range local {
			local[i] = parent[i] + delta[i]
		}
	}
	t0 = time.Now()
	payload, encoding, err := c.encodeUpdate(t.Round, t.ParentSha256, local, parent, n)
	if err != nil {
		return err
	}
	c.metrics.phase.WithLabelValues("encode").Observe(time.Since(t0).Seconds())
	stmt := audit.Contribution{Site: c.id, UpdateHash: sha256.Sum256(payload), Samples: n, DataManifest: c.manifest}
	trainMet, _ := train.Evaluate(spec, local, c.fit)
	trainPB := &pb.Metrics{Loss: st.Loss, Accuracy: trainMet.Accuracy, Auc: trainMet.AUC, N: n}
	if budget != nil {
		// Figures computed on the training records without noise would
		// spend privacy the accountant does not count: not sent.
		trainPB = &pb.Metrics{N: n}
	}
	chunks := chunk.Split(t.StudyId, t.Round, payload, c.cfg.ChunkSize)
	chunks[0].Header = &pb.UpdateHeader{
		ParentSha256: t.ParentSha256, NumSamples: n, Encoding: encoding, DataManifestSha256: c.manifest[:],
		Signature: c.sign(stmt.Message(t.StudyId, t.Round, audit.Hash(t.ParentSha256))),
		Train:     trainPB, ParentTest: toPB(parentTest),
		PersonalTest:        personalTest,
		EvaluationSignature: c.sign(eval.Message(t.StudyId, t.Round, audit.Hash(t.ParentSha256))),
	}
	for _, m := range eval.Metrics {
		chunks[0].Header.Evaluation = append(chunks[0].Header.Evaluation, &pb.NamedValue{Name: m.Name, Value: m.Value})
	}
	t0 = time.Now()
	if err := coord.SubmitUpdate(ctx, chunks); err != nil {
		return fmt.Errorf("update for round %d rejected: %w", t.Round, err)
	}
	rc := c.rounds.at(t.Round)
	rc.parent, rc.params = [32]byte(t.ParentSha256), parent
	if encoding == secure.EncodingContribution {
		rc.upload, rc.uploadSum = payload, stmt.UpdateHash // reused by the re-sum check
	}
	c.metrics.phase.WithLabelValues("upload").Observe(time.Since(t0).Seconds())
	c.metrics.updateSize.Add(float64(len(payload)))
	if budget != nil {
		c.log.Info("trained with DP-SGD", slog.Uint64("round", t.Round), slog.Float64("epsilon_spent", spent), slog.Float64("delta", budget.Delta),
			slog.Float64("cap", c.dpCap(budget)))
		st.Loss = 0 // not logged either
	}
	c.log.Info("update submitted", slog.Uint64("round", t.Round), slog.Int("steps", st.Steps), slog.Float64("train_loss", st.Loss),
		slog.Float64("parent_test_acc", parentTest.Accuracy), slog.String("sha256", fmt.Sprintf("%x", stmt.UpdateHash[:8])),
		slog.String("encoding", encoding), slog.Int("bytes", len(payload)), slog.Duration("took", time.Since(start)))
	return nil
}

// checkOnLog confirms, when the site knows the audit log, that round is
// the one after the study's last committed round and parent its latest
// committed output, and that the study still has that round to run: a
// coordinator cannot make hospitals train on, decrypt for, or countersign
// anything the log does not account for.
func (c *Client) checkOnLog(ctx context.Context, study string, round uint64, parent []byte) error {
	if c.audit == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, last, err := c.audit.LatestOutput(ctx, study)
	if err != nil {
		return fmt.Errorf("cannot confirm the round on the audit log: %w", err)
	}
	switch {
	case round != last+1:
		return fmt.Errorf("round %d is not open on the audit log: its last committed round of %q is %d", round, study, last)
	case c.study != nil && round > uint64(c.study.Rounds):
		return fmt.Errorf("round %d is beyond the study's %d rounds", round, c.study.Rounds)
	case !bytes.Equal(out[:], parent):
		return fmt.Errorf("parent model %x is not the study's latest committed output on the audit log (%x, round %d)", parent[:min(8, len(parent))], out[:8], last)
	}
	return nil
}

// encodeUpdate turns the local model into the update payload: n·Δ in
// plaintext, or n·Δ and n encrypted under the study's collective key (a
// retried round gets the contribution already sent for it, byte for byte).
func (c *Client) encodeUpdate(round uint64, parentHash []byte, local, parent []float64, n uint64) (payload []byte, encoding string, err error) {
	if c.study.Mode != modeSecure {
		payload, err = aggregation.EncodeWeightedDelta(local, parent, n)
		return payload, aggregation.EncodingWeightedDelta, err
	}
	k, err := c.studyKeys()
	if err != nil {
		return nil, "", err
	}
	delta, err := aggregation.WeightedDelta(local, parent, n)
	if err != nil {
		return nil, "", err
	}
	payload, err = k.participant.Contribute(round, parentHash, delta, float64(n))
	return payload, secure.EncodingContribution, err
}

// evaluate evaluates the final model on the test split and, if this site
// personalises, makes its personal model from it and evaluates that too.
func (c *Client) evaluate(ctx context.Context, coord Coordinator, t *pb.EvaluateTask) (model.Metrics, *pb.Metrics, error) {
	spec, params, err := c.fetchModel(ctx, coord, t.StudyId, t.ModelSha256, t.ModelSize)
	if err != nil {
		return model.Metrics{}, nil, err
	}
	m, err := train.Evaluate(spec, params, c.eval)
	if err != nil {
		return m, nil, err
	}
	c.log.Info("final model evaluated", slog.String("split", c.evalSplit), slog.Float64("acc", m.Accuracy), slog.Float64("auc", m.AUC), slog.Int("n", m.N))
	if !c.personalises() {
		return m, nil, nil
	}
	p, pm, err := c.personalise(ctx, spec, params, trainConfigFrom(c.study.Training).Seed+int64(t.Round)+1)
	if err != nil {
		return m, nil, fmt.Errorf("personal model: %w", err)
	}
	if err := c.keepPersonal(spec, p); err != nil {
		return m, nil, fmt.Errorf("keeping the personal model: %w", err)
	}
	c.log.Info("personal model kept", slog.String("file", c.personalFile()), slog.Float64("test_acc", pm.Accuracy))
	return m, toPB(pm), nil
}

// fetchModel downloads a model, checks it hashes to what was announced,
// and decodes it.
func (c *Client) fetchModel(ctx context.Context, coord Coordinator, study string, sum []byte, size uint64) (model.Spec, []float64, error) {
	b, err := c.fetch(ctx, coord, study, sum, size, c.cfg.MaxModelBytes)
	if err != nil {
		return model.Spec{}, nil, err
	}
	return model.Decode(b)
}

// fetch downloads an object of at most limit bytes and checks it hashes to
// sum, whatever the transport checked.
func (c *Client) fetch(ctx context.Context, coord Coordinator, study string, sum []byte, size uint64, limit int64) ([]byte, error) {
	if len(sum) != sha256.Size {
		return nil, fmt.Errorf("announced hash has %d bytes", len(sum))
	}
	b, err := coord.Fetch(ctx, study, sum, size, limit)
	if err != nil {
		return nil, err
	}
	if got := sha256.Sum256(b); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("object %x: the coordinator sent bytes hashing to %x", sum[:8], got[:8])
	}
	return b, nil
}

// personalises reports whether this site makes a personal model in its
// study: it is configured to, and the study is not a tuning trial (a
// trial tunes the global model, on validation data only).
func (c *Client) personalises() bool { return c.cfg.Personal != nil && c.evalSplit != splitValidation }

// evaluation is this site's evaluation statement for a round: the parent
// (global) model's figures on split (its test split, or a tuning trial's
// validation part), and its personal model's if it has one; figures that
// are not finite are left out.
func evaluation(site, split string, global model.Metrics, personal *model.Metrics) audit.Evaluation {
	e := audit.Evaluation{Site: site}
	add := func(name string, v float64) {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			e.Metrics = append(e.Metrics, audit.Metric{Name: name, Value: v})
		}
	}
	add(split+"_n", float64(global.N))
	add("global_"+split+"_accuracy", global.Accuracy)
	add("global_"+split+"_auc", global.AUC)
	add("global_"+split+"_loss", global.Loss)
	if personal != nil {
		add("personal_"+split+"_accuracy", personal.Accuracy)
		add("personal_"+split+"_auc", personal.AUC)
		add("personal_"+split+"_loss", personal.Loss)
	}
	return e
}

// clipUpdate is parent + Δ scaled to norm at most bound, Δ = local − parent.
func clipUpdate(parent, local []float64, bound float64) ([]float64, bool) {
	var norm float64
	for i := range local {
		d := local[i] - parent[i]
		norm += d * d
	}
	norm = math.Sqrt(norm)
	if norm <= bound {
		return local, false
	}
	out := make([]float64, len(local))
	for i := range local {
		out[i] = parent[i] + (local[i]-parent[i])*(bound/norm)
	}
	return out, true
}
