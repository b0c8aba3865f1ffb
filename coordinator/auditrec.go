package coordinator

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/internal/tlsutil"
	"github.com/fedledger/fedledger/internal/version"
)

// ErrStudyRecord: the study on the audit log does not match this
// coordinator's configuration, or is missing.
var ErrStudyRecord = errors.New("coordinator: audit log study record")

// AuditRecorder commits the study's milestones to the audit log, signed
// with the coordinator's identity: the key-setup record and one record per
// round (completed or failed). The study-created record is an admin's: if
// the log does not have it yet, StudyRecord (an admin-signed envelope) is
// appended; either way its rules must match the configuration.
type AuditRecorder struct {
	Log         *cluster.Client
	Identity    *tlsutil.Identity
	StudyRecord []byte
	Logger      *slog.Logger
	// Timeout bounds each append (retried through leader changes inside).
	Timeout time.Duration

	study StudyConfig
	keys  *KeySetup
}

func (a *AuditRecorder) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	t := a.Timeout
	if t <= 0 {
		t = 30 * time.Second
	}
	return context.WithTimeout(ctx, t)
}

// StudyStarted checks the study is on the log as configured (appending the
// admin's study record if it is not there yet) and returns the last round
// the log has committed, from which the coordinator carries on.
func (a *AuditRecorder) StudyStarted(ctx context.Context, s StudyStart) (Resume, error) {
	a.study = s.Study
	ctx, cancel := a.ctx(ctx)
	defer cancel()
	if a.StudyRecord != nil {
		rec, err := decodeStudyRecord(a.StudyRecord)
		if err != nil {
			return Resume{}, err
		}
		if err := checkStudyRecord(rec, s); err != nil {
			return Resume{}, err
		}
		if _, err := a.Log.Append(ctx, a.StudyRecord); err != nil && !errors.Is(err, audit.ErrConflict) {
			return Resume{}, fmt.Errorf("%w: appending the study record: %v", ErrStudyRecord, err)
		}
	}
	out, round, err := a.Log.LatestOutput(ctx, s.Study.ID)
	if errors.Is(err, audit.ErrUnknownStudy) {
		return Resume{}, fmt.Errorf("%w: study %q is not on the audit log; an admin must create it first", ErrStudyRecord, s.Study.ID)
	}
	if err != nil {
		return Resume{}, err
	}
	if round == 0 && out != audit.Hash(s.InitialModel) {
		return Resume{}, fmt.Errorf("%w: the log's initial model is %x, this coordinator's is %x", ErrStudyRecord, out[:8], s.InitialModel[:8])
	}
	if round > 0 {
		a.log().Warn("resuming the study from the audit log", slog.Uint64("last_committed_round", round), slog.String("model", hex.EncodeToString(out[:])))
	} else {
		a.log().Info("study is on the audit log", slog.String("initial_model", hex.EncodeToString(out[:])))
	}
	return Resume{Round: round, Model: [32]byte(out)}, nil
}

func decodeStudyRecord(env []byte) (*audit.Record, error) {
	e, err := audit.UnmarshalEnvelope(env)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStudyRecord, err)
	}
	rec, err := audit.UnmarshalRecord(e.Body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrStudyRecord, err)
	}
	if rec.Kind != audit.KindStudyCreated {
		return nil, fmt.Errorf("%w: record is %s, want %s", ErrStudyRecord, rec.Kind, audit.KindStudyCreated)
	}
	return rec, nil
}

// checkStudyRecord compares an admin's study record with the study this
// coordinator is about to run.
func checkStudyRecord(rec *audit.Record, s StudyStart) error {
	st := s.Study
	sites := slices.Clone(st.Clients)
	slices.Sort(sites)
	approved := slices.Clone(rec.ApprovedSites)
	slices.Sort(approved)
	switch {
	case rec.StudyID != st.ID:
		return fmt.Errorf("%w: record is for study %q, configured %q", ErrStudyRecord, rec.StudyID, st.ID)
	case !slices.Equal(sites, approved):
		return fmt.Errorf("%w: record approves %v, configured clients %v", ErrStudyRecord, approved, sites)
	case int(rec.MinContributors) != st.MinClients:
		return fmt.Errorf("%w: record says K=%d, configured %d", ErrStudyRecord, rec.MinContributors, st.MinClients)
	case rec.OutputModel != audit.Hash(s.InitialModel):
		return fmt.Errorf("%w: record's initial model %x, this coordinator's %x", ErrStudyRecord, rec.OutputModel[:8], s.InitialModel[:8])
	case st.Secure() && rec.HEParamsID != st.HEPreset:
		return fmt.Errorf("%w: record's HE parameters %q, configured %q", ErrStudyRecord, rec.HEParamsID, st.HEPreset)
	}
	return nil
}

// StudyRecord is the study-created record an admin signs for st: the
// approved sites, K, the initial model, the strategy and the secure-mode
// parameters. expires is zero for none.
func StudyRecord(st StudyConfig, initial [32]byte, admin string, expires time.Time) *audit.Record {
	rec := &audit.Record{
		Kind: audit.KindStudyCreated, StudyID: st.ID, OutputModel: audit.Hash(initial), ApprovedSites: slices.Clone(st.Clients),
		MinContributors: uint32(st.MinClients), Strategy: st.Strategy.Name, Hyperparameters: studyParams(st),
		BinaryVersion: version.String(), TimestampUnixNs: time.Now().UnixNano(), SubmitterID: admin,
	}
	if st.Secure() {
		rec.HEParamsID = st.HEPreset
	}
	if !expires.IsZero() {
		rec.ExpiresAtUnixNs = expires.UnixNano()
	}
	return rec
}

func studyParams(st StudyConfig) []audit.Param {
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	t := st.Training
	ps := []audit.Param{
		{Name: "purpose", Value: st.Purpose}, {Name: "mode", Value: st.Mode}, {Name: "model", Value: st.Model.String()}, {Name: "rounds", Value: strconv.Itoa(st.Rounds)},
		{Name: "server_lr", Value: f(st.Strategy.ServerLR)}, {Name: "optimizer", Value: t.Optimizer},
		{Name: "learning_rate", Value: f(t.LearningRate)}, {Name: "batch_size", Value: strconv.Itoa(t.BatchSize)},
		{Name: "local_steps", Value: strconv.Itoa(t.LocalSteps)}, {Name: "epochs", Value: strconv.Itoa(t.Epochs)},
		{Name: "prox_mu", Value: f(t.ProxMu)},
	}
	if st.Secure() {
		ps = append(ps, audit.Param{Name: "threshold", Value: strconv.Itoa(st.Threshold)},
			audit.Param{Name: "crs_seed", Value: hex.EncodeToString(st.CRS())})
	}
	return ps
}

// KeySetupDone appends the key-setup record: preset, collective key hash
// and participants.
func (a *AuditRecorder) KeySetupDone(ctx context.Context, k KeySetup) error {
	a.keys = &k
	rec := &audit.Record{Kind: audit.KindKeySetupDone, StudyID: k.Study, HEParamsID: k.HEPreset, CollectiveKeyHash: audit.Hash(k.CollectiveKey),
		ApprovedSites: slices.Clone(k.Participants), Hyperparameters: []audit.Param{{Name: "threshold", Value: strconv.Itoa(k.Threshold)}},
		BinaryVersion: version.String()}
	_, err := a.append(ctx, rec)
	if errors.Is(err, audit.ErrConflict) {
		// A restarted coordinator re-announcing the key setup it had
		// already recorded (its keys.json is written before the record).
		a.log().Info("key setup was already on the audit log")
		return nil
	}
	return err
}

// RecordRound appends the round's record and returns once the log has
// committed it.
func (a *AuditRecorder) RecordRound(ctx context.Context, rep RoundReport) error {
	st := a.study
	rec := &audit.Record{Kind: audit.KindRoundCompleted, StudyID: st.ID, Round: uint64(rep.Round), ParentModel: audit.Hash(rep.Parent),
		OutputModel: audit.Hash(rep.Model), AggregateHash: audit.Hash(rep.AggregateHash), DecryptionShares: slices.Clone(rep.DecryptionShares),
		Strategy: st.Strategy.Name, Hyperparameters: studyParams(st), BinaryVersion: version.String()}
	if a.keys != nil {
		rec.HEParamsID, rec.CollectiveKeyHash = a.keys.HEPreset, audit.Hash(a.keys.CollectiveKey)
	}
	if rep.Failed {
		rec.Kind, rec.OutputModel = audit.KindRoundFailed, audit.Hash{}
		rec.Hyperparameters = append(rec.Hyperparameters, audit.Param{Name: "failure", Value: rep.Reason})
	}
	rec.Contributions = slices.Clone(rep.Contributions)
	rec.Metrics = []audit.Metric{{Name: "train_loss", Value: rep.TrainLoss}, {Name: "duration_s", Value: rep.Duration.Seconds()}}
	var acc, n float64
	for _, m := range rep.ParentTest {
		acc += m.Accuracy * float64(m.N)
		n += float64(m.N)
	}
	if n > 0 {
		rec.Metrics = append(rec.Metrics, audit.Metric{Name: "parent_test_accuracy", Value: acc / n})
	}
	idx, err := a.append(ctx, rec)
	if err != nil {
		return err
	}
	a.log().Info("round committed to the audit log", slog.Int("round", rep.Round), slog.Int64("index", idx), slog.Bool("failed", rep.Failed))
	return nil
}

func (a *AuditRecorder) append(ctx context.Context, rec *audit.Record) (int64, error) {
	rec.TimestampUnixNs, rec.SubmitterID = time.Now().UnixNano(), a.Identity.ID
	env, err := audit.Sign(a.Identity, rec)
	if err != nil {
		return 0, err
	}
	ctx, cancel := a.ctx(ctx)
	defer cancel()
	r, err := a.Log.Append(ctx, env.Marshal())
	if err != nil {
		return 0, fmt.Errorf("audit log: %s record of round %d: %w", rec.Kind, rec.Round, err)
	}
	return r.Index, nil
}

func (a *AuditRecorder) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}
