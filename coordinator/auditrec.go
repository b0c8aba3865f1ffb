package coordinator

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/coordinator/study"
	"github.com/fedledger/fedledger/internal/tlsutil"
	"github.com/fedledger/fedledger/internal/version"
)

// ErrStudyRecord: the study on the audit log does not match this
// coordinator's configuration, or is missing.
var ErrStudyRecord = errors.New("coordinator: audit log study record")

// LogAppender is what the coordinator needs of the audit log;
// *cluster.Client is one. Append is idempotent: appending a record that is
// already on the log returns its index. Its errors: cluster.ErrNoLeader
// (retry), audit.ErrConflict (another record holds that study, round and
// kind), cluster.ErrRejected (the rules refused the record).
type LogAppender interface {
	Append(ctx context.Context, env []byte) (cluster.AppendResult, error)
	// Export returns the log up to a cosigned checkpoint.
	Export(ctx context.Context, study string, limit int64) (*audit.Bundle, error)
}

// AuditRecorder commits the study's key setup and every round to the audit
// log, signed with the coordinator's identity, each record carrying the
// hospitals' own signed statements. The study-created record is an
// admin's: if the log does not have it yet, StudyRecord (an admin-signed
// envelope) is appended; either way its terms must be the configuration's.
type AuditRecorder struct {
	Log         LogAppender
	Identity    *tlsutil.Identity
	StudyRecord []byte
	Logger      *slog.Logger
	// ExportLimit bounds the log read at start (default 1 GiB).
	ExportLimit int64

	mu      sync.Mutex
	signed  map[string][]byte // envelopes already sent, so a retry sends the same bytes
	study   StudyConfig
	initial [32]byte
}

// Begin implements Recorder. While the log has no quorum it waits, with
// backoff, saying so, until ctx ends.
func (a *AuditRecorder) Begin(ctx context.Context, s StudyStart) (LogState, error) {
	a.study, a.initial = s.Study, s.InitialModel
	terms := studyTerms(s.Study, s.InitialModel)
	if a.StudyRecord != nil {
		e, err := audit.UnmarshalEnvelope(a.StudyRecord)
		if err != nil {
			return LogState{}, fmt.Errorf("%w: %v", ErrStudyRecord, err)
		}
		rec, err := audit.UnmarshalRecord(e.Body)
		if err != nil {
			return LogState{}, fmt.Errorf("%w: %v", ErrStudyRecord, err)
		}
		if err := terms.Check(rec); err != nil {
			return LogState{}, fmt.Errorf("%w: %w", ErrStudyRecord, err)
		}
		err = a.retry(ctx, "appending the study record", func(ctx context.Context) error {
			_, err := a.Log.Append(ctx, a.StudyRecord)
			return err
		})
		if err != nil && !errors.Is(err, audit.ErrConflict) {
			return LogState{}, fmt.Errorf("%w: appending the study record: %w", ErrStudyRecord, err)
		}
	}
	var b *audit.Bundle
	err := a.retry(ctx, "reading the study from the audit log", func(ctx context.Context) (err error) {
		limit := a.ExportLimit
		if limit <= 0 {
			limit = 1 << 30
		}
		b, err = a.Log.Export(ctx, s.Study.ID, limit)
		return err
	})
	if err != nil {
		return LogState{}, err
	}
	st, err := logState(b, terms)
	if err != nil {
		return LogState{}, err
	}
	if st.Round > 0 {
		a.log().Warn("resuming the study from the audit log", slog.Uint64("last_committed_round", st.Round), slog.String("model", hex.EncodeToString(st.Model[:])))
	} else {
		a.log().Info("study is on the audit log", slog.String("initial_model", hex.EncodeToString(st.Model[:])))
	}
	return st, nil
}

// retry runs f until it succeeds, fails for another reason than the log's
// unavailability, or ctx ends; it logs each wait.
func (a *AuditRecorder) retry(ctx context.Context, what string, f func(context.Context) error) error {
	wait := time.Second
	for {
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := f(actx)
		cancel()
		if err == nil || !errors.Is(err, cluster.ErrNoLeader) || ctx.Err() != nil {
			return err
		}
		a.log().Warn("the audit log has no quorum; waiting", slog.String("for", what), slog.Duration("retry_in", wait), slog.Any("err", err))
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrLogUnavailable, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

func studyTerms(st StudyConfig, initial [32]byte) audit.Terms {
	h := audit.Hash(initial)
	t := audit.Terms{Study: st.ID, Sites: st.Clients, K: st.MinClients, Rounds: st.Rounds, Strategy: st.Strategy.Name, InitialModel: &h}
	if st.Secure() {
		t.HEParams, t.Threshold = st.HEPreset, st.Threshold
	}
	t.Params = announced(studyParams(st))
	return t
}

// announcedParams are the study parameters a hospital is told (the study
// spec carries them) and checks against the study record: the model, the
// local training and the server optimiser, and a tuning trial's
// validation split. The coordinator holds its configuration to the same
// list.
var announcedParams = []string{"mode", "model", "server_lr", "beta1", "beta2", "tau", "optimizer", "learning_rate",
	"batch_size", "local_steps", "epochs", "prox_mu", "validation_fraction",
	audit.ParamDPEpsilon, audit.ParamDPDelta, audit.ParamDPNoiseMultiplier, audit.ParamDPClipNorm, audit.ParamDPSampleRate, audit.ParamDPLevel, audit.ParamNormBound}

func announced(ps []audit.Param) []audit.Param {
	var out []audit.Param
	for _, p := range ps {
		if slices.Contains(announcedParams, p.Name) {
			out = append(out, p)
		}
	}
	return out
}

// logState reads where the study stands from the log's entries: its study
// record (which must match the terms), key setup and rounds.
func logState(b *audit.Bundle, terms audit.Terms) (LogState, error) {
	var st LogState
	var recs []*audit.Record // membership changes
	found := false
	for i, leaf := range b.Leaves {
		e, err := audit.UnmarshalEnvelope(leaf)
		if err != nil {
			return st, fmt.Errorf("coordinator: audit log entry %d: %w", i, err)
		}
		rec, err := audit.UnmarshalRecord(e.Body)
		if err != nil || rec.StudyID != terms.Study {
			continue
		}
		switch rec.Kind {
		case audit.KindStudyCreated:
			if err := terms.Check(rec); err != nil {
				return st, fmt.Errorf("%w: %w", ErrStudyRecord, err)
			}
			found, st.Model = true, rec.OutputModel
		case audit.KindKeySetupDone:
			if st.KeySetup, err = keySetupFrom(rec); err != nil {
				return st, fmt.Errorf("coordinator: the key-setup record (entry %d): %w", i, err)
			}
			st.Started = true
		case audit.KindRoundCompleted:
			st.Round, st.Model, st.Optimizer, st.Started = rec.Round, rec.OutputModel, rec.OptimizerAfter, true
			st.Completed++
		case audit.KindRoundFailed:
			st.Round, st.Started = rec.Round, true
			st.Failed++
		case audit.KindMembershipChange:
			recs = append(recs, rec)
		}
		if rec.Kind == audit.KindRoundCompleted || rec.Kind == audit.KindRoundFailed {
			for _, s := range strings.Split(rec.Param(audit.ParamExcluded), ",") {
				if _, seen := st.NormViolations[s]; s != "" && !seen {
					if st.NormViolations == nil {
						st.NormViolations = map[string]uint64{}
					}
					st.NormViolations[s] = rec.Round
				}
			}
		}
	}
	if len(recs) > 0 {
		st.Excluded = audit.ExclusionsOf(recs)
	}
	if !found {
		return st, fmt.Errorf("%w: study %q is not on the audit log; an admin must create it first (fedledger study create)", ErrStudyRecord, terms.Study)
	}
	return st, nil
}

// keySetupFrom reads the key holders and their bound identities from a
// key-setup record.
func keySetupFrom(rec *audit.Record) (*study.KeySetup, error) {
	k := &study.KeySetup{HEParams: rec.HEParamsID, Threshold: int(rec.Threshold), CollectiveKey: rec.CollectiveKeyHash,
		Holders: slices.Clone(rec.KeyHolders), Keys: map[string]ed25519.PublicKey{}, Certificates: map[string][]byte{}}
	for _, der := range rec.Certificates {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		pub, ok := cert.PublicKey.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("certificate of %q has a %T key", cert.Subject.CommonName, cert.PublicKey)
		}
		k.Keys[cert.Subject.CommonName], k.Certificates[cert.Subject.CommonName] = pub, der
	}
	for _, h := range k.Holders {
		if _, ok := k.Keys[h.Site]; !ok {
			return nil, fmt.Errorf("no certificate for key holder %q", h.Site)
		}
	}
	return k, nil
}

// StudyRecord is the study-created record an admin signs for st: the
// approved sites, K, the rounds allowed, the initial model, the strategy
// and the secure-mode parameters (t, HE parameter set). expires is zero
// for none.
func StudyRecord(st StudyConfig, initial [32]byte, admin string, expires time.Time) *audit.Record {
	rec := &audit.Record{
		Kind: audit.KindStudyCreated, StudyID: st.ID, OutputModel: audit.Hash(initial), ApprovedSites: slices.Clone(st.Clients),
		MinContributors: uint32(st.MinClients), Rounds: uint32(st.Rounds), Strategy: st.Strategy.Name, Hyperparameters: studyParams(st),
		BinaryVersion: version.String(), TimestampUnixNs: time.Now().UnixNano(), SubmitterID: admin,
	}
	if st.Secure() {
		rec.HEParamsID, rec.Threshold = st.HEPreset, uint32(st.Threshold)
	}
	if !expires.IsZero() {
		rec.ExpiresAtUnixNs = expires.UnixNano()
	}
	return rec
}

func studyParams(st StudyConfig) []audit.Param {
	p := audit.StudyParam // the one formatting the hospitals check against
	t, s := st.Training, st.Strategy
	ps := []audit.Param{
		p("purpose", st.Purpose), p("mode", st.Mode), p("model", st.Model.String()), p("rounds", st.Rounds),
		p("server_lr", s.ServerLR), p("beta1", s.Beta1), p("beta2", s.Beta2), p("tau", s.Tau),
		p("optimizer", t.Optimizer), p("learning_rate", t.LearningRate), p("batch_size", t.BatchSize),
		p("local_steps", t.LocalSteps), p("epochs", t.Epochs), p("prox_mu", t.ProxMu), p("seed", st.Seed),
	}
	if st.Secure() {
		ps = append(ps, audit.Param{Name: "crs_seed", Value: hex.EncodeToString(st.CRS())})
	}
	if st.ValidationFraction > 0 {
		ps = append(ps, audit.StudyParam("validation_fraction", st.ValidationFraction))
	}
	if st.Trial != nil {
		ps = append(ps, audit.StudyParam("tuning", st.Trial.Tuning), audit.StudyParam("trial", st.Trial.Name))
	}
	if st.TunedBy != "" {
		ps = append(ps, audit.StudyParam("tuned_by", st.TunedBy))
	}
	if st.NormBound > 0 {
		ps = append(ps, audit.StudyParam(audit.ParamNormBound, st.NormBound))
	}
	if st.Robust != "" {
		ps = append(ps, audit.StudyParam("robust_aggregator", st.Robust))
	}
	if d := st.DP; d != nil {
		ps = append(ps, audit.StudyParam(audit.ParamDPEpsilon, d.Epsilon), audit.StudyParam(audit.ParamDPDelta, d.Delta),
			audit.StudyParam(audit.ParamDPNoiseMultiplier, d.NoiseMultiplier), audit.StudyParam(audit.ParamDPClipNorm, d.ClipNorm),
			audit.StudyParam(audit.ParamDPSampleRate, d.SampleRate))
		if d.Level != "" {
			ps = append(ps, audit.StudyParam(audit.ParamDPLevel, d.Level))
		}
	}
	return ps
}

// Record implements Recorder.
func (a *AuditRecorder) Record(ctx context.Context, r study.Record) error {
	key, rec := a.record(r)
	a.mu.Lock()
	if a.signed == nil {
		a.signed = map[string][]byte{}
	}
	env, ok := a.signed[key]
	a.mu.Unlock()
	if !ok {
		rec.TimestampUnixNs, rec.SubmitterID = time.Now().UnixNano(), a.Identity.ID
		e, err := audit.Sign(a.Identity, rec)
		if err != nil {
			return err
		}
		env = e.Marshal()
		a.mu.Lock()
		a.signed[key] = env
		a.mu.Unlock()
	}
	res, err := a.Log.Append(ctx, env)
	switch {
	case err == nil:
		a.log().Info("record committed to the audit log", slog.String("kind", rec.Kind.String()), slog.Uint64("round", rec.Round), slog.Int64("index", res.Index))
		return nil
	case errors.Is(err, cluster.ErrNoLeader), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %s record of round %d: %w", ErrLogUnavailable, rec.Kind, rec.Round, err)
	}
	return fmt.Errorf("audit log: %s record of round %d: %w", rec.Kind, rec.Round, err)
}

// record builds the audit record of a study machine's Record action, and
// the key under which its signed form is kept for retries.
func (a *AuditRecorder) record(r study.Record) (string, *audit.Record) {
	st := a.study
	if k := r.KeySetup; k != nil {
		rec := &audit.Record{Kind: audit.KindKeySetupDone, StudyID: st.ID, HEParamsID: k.HEParams, Threshold: uint32(k.Threshold),
			CollectiveKeyHash: k.CollectiveKey, KeyHolders: slices.Clone(k.Holders), BinaryVersion: version.String()}
		for _, h := range k.Holders {
			rec.Certificates = append(rec.Certificates, k.Certificates[h.Site])
		}
		return "key-setup", rec
	}
	rep := r.Round
	rec := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: st.ID, Round: uint64(rep.Round), ParentModel: rep.Parent,
		OutputModel: rep.Model, Contributions: slices.Clone(rep.Contributions), AggregateHash: rep.Aggregate,
		DecryptionShares: slices.Clone(rep.DecryptionShares), Countersignatures: slices.Clone(rep.Countersignatures),
		Certificates: slices.Clone(rep.Certificates), HEParamsID: rep.HEParams, CollectiveKeyHash: rep.CollectiveKey,
		OptimizerBefore: rep.OptimizerBefore, OptimizerAfter: rep.OptimizerAfter, Strategy: st.Strategy.Name,
		Hyperparameters: studyParams(st), BinaryVersion: version.String()}
	rec.Metrics = []audit.Metric{{Name: "train_loss", Value: rep.TrainLoss}, {Name: "duration_s", Value: rep.Duration.Seconds()}}
	if acc, n := meanAccuracy(rep.ParentTest); n > 0 {
		rec.Metrics = append(rec.Metrics, audit.Metric{Name: "parent_test_accuracy", Value: acc})
	}
	// Each site's evaluation of the round's start model (and of its
	// personal model), signed by the site.
	rec.Evaluations = slices.Clone(rep.Evaluations)
	if rep.Failed {
		rec = &audit.Record{Kind: audit.KindRoundFailed, StudyID: st.ID, Round: uint64(rep.Round), ParentModel: rep.Parent,
			HEParamsID: rep.HEParams, CollectiveKeyHash: rep.CollectiveKey, Strategy: st.Strategy.Name, BinaryVersion: version.String(),
			Hyperparameters: append(studyParams(st), audit.Param{Name: "failure", Value: rep.Reason},
				audit.Param{Name: "contributors", Value: fmt.Sprint(rep.Contributors)})}
	}
	// The norm check's disclosures: each checked contribution's opened
	// projection, and who was left out for being past the bound.
	for _, site := range slices.Sorted(maps.Keys(rep.Projections)) {
		rec.Metrics = append(rec.Metrics, audit.Metric{Name: audit.MetricProjectionPrefix + site, Value: rep.Projections[site]})
	}
	if len(rep.Excluded) > 0 {
		rec.Hyperparameters = append(rec.Hyperparameters, audit.Param{Name: audit.ParamExcluded, Value: strings.Join(rep.Excluded, ",")})
	}
	// The anomaly detector's flags, as the coordinator's word.
	for _, f := range rep.Flags {
		rec.Hyperparameters = append(rec.Hyperparameters, audit.Param{Name: audit.ParamAnomalyPrefix + f.Site, Value: f.Reason})
	}
	// A DP study's rounds state the ε each hospital has spent; the rules
	// recompute it and refuse a round past the budget.
	if b, err := st.DPBudget(); err == nil && b != nil {
		if spent, err := b.Spent(rep.Round); err == nil {
			rec.Metrics = append(rec.Metrics, audit.Metric{Name: audit.MetricDPEpsilon, Value: spent})
		}
	}
	return fmt.Sprintf("round %d", rep.Round), rec
}

func (a *AuditRecorder) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}
