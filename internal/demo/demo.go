// Package demo runs the whole federation on this machine: a development CA,
// the coordinator and the four UCI heart-disease hospitals (Cleveland,
// Hungary, Switzerland, VA Long Beach) as clients, all over real gRPC with
// mutual TLS on loopback. It then compares the federated model with each
// hospital training alone and with pooled (centralised) training.
//
// The development CA is made on the fly and written under the data
// directory; it exists only for this demo (the --dev path). Real deployments
// use certificates from provisioning.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/fedledger/fedledger/internal/fedtest"
	"github.com/fedledger/fedledger/internal/model"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/coordinator/tuning"
)

// Config is the demo's configuration.
type Config struct {
	DataDir    string
	Rounds     int
	MinClients int
	Strategy   string
	// ServerLR overrides the strategy's default server learning rate when > 0.
	ServerLR float64
	Model    model.Spec
	Training model.TrainConfig
	Seed     int64
	// Mode is coordinator.ModeSecure (default) or ModePlaintext.
	Mode string
	// Threshold is t, the hospitals needed to decrypt an aggregate.
	Threshold int
	// Standardization is "site" (each hospital standardises with its own
	// statistics) or "consortium" (every hospital with the pooled
	// statistics, from the hospitals' summaries; train.PoolSummaries).
	Standardization string
	// Personal, when set, makes every hospital keep a personal model
	// (client.PersonalConfig).
	Personal *client.PersonalConfig
	// DPEpsilon, when > 0, makes the study record-level differentially
	// private with this ε budget per hospital (δ = 1e-5, clip norm 1,
	// sampling rate 0.05), the noise calibrated to spend it over the
	// study's rounds.
	DPEpsilon float64
	// DPLevel is "record" (default) or "client": DP-FedAvg, each
	// hospital's update clipped to norm 0.1 and its share of the noise
	// sized for K contributors.
	DPLevel string
	// NormBound, when > 0, bounds every hospital's update norm; the
	// coordinator checks it under encryption (secure mode) and leaves out
	// an update past it.
	NormBound float64
	// Attacker, when set, is a compromised hospital that poisons every
	// round (attack experiments), as Attack says (default AttackScaled),
	// with AttackScale.
	Attacker    string
	Attack      string
	AttackScale float64
	// ExcludeLeftOut makes the demo's admin exclude, from the next round
	// on, a site whose update the norm check left out (a signed exclusion
	// relayed to the audit log: fedledger study exclude).
	ExcludeLeftOut bool
	// Data is where the hospitals read their data: DataHeart (the
	// shipped CSV files, default) or DataFHIR (each hospital's data
	// exported first as a FHIR R4 Bulk Data export, fedledger fhir export,
	// with a research-use denial for every FHIRDenyEvery-th patient when
	// it is > 0).
	Data          string
	FHIRDenyEvery int
	// ExcludeAtStart, when set, is a site the demo's admin excludes from
	// round 1 on (experiments: the federation without it).
	ExcludeAtStart string
	// Tune, when set, first tunes the hospitals' learning rate, local
	// steps and the server learning rate (and the rounds) by successive
	// halving on validation data (coordinator/tuning), every trial a study
	// on the log, and then runs the study with what it chose.
	Tune *tuning.Plan
	// Out receives the progress display and the final table.
	Out io.Writer
	// Serve, when set, keeps the audit log up after the study (and the
	// coordinator's final status): Run starts the web consoles of the
	// coordinator and of the first audit node (internal/console) on
	// loopback, calls Serve with them, and returns when it does
	// (fedledger demo --serve).
	Serve func(ctx context.Context, s Served) error
}

// TunePlan is the demo's tuning: learning rates 0.01, 0.03 and 0.1,
// 25 or 50 local steps, the strategy's server learning rate, from 4 rounds
// up to the demo's rounds, keeping a third of the trials at each rung.
func TunePlan(rounds int) *tuning.Plan {
	return &tuning.Plan{ID: "heart-tuning", Space: tuning.Space{LearningRates: []float64{0.01, 0.03, 0.1}, LocalSteps: []int{25, 50}},
		MinRounds: min(4, rounds), MaxRounds: rounds, Eta: 3}
}

// DefaultConfig is the setting experiments/heart-strategies chose on the
// hospitals' validation splits: logistic regression on the consortium's
// standardisation, FedAvg with SGD at learning rate 0.01, batch 4 and 50
// local steps on the clients, 20 rounds, and every hospital keeping a
// personal model with its own intercept (PersonalConfig).
func DefaultConfig() Config {
	tc := model.DefaultTrainConfig()
	tc.Optimizer = model.OptSGD
	tc.LearningRate = 0.01
	tc.BatchSize = 4
	tc.LocalSteps = 50
	tc.Epochs = 0
	tc.Seed = 1
	return Config{
		Rounds:          20,
		MinClients:      3,
		Strategy:        "fedavg",
		Model:           model.Spec{Kind: "logreg", Inputs: 13},
		Training:        tc,
		Seed:            1,
		Mode:            coordinator.ModeSecure,
		Threshold:       3,
		Standardization: StandardizeConsortium,
		Personal:        personalByLoss(),
		Out:             os.Stdout,
	}
}

// personalByLoss is the demo's default personalisation: per-site
// intercepts, λ chosen by validation loss (experiments/heart-strategies).
func personalByLoss() *client.PersonalConfig {
	p := PersonalConfig(train.PersonalIntercept)
	p.SelectBy = client.SelectByLoss
	return p
}

// PersonalConfig is how the demo's hospitals personalise with method:
// Adam at learning rate 0.01, batch 4, 300 steps, λ chosen per hospital on
// a validation quarter of its training split among 10, 1, 0.1 and 0.01
// (and 0 for the intercept), or the global model kept.
func PersonalConfig(method string) *client.PersonalConfig {
	tc := model.DefaultTrainConfig()
	tc.Optimizer, tc.LearningRate, tc.BatchSize, tc.Epochs, tc.LocalSteps = model.OptAdam, 0.01, 4, 0, 300
	p := &client.PersonalConfig{Method: method, Train: tc, Lambdas: []float64{10, 1, 0.1, 0.01}}
	if method == train.PersonalIntercept {
		p.Lambdas = append(p.Lambdas, 0)
	}
	return p
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.DPEpsilon < 0 || c.DPLevel != "" && c.DPLevel != audit.DPRecord && c.DPLevel != audit.DPClient {
		errs = append(errs, fmt.Errorf("demo: dp epsilon %v, level %q: want epsilon >= 0 and level record or client", c.DPEpsilon, c.DPLevel))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("demo: data directory is empty"))
	}
	if c.Rounds < 1 {
		errs = append(errs, fmt.Errorf("demo: rounds = %d, want >= 1", c.Rounds))
	}
	if c.MinClients < 1 || c.MinClients > len(train.Hospitals) {
		errs = append(errs, fmt.Errorf("demo: min clients = %d, want 1..%d", c.MinClients, len(train.Hospitals)))
	}
	if err := c.Model.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := c.Training.Validate(); err != nil {
		errs = append(errs, err)
	}
	switch c.Mode {
	case coordinator.ModeSecure:
		if c.Threshold < 2 || c.Threshold > len(train.Hospitals) {
			errs = append(errs, fmt.Errorf("demo: threshold = %d, want 2..%d", c.Threshold, len(train.Hospitals)))
		}
	case coordinator.ModePlaintext:
	default:
		errs = append(errs, fmt.Errorf("demo: mode %q, want secure or plaintext", c.Mode))
	}
	if c.Out == nil {
		errs = append(errs, errors.New("demo: no output writer"))
	}
	if c.Standardization != "" && c.Standardization != StandardizeSite && c.Standardization != StandardizeConsortium {
		errs = append(errs, fmt.Errorf("demo: standardization %q, want %s or %s", c.Standardization, StandardizeSite, StandardizeConsortium))
	}
	if c.Personal != nil {
		if err := c.Personal.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("demo: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Standardisations.
const (
	StandardizeSite       = "site"
	StandardizeConsortium = "consortium"
)

// Row is one hospital's test accuracy under the ways of training.
type Row struct {
	Hospital  string
	Train     int
	Test      int
	Federated model.Metrics
	// Personal is the hospital's personal model made from the final
	// global one, as the hospital reported it (HasPersonal).
	Personal    model.Metrics
	HasPersonal bool
	Local       model.Metrics
	Pooled      model.Metrics
}

// Report is the outcome of a demo run.
type Report struct {
	Rows       []Row
	FinalModel [32]byte
	Rounds     []coordinator.RoundReport
	Elapsed    time.Duration
	// Audit is the offline verification of the final model's lineage.
	Audit *audit.Report
}

// AccuracyPerRound is the test accuracy, over all hospitals' test rows, of
// each round's starting model as the hospitals reported it, then of the
// final model.
func (r *Report) AccuracyPerRound() []float64 {
	var out []float64
	for _, rr := range r.Rounds {
		var acc, n float64
		for _, pt := range rr.ParentTest {
			acc, n = acc+pt.Accuracy*float64(pt.N), n+float64(pt.N)
		}
		out = append(out, acc/max(n, 1))
	}
	var acc, n float64
	for _, s := range r.Rows {
		acc, n = acc+s.Federated.Accuracy*float64(s.Test), n+float64(s.Test)
	}
	return append(out, acc/n)
}

// MeanAccuracy returns the mean per-hospital test accuracy of the federated,
// local-only and pooled models.
func (r *Report) MeanAccuracy() (federated, local, pooled float64) {
	for _, row := range r.Rows {
		federated += row.Federated.Accuracy
		local += row.Local.Accuracy
		pooled += row.Pooled.Accuracy
	}
	n := float64(len(r.Rows))
	return federated / n, local / n, pooled / n
}

// MeanPersonal returns the mean per-hospital test accuracy of the
// hospitals' personal models, and whether every hospital reported one.
func (r *Report) MeanPersonal() (float64, bool) {
	var acc float64
	for _, row := range r.Rows {
		if !row.HasPersonal {
			return 0, false
		}
		acc += row.Personal.Accuracy
	}
	return acc / float64(len(r.Rows)), len(r.Rows) > 0
}

// Run runs the demo federation to the end and prints its progress and the
// comparison table to cfg.Out.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("demo: data directory: %w", err)
	}
	strat, err := aggregation.DefaultConfig(cfg.Strategy)
	if err != nil {
		return nil, err
	}
	if cfg.ServerLR > 0 {
		strat.ServerLR = cfg.ServerLR
	}
	study := coordinator.StudyConfig{
		ID:              "heart-demo",
		Model:           cfg.Model,
		Training:        cfg.Training,
		Rounds:          cfg.Rounds,
		MinClients:      cfg.MinClients,
		Clients:         train.Hospitals,
		RoundDeadline:   time.Minute,
		StartTimeout:    time.Minute,
		Strategy:        strat,
		Seed:            cfg.Seed,
		Mode:            cfg.Mode,
		HEPreset:        secure.Default.ID,
		Threshold:       cfg.Threshold,
		KeySetupTimeout: time.Minute,
	}
	out := cfg.Out
	study.NormBound = cfg.NormBound
	if cfg.DPEpsilon > 0 {
		study.DP = &coordinator.DPConfig{Epsilon: cfg.DPEpsilon, Delta: 1e-5, ClipNorm: 1, SampleRate: 0.05}
		if cfg.DPLevel == audit.DPClient {
			study.DP.Level, study.DP.ClipNorm, study.DP.SampleRate = audit.DPClient, 0.1, 1
		}
		if study.DP.NoiseMultiplier, err = coordinator.CalibrateNoise(*study.DP, study.Rounds, study.Training.LocalSteps); err != nil {
			return nil, fmt.Errorf("demo: %w", err)
		}
	}
	fmt.Fprintf(out, "fedledger demo: %d hospitals, %s, %s, %d rounds\n", len(train.Hospitals), cfg.Model.Kind, cfg.Strategy, cfg.Rounds)
	if cfg.Mode == coordinator.ModeSecure {
		fmt.Fprintf(out, "  secure mode: updates encrypted under a collective key (%s); any %d of the %d hospitals decrypt the sum, the coordinator alone cannot\n",
			secure.Default.ID, cfg.Threshold, len(train.Hospitals))
	} else {
		fmt.Fprintf(out, "  PLAINTEXT MODE: updates are NOT encrypted; the coordinator reads every hospital's update\n")
	}
	if d := study.DP; d != nil && d.Level == audit.DPClient {
		fmt.Fprintf(out, "  client-level differential privacy (DP-FedAvg): every hospital clips its update to norm %g and adds its share of noise σ = %g for K = %d, within ε = %g, δ = %g; every audit node enforces the budget\n",
			d.ClipNorm, d.NoiseMultiplier, study.MinClients, d.Epsilon, d.Delta)
	} else if d != nil {
		fmt.Fprintf(out, "  differential privacy: every hospital trains with DP-SGD (σ = %g, clip %g, sampling rate %g) within ε = %g, δ = %g each; every audit node enforces the budget\n",
			d.NoiseMultiplier, d.ClipNorm, d.SampleRate, d.Epsilon, d.Delta)
	}
	if cfg.Data == DataFHIR {
		if err := exportFHIR(cfg, out); err != nil {
			return nil, err
		}
	} else if cfg.Data != "" && cfg.Data != DataHeart {
		return nil, fmt.Errorf("demo: data %q: want %s or %s", cfg.Data, DataHeart, DataFHIR)
	}
	var consortium *train.Standardization
	if cfg.Standardization == StandardizeConsortium {
		s, err := consortiumStandardization()
		if err != nil {
			return nil, err
		}
		consortium = &s
		fmt.Fprintf(out, "  consortium standardisation: every hospital scales its inputs with the pooled mean and std, from each one's row count, sums and sums of squares\n")
	}
	if cfg.Personal != nil {
		fmt.Fprintf(out, "  personalisation: each hospital keeps a personal model (%s) beside the global one, chosen on a validation split of its training data\n", cfg.Personal.Method)
	}
	// The audit log has three Raft nodes; the consortium admin signs the
	// study record, the coordinator commits every round with the
	// hospitals' signatures, and each hospital checks its tasks against
	// the log and accepts only studies the admin signed.
	var quiet bool // trials print a line each, not every round
	var fed *fedtest.Federation
	// The demo's admin, when cfg.ExcludeLeftOut: it excludes a site the
	// norm check left out from the next round on.
	admin := &fedtest.LeftOutAdmin{Done: func(site string, from uint64, reason string, err error) {
		if err != nil {
			fmt.Fprintf(out, "  admin: could not exclude %s: %v\n", site, err)
			return
		}
		fmt.Fprintf(out, "  admin: excluded %s from round %d on (%s); the exclusion is on the audit log\n", site, from, reason)
	}}
	defer admin.Wait()
	defer func() {
		if fed != nil {
			fed.Close()
		}
	}()
	// runStudy runs st on the federation, starting it for the first study.
	runStudy := func(st coordinator.StudyConfig) (coordinator.StudyResult, error) {
		if fed == nil {
			var err error
			fed, err = fedtest.Start(ctx, fedtest.Config{
				Dir: cfg.DataDir, Study: st, AuditNodes: 3, Logger: logger, Expires: time.Now().Add(24 * time.Hour),
				Data: func(site string) client.DataConfig {
					if cfg.Data == DataFHIR {
						return client.DataConfig{FHIR: &client.FHIRData{Manifest: filepath.Join(cfg.DataDir, "fhir", site, "manifest.json")},
							Standardization: consortium}
					}
					return client.DataConfig{Heart: site, Standardization: consortium}
				},
				Coordinator: func(cc *coordinator.Config) {
					cc.OnRound = func(r coordinator.RoundReport) {
						if !quiet {
							printRound(out, cc.Study.Rounds, r)
						}
						if cfg.ExcludeLeftOut {
							admin.LeftOut(ctx, fed, cc.Study.ID, r)
						}
					}
				},
				Client: func(site string, kc *client.Config) {
					kc.Policy.MinK, kc.Personal = 2, cfg.Personal
					if site == cfg.Attacker {
						kc.Tamper, kc.PoisonData = AttackHooks(cfg.Attack, cfg.AttackScale)
					}
				},
			})
			if err != nil {
				return coordinator.StudyResult{}, err
			}
			fmt.Fprintf(out, "  development CA and certificates: %s\n", fed.PKI.Dir)
			fmt.Fprintf(out, "  audit log: 3 Raft nodes on %v (mTLS, bbolt); every round is committed, with the hospitals' signatures, before the next starts\n", fed.Audit.Addrs)
			fmt.Fprintf(out, "  coordinator on %s (mTLS); hospital clients dial out to it\n\n", fed.Addr)
		} else if err := fed.NextStudy(ctx, st); err != nil {
			return coordinator.StudyResult{}, err
		}
		if cfg.ExcludeAtStart != "" {
			if err := fed.Exclude(ctx, st.ID, cfg.ExcludeAtStart, 1, "left out of the whole study (experiment baseline)"); err != nil {
				return coordinator.StudyResult{}, err
			}
		}
		if err := fed.StartClients(); err != nil {
			return coordinator.StudyResult{}, err
		}
		return fed.Wait(time.Hour)
	}
	if cfg.Tune != nil {
		quiet = true
		chosen, err := tune(ctx, cfg, study, runStudy, func() *fedtest.Federation { return fed })
		if err != nil {
			return nil, err
		}
		quiet = false
		study = chosen
		cfg.Rounds, cfg.Training = chosen.Rounds, chosen.Training
		fmt.Fprintf(out, "\nthe study, with the tuned hyperparameters: %d rounds\n", cfg.Rounds)
	}
	res, err := runStudy(study)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	rep, err := compare(ctx, cfg, res)
	if err != nil {
		return nil, err
	}
	if rep.Audit, err = verifyFinal(ctx, cfg, fed, res); err != nil {
		return nil, err
	}
	rep.Elapsed = time.Since(start)
	printTable(out, rep)
	fmt.Fprintf(out, "\nAudit: the regulator exported the log and verified the final model offline:\n")
	rep.Audit.WriteText(out)
	fmt.Fprintf(out, "  re-check it yourself: fedledger verify %s --bundle %s --trust %s\n",
		filepath.Join(cfg.DataDir, "final-model.flm"), filepath.Join(cfg.DataDir, "audit-bundle.bin"), filepath.Join(cfg.DataDir, "trust.json"))
	if cfg.Serve != nil {
		return rep, serveConsoles(ctx, cfg, fed, rep, logger)
	}
	return rep, nil
}

// verifyFinal is the regulator's check: export the log as an observer,
// write the model, bundle and trust files, and verify the final model's
// lineage offline.
func verifyFinal(ctx context.Context, cfg Config, fed *fedtest.Federation, res coordinator.StudyResult) (*audit.Report, error) {
	rep, b, err := fed.Verify(ctx, res.Model)
	if b != nil {
		for name, data := range map[string][]byte{"final-model.flm": res.ModelBytes, "audit-bundle.bin": b.Marshal()} {
			if err := os.WriteFile(filepath.Join(cfg.DataDir, name), data, 0o644); err != nil {
				return nil, err
			}
		}
		if err := fed.Audit.Trust.Write(filepath.Join(cfg.DataDir, "trust.json")); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, fmt.Errorf("demo: the final model does not verify: %w", err)
	}
	return rep, nil
}

// consortiumStandardization pools the four hospitals' summaries of their
// training splits, as a consortium computes it: no row leaves a hospital,
// only its row count and, per input, the sum and the sum of squares.
func consortiumStandardization() (train.Standardization, error) {
	var sums []train.Summary
	for _, h := range train.Hospitals {
		tr, _, err := train.LoadHeart(h, train.HeartSplitSeed)
		if err != nil {
			return train.Standardization{}, err
		}
		s, err := train.Summarize(tr)
		if err != nil {
			return train.Standardization{}, err
		}
		sums = append(sums, s)
	}
	return train.PoolSummaries(sums...)
}

// compare evaluates the federated model on every hospital's test split
// (standardised as the hospitals did) and trains the two baselines with the
// same local hyperparameters and the same total number of local updates per
// hospital as the federation used: each hospital alone on its own
// standardisation, pooled training on the pooled one (the standardisation
// of the data it trains on).
func compare(ctx context.Context, cfg Config, res coordinator.StudyResult) (*Report, error) {
	rep := &Report{FinalModel: res.Model, Rounds: res.Rounds}
	spec, fedParams, err := model.Decode(res.ModelBytes)
	if err != nil {
		return nil, fmt.Errorf("demo: final model: %w", err)
	}
	init, err := model.InitParams(cfg.Model, cfg.Seed)
	if err != nil {
		return nil, err
	}
	budget := cfg.Training
	budget.LocalSteps = cfg.Training.LocalSteps * cfg.Rounds
	if cfg.Training.LocalSteps == 0 {
		budget.Epochs = cfg.Training.Epochs * cfg.Rounds
	}

	trains := map[string]*train.Dataset{}
	tests := map[string]*train.Dataset{}
	fedTests := map[string]*train.Dataset{}
	pooledTests := map[string]*train.Dataset{}
	pooled := &train.Dataset{Name: "pooled"}
	std, err := consortiumStandardization()
	if err != nil {
		return nil, err
	}
	for _, h := range train.Hospitals {
		tr, te, err := train.LoadHeart(h, train.HeartSplitSeed)
		if err != nil {
			return nil, err
		}
		trains[h], tests[h] = tr, te
		ptr, pte, err := train.LoadHeart(h, train.HeartSplitSeed)
		if err != nil {
			return nil, err
		}
		if err := train.Restandardize(ptr, pte, std); err != nil {
			return nil, err
		}
		pooledTests[h], fedTests[h] = pte, te
		if cfg.Standardization == StandardizeConsortium {
			fedTests[h] = pte
		}
		pooled.Features = ptr.Features
		pooled.X = append(pooled.X, ptr.X...)
		pooled.Y = append(pooled.Y, ptr.Y...)
	}
	pooledBudget := budget
	pooledBudget.LocalSteps = budget.LocalSteps * len(train.Hospitals)
	pooledParams, _, err := train.Train(ctx, cfg.Model, init, pooled, pooledBudget)
	if err != nil {
		return nil, fmt.Errorf("demo: pooled training: %w", err)
	}
	for _, h := range train.Hospitals {
		localParams, _, err := train.Train(ctx, cfg.Model, init, trains[h], budget)
		if err != nil {
			return nil, fmt.Errorf("demo: %s alone: %w", h, err)
		}
		row := Row{Hospital: train.HospitalName(h), Train: trains[h].Len(), Test: tests[h].Len()}
		if row.Federated, err = train.Evaluate(spec, fedParams, fedTests[h]); err != nil {
			return nil, err
		}
		row.Personal, row.HasPersonal = res.FinalPersonal[h]
		if row.Local, err = train.Evaluate(cfg.Model, localParams, tests[h]); err != nil {
			return nil, err
		}
		if row.Pooled, err = train.Evaluate(cfg.Model, pooledParams, pooledTests[h]); err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}

// tune runs cfg.Tune's trials, each a study on the federation runStudy
// drives, scores each from the audit log (replayed through the rules, as
// anyone can), prints a line per trial and the choice, checks that the
// log alone gives the same choice, and returns the study to run: study
// with the chosen hyperparameters and rounds, naming the tuning run.
func tune(ctx context.Context, cfg Config, study coordinator.StudyConfig, runStudy func(coordinator.StudyConfig) (coordinator.StudyResult, error),
	fed func() *fedtest.Federation) (coordinator.StudyConfig, error) {
	out, plan := cfg.Out, *cfg.Tune
	if len(plan.Space.ServerLRs) == 0 {
		plan.Space.ServerLRs = []float64{study.Strategy.ServerLR}
	}
	budgets, sizes := plan.Rungs(len(plan.Candidates()))
	fmt.Fprintf(out, "tuning %s: %d candidates, successive halving over rungs of %v rounds (%v trials), each trial a study on the log, scored on validation data held out of the hospitals' training splits\n",
		plan.ID, len(plan.Candidates()), budgets, sizes)
	replay := func() ([]audit.LineageStep, error) {
		b, err := fed().Export(ctx)
		if err != nil {
			return nil, err
		}
		trust, err := fed().Audit.Trust.Trust()
		if err != nil {
			return nil, err
		}
		_, _, steps, err := audit.ReplayBundle(b, trust)
		return steps, err
	}
	run := func(ctx context.Context, st coordinator.StudyConfig) ([]*audit.Record, error) {
		start := time.Now()
		_, err := runStudy(st)
		if err != nil && fed() == nil {
			return nil, err
		}
		steps, lerr := replay()
		if lerr != nil {
			return nil, lerr
		}
		var recs []*audit.Record
		for _, s := range steps {
			if s.Record.StudyID == st.ID {
				recs = append(recs, s.Record)
			}
		}
		best, ok := tuning.Best(tuning.Scores(recs))
		switch {
		case err != nil:
			fmt.Fprintf(out, "  %-22s lr %-6g steps %-3d  FAILED: %v\n", st.ID, st.Training.LearningRate, st.Training.LocalSteps, err)
			return recs, fmt.Errorf("%w: %w", tuning.ErrTrialFailed, err)
		case ok:
			fmt.Fprintf(out, "  %-22s lr %-6g steps %-3d  best validation loss %.4f (accuracy %.3f) after %d of %d rounds  %s\n",
				st.ID, st.Training.LearningRate, st.Training.LocalSteps, best.Loss, best.Accuracy, best.After, st.Rounds-1, time.Since(start).Round(time.Second))
		default:
			fmt.Fprintf(out, "  %-22s lr %-6g steps %-3d  no validation figures\n", st.ID, st.Training.LearningRate, st.Training.LocalSteps)
		}
		return recs, nil
	}
	res, err := tuning.Run(ctx, study, plan, run)
	if err != nil {
		return coordinator.StudyConfig{}, fmt.Errorf("demo: %w", err)
	}
	steps, err := replay()
	if err != nil {
		return coordinator.StudyConfig{}, err
	}
	again, err := tuning.Recompute(steps, plan.ID)
	if err != nil {
		return coordinator.StudyConfig{}, fmt.Errorf("demo: recomputing the tuning from the log: %w", err)
	}
	if again.Selected.Study != res.Selected.Study || again.Selected.Best != res.Selected.Best {
		return coordinator.StudyConfig{}, fmt.Errorf("demo: the log selects %s, the run selected %s", again.Selected.Study, res.Selected.Study)
	}
	c := res.Selected.Candidate
	fmt.Fprintf(out, "chosen on validation data (the log gives the same choice: fedledger tuning report %s): learning rate %g, %d local steps, server learning rate %g, %d rounds (validation loss %.4f, accuracy %.3f)\n",
		plan.ID, c.LearningRate, c.LocalSteps, c.ServerLR, res.Selected.Best.After, res.Selected.Best.Loss, res.Selected.Best.Accuracy)
	chosen := res.Chosen(study)
	chosen.TunedBy = plan.ID
	return chosen, nil
}
