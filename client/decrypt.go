package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/chunk"
	pb "github.com/fedledger/fedledger/proto"
)

// sketchRound answers a sketch task: this site's signed sketch of the
// contribution it sent, against the aggregate the coordinator committed to
// (aggregation/secure, sketch.go). The manifest must list, as this site's,
// the contribution it kept. A sketch is a linear function of a
// contribution the coordinator already holds, so the task needs no other
// check.
func (c *Client) sketchRound(t *pb.SketchTask) (*pb.ClientMessage, error) {
	if c.study == nil || c.study.Mode != modeSecure || t.StudyId != c.study.StudyId {
		return nil, fmt.Errorf("sketch task for %q, which is not this client's secure study", t.StudyId)
	}
	if len(t.AggregateSha256) != sha256.Size || len(t.ParentSha256) != sha256.Size {
		return nil, fmt.Errorf("sketch task without 32-byte aggregate and parent hashes")
	}
	k, err := c.studyKeys()
	if err != nil {
		return nil, err
	}
	m, _, err := manifestFrom(t.StudyId, t.Round, t.ParentSha256, t.Contributions)
	if err != nil {
		return nil, err
	}
	m.AggregateHash = [32]byte(t.AggregateSha256)
	values, err := k.participant.Sketch(m)
	if err != nil {
		return nil, err
	}
	s := audit.Sketch{Site: c.id, Values: values}
	return &pb.ClientMessage{Msg: &pb.ClientMessage_Sketch{Sketch: &pb.ContributionSketch{StudyId: t.StudyId, Round: t.Round, ClientId: c.id,
		AggregateSha256: t.AggregateSha256, Values: values, Signature: c.sign(s.Message(t.StudyId, t.Round, m.AggregateHash, m.Digest()))}}}, nil
}

// decryptRound answers a decryption task. The round must be the one the
// audit log has open (the one after its last committed round, from its
// latest output), so nothing already closed is ever decrypted again; the
// guard checks the manifest (at least K distinct contributions, each
// signed by its key holder over this round and parent, in site order) and
// that the aggregate is the sum of the listed contributions (always:
// without it a coordinator could present one hospital's ciphertext as the
// aggregate), against the contributors' signed sketches, downloading the
// contributions that have none; only then is the share computed, signed
// over the manifest's digest, and submitted.
func (c *Client) decryptRound(ctx context.Context, coord Coordinator, t *pb.DecryptTask) error {
	start := time.Now()
	if c.study == nil || c.study.Mode != modeSecure || t.StudyId != c.study.StudyId {
		return fmt.Errorf("decryption task for %q, which is not this client's secure study", t.StudyId)
	}
	if len(t.AggregateSha256) != sha256.Size || len(t.ParentSha256) != sha256.Size {
		return fmt.Errorf("decryption task without 32-byte aggregate and parent hashes")
	}
	if c.audit == nil {
		return fmt.Errorf("this site gives decryption shares only for rounds it can check on the audit log (no audit_nodes)")
	}
	if err := c.checkOnLog(ctx, t.StudyId, t.Round, t.ParentSha256); err != nil {
		return err
	}
	k, err := c.studyKeys()
	if err != nil {
		return err
	}
	if err := c.checkKeyOnLog(ctx, t.StudyId, k); err != nil {
		return err
	}
	m, sizes, err := manifestFrom(t.StudyId, t.Round, t.ParentSha256, t.Contributions)
	if err != nil {
		return err
	}
	m.AggregateHash = [32]byte(t.AggregateSha256)
	for _, s := range t.Sketches {
		m.Sketches = append(m.Sketches, audit.Sketch{Site: s.ClientId, Values: s.Values, Signature: s.Signature})
	}
	setup := k.participant.Setup
	aggregate, err := c.fetch(ctx, coord, t.StudyId, t.AggregateSha256, t.AggregateSize, setup.AggregateSize())
	if err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	// The guard pulls the contributions it needs one at a time; this
	// site's own comes from memory when it is the one it uploaded.
	rc := c.rounds.at(t.Round)
	fetched := 0
	fetch := func(site string, hash [32]byte) ([]byte, error) {
		if rc.upload != nil && rc.uploadSum == hash {
			return rc.upload, nil
		}
		b, err := c.fetch(ctx, coord, t.StudyId, hash[:], sizes[site], setup.ContributionSize())
		if err == nil {
			fetched++
			c.metrics.checkFetch.Inc()
			c.metrics.checkBytes.WithLabelValues("contributions").Add(float64(len(b)))
		}
		return b, err
	}
	payload, v, err := k.participant.Answer(m, t.ActivePoints, aggregate, fetch)
	c.metrics.checkBytes.WithLabelValues("sketches").Add(float64(v.SketchBytes))
	if len(v.FalseSketches) > 0 {
		c.log.Error("signed sketches that are not their contributions' (the re-sum found the aggregate right)",
			slog.Uint64("round", t.Round), slog.Any("sites", v.FalseSketches))
	}
	if err != nil {
		return err
	}
	ds := audit.DecryptionShare{Site: c.id, ShareHash: sha256.Sum256(payload)}
	chunks := chunk.Split(t.StudyId, t.Round, payload, c.cfg.ChunkSize)
	chunks[0].Share = &pb.ShareHeader{AggregateSha256: t.AggregateSha256, Signature: c.sign(ds.Message(t.StudyId, t.Round, m.AggregateHash, m.Digest()))}
	if err := coord.SubmitShare(ctx, chunks); err != nil {
		return fmt.Errorf("decryption share for round %d rejected: %w", t.Round, err)
	}
	rc.aggregate, rc.aggSum, rc.share, rc.shareSum = aggregate, m.AggregateHash, payload, ds.ShareHash
	rc.upload = nil // the guard answers a round once: it is not needed again
	c.log.Info("decryption share given", slog.Uint64("round", t.Round), slog.Int("contributions", len(m.Contributions)),
		slog.Int("sketched", v.Sketched), slog.Int("contributions_downloaded", fetched), slog.Bool("resummed", v.Resummed),
		slog.Duration("took", time.Since(start)))
	return nil
}

// checkKeyOnLog confirms that this site's collective key is the one the
// audit log's key-setup record names: a coordinator that ran a key setup
// the log does not hold gets no decryption under it. The key setup was
// committed before round 1, long before any decryption; a replica that has
// not caught up yet is asked again a few times.
func (c *Client) checkKeyOnLog(ctx context.Context, study string, k *studyKeys) error {
	mine := k.participant.Setup.KeyHash()
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		logged, done, err := c.audit.KeySetup(cctx, study)
		cancel()
		switch {
		case err != nil:
			return fmt.Errorf("cannot confirm the study's key setup on the audit log: %w", err)
		case done && logged != mine:
			return fmt.Errorf("this site's collective key %x is not the one the audit log's key setup names (%x)", mine[:8], logged[:8])
		case done:
			return nil
		case attempt >= 4:
			return fmt.Errorf("the audit log has no key setup for study %q: this site gives no decryption share under a key the log does not hold", study)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// manifestFrom reads the signed contributions of a task (in the order
// given: the guard and the countersign check require site order) and their
// payload sizes.
func manifestFrom(study string, round uint64, parent []byte, cs []*pb.Contribution) (secure.Manifest, map[string]uint64, error) {
	m := secure.Manifest{Study: study, Round: round, Parent: audit.Hash(parent)}
	sizes := map[string]uint64{}
	for _, e := range cs {
		if len(e.Sha256) != sha256.Size || len(e.DataManifestSha256) != sha256.Size {
			return m, nil, fmt.Errorf("contribution of %q has a malformed hash", e.ClientId)
		}
		m.Contributions = append(m.Contributions, audit.Contribution{Site: e.ClientId, UpdateHash: [32]byte(e.Sha256), Samples: e.Samples,
			DataManifest: [32]byte(e.DataManifestSha256), Signature: e.Signature})
		sizes[e.ClientId] = e.Size
	}
	return m, sizes, nil
}

// drift is the global model's movement so far, the parent minus the
// initial model, each checked: the parent is the log's latest output (the
// caller checked), the initial model the one the admin-signed study record
// on the log names.
func (c *Client) drift(ctx context.Context, coord Coordinator, t *pb.BoundTask) ([]float64, error) {
	if t.Parent == nil || t.Initial == nil || !bytes.Equal(t.Parent.Sha256, t.ParentSha256) {
		return nil, fmt.Errorf("norm-check task without its parent and initial models")
	}
	rc := c.rounds.at(t.Round)
	parent := rc.params
	if parent == nil || rc.parent != [32]byte(t.ParentSha256) {
		_, p, err := c.fetchModel(ctx, coord, t.StudyId, t.Parent.Sha256, t.Parent.Size)
		if err != nil {
			return nil, fmt.Errorf("parent model: %w", err)
		}
		parent = p
	}
	if c.initial == nil {
		if c.audit == nil {
			return nil, fmt.Errorf("no audit log to check the study's initial model against")
		}
		env, err := c.audit.StudyRecord(ctx, t.StudyId)
		if err != nil {
			return nil, fmt.Errorf("study record: %w", err)
		}
		e, err := audit.UnmarshalEnvelope(env)
		if err != nil {
			return nil, fmt.Errorf("study record: %w", err)
		}
		rec, _, err := e.Verify(c.cfg.TLS.RootCAs)
		if err != nil {
			return nil, fmt.Errorf("study record: %w", err)
		}
		if rec.OutputModel != audit.Hash(t.Initial.Sha256) {
			return nil, fmt.Errorf("the task's initial model %x is not the study record's %x", t.Initial.Sha256[:min(8, len(t.Initial.Sha256))], rec.OutputModel[:8])
		}
		_, p, err := c.fetchModel(ctx, coord, t.StudyId, t.Initial.Sha256, t.Initial.Size)
		if err != nil {
			return nil, fmt.Errorf("initial model: %w", err)
		}
		c.initial = p
	}
	return aggregation.Drift(parent, c.initial)
}

// boundRound answers a norm-check task: this key holder's projection
// shares of every listed contribution, for the active set, onto the round's
// direction, which it derives itself from the manifest and the checked
// parent and initial models (nobody chooses it).
// The round must be the one the audit log has open, as for decryption, and
// the participant answers once per round (a second set of contributions
// would open a second scalar of each update).
func (c *Client) boundRound(ctx context.Context, coord Coordinator, t *pb.BoundTask) (*pb.ClientMessage, error) {
	if c.study == nil || c.study.Mode != modeSecure || t.StudyId != c.study.StudyId || c.study.NormBound <= 0 {
		return nil, fmt.Errorf("norm-check task for %q, which is not this client's secure study with a norm bound", t.StudyId)
	}
	if len(t.ParentSha256) != sha256.Size {
		return nil, fmt.Errorf("norm-check task without a 32-byte parent hash")
	}
	if err := c.checkOnLog(ctx, t.StudyId, t.Round, t.ParentSha256); err != nil {
		return nil, err
	}
	k, err := c.studyKeys()
	if err != nil {
		return nil, err
	}
	if len(t.ActivePoints) != k.participant.Threshold() || !slices.Contains(t.ActivePoints, k.participant.Point()) {
		return nil, fmt.Errorf("norm-check active set %v: want t=%d points including this site's %d", t.ActivePoints, k.participant.Threshold(), k.participant.Point())
	}
	m, _, err := manifestFrom(t.StudyId, t.Round, t.ParentSha256, t.Contributions)
	if err != nil {
		return nil, err
	}
	drift, err := c.drift(ctx, coord, t)
	if err != nil {
		return nil, err
	}
	shares, err := k.participant.ProjectionShares(m, t.ActivePoints, secure.RoundDirectionAlong(m.Digest(), drift))
	if err != nil {
		return nil, err
	}
	out := &pb.ProjectionShares{StudyId: t.StudyId, Round: t.Round}
	for _, site := range slices.Sorted(maps.Keys(shares)) {
		out.Shares = append(out.Shares, &pb.ProjectionShare{ClientId: site, Residues: shares[site]})
	}
	c.log.Info("norm-check projection shares given", slog.Uint64("round", t.Round), slog.Int("contributions", len(shares)))
	return &pb.ClientMessage{Msg: &pb.ClientMessage_Bound{Bound: out}}, nil
}
