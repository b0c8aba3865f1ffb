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
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fedledger/fedledger/internal/model"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/tlsutil"
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
	// Out receives the progress display and the final table.
	Out io.Writer
}

// DefaultConfig is the FLamby Fed-Heart-Disease setting: logistic
// regression, Adam with learning rate 1e-3 and batch 4 on the clients,
// FedAdam on the server.
func DefaultConfig() Config {
	tc := model.DefaultTrainConfig()
	tc.Optimizer = "adam"
	tc.LearningRate = 1e-3
	tc.BatchSize = 4
	tc.LocalSteps = 50
	tc.Epochs = 0
	tc.Seed = 1
	return Config{
		Rounds:     20,
		MinClients: 3,
		Strategy:   "fedadam",
		Model:      model.Spec{Kind: "logreg", Inputs: 13},
		Training:   tc,
		Seed:       1,
		Mode:       coordinator.ModeSecure,
		Threshold:  3,
		Out:        os.Stdout,
	}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
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
	return errors.Join(errs...)
}

// Row is one hospital's test accuracy under the three ways of training.
type Row struct {
	Hospital  string
	Train     int
	Test      int
	Federated model.Metrics
	Local     model.Metrics
	Pooled    model.Metrics
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
	pki, err := newDevPKI(filepath.Join(cfg.DataDir, "pki"))
	if err != nil {
		return nil, err
	}
	strat, err := aggregation.DefaultConfig(cfg.Strategy)
	if err != nil {
		return nil, err
	}
	if cfg.ServerLR > 0 {
		strat.ServerLR = cfg.ServerLR
	}

	out := cfg.Out
	fmt.Fprintf(out, "fedledger demo: %d hospitals, %s, %s, %d rounds\n", len(train.Hospitals), cfg.Model.Kind, cfg.Strategy, cfg.Rounds)
	if cfg.Mode == coordinator.ModeSecure {
		fmt.Fprintf(out, "  secure mode: updates encrypted under a collective key (%s); any %d of the %d hospitals decrypt the sum, the coordinator alone cannot\n",
			secure.Default.ID, cfg.Threshold, len(train.Hospitals))
	} else {
		fmt.Fprintf(out, "  PLAINTEXT MODE: updates are NOT encrypted; the coordinator reads every hospital's update\n")
	}
	fmt.Fprintf(out, "  development CA and certificates: %s\n", pki.dir)

	ccfg := coordinator.DefaultConfig()
	ccfg.DataDir = filepath.Join(cfg.DataDir, "coordinator")
	ccfg.TLS = tlsutil.ServerConfig(pki.coordinator, pki.ca.Pool())
	ccfg.Study = coordinator.StudyConfig{
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
	ccfg.OnRound = func(r coordinator.RoundReport) { printRound(out, cfg.Rounds, r) }

	// The audit log: three Raft nodes; the consortium admin signs the study
	// record, the coordinator commits every round, the clients check their
	// parent model against it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	alog, err := startAuditCluster(ctx, pki, filepath.Join(cfg.DataDir, "audit"), logger)
	if err != nil {
		return nil, err
	}
	defer alog.close()
	fmt.Fprintf(out, "  audit log: 3 Raft nodes on %v (mTLS, bbolt); every round is committed before the next starts\n", alog.addrs)
	_, _, initial, err := coordinator.InitialModel(ccfg.Study)
	if err != nil {
		return nil, err
	}
	studyEnv, err := audit.Sign(pki.admin, coordinator.StudyRecord(ccfg.Study, initial, pki.admin.ID, time.Now().Add(24*time.Hour)))
	if err != nil {
		return nil, err
	}
	coordLog, err := cluster.Dial(alog.addrs, tlsutil.ClientConfig(pki.coordinator, pki.ca.Pool(), ""))
	if err != nil {
		return nil, err
	}
	defer coordLog.Close()
	ccfg.Recorder = &coordinator.AuditRecorder{Log: coordLog, Identity: pki.coordinator, StudyRecord: studyEnv.Marshal(),
		Logger: logger.With(slog.String("component", "coordinator"))}
	co, err := coordinator.New(ccfg, logger.With(slog.String("component", "coordinator")))
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: listen: %w", err)
	}
	fmt.Fprintf(out, "  coordinator on %s (mTLS); hospital clients dial out to it\n\n", lis.Addr())

	clientCtx, stopClients := context.WithCancel(ctx)
	defer stopClients()
	var wg sync.WaitGroup
	clientErrs := make([]error, len(train.Hospitals))
	for i, h := range train.Hospitals {
		kcfg := client.DefaultConfig()
		kcfg.CoordinatorAddr = lis.Addr().String()
		kcfg.TLS = tlsutil.ClientConfig(pki.clients[h], pki.ca.Pool(), "127.0.0.1")
		kcfg.Data.Heart = h
		kcfg.DataDir = filepath.Join(cfg.DataDir, "clients")
		kcfg.AllowPlaintext = cfg.Mode == coordinator.ModePlaintext
		kcfg.AuditNodes = alog.addrs
		// Each hospital accepts only studies the consortium admin signed,
		// with at least two contributors per round.
		kcfg.Policy = client.Policy{Admins: []string{pki.admin.ID}, MinK: 2}
		cl, err := client.New(kcfg, logger.With(slog.String("site", h)))
		if err != nil {
			lis.Close()
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			clientErrs[i] = cl.Run(clientCtx)
		}()
	}
	runErr := co.Run(ctx, lis)
	// The coordinator has told every client the study finished; give them a
	// moment to leave on their own, then stop them.
	waitOrCancel(&wg, stopClients, 10*time.Second)
	if runErr != nil {
		return nil, fmt.Errorf("demo: coordinator: %w", runErr)
	}
	res := co.Result()

	rep, err := compare(ctx, cfg, res)
	if err != nil {
		return nil, err
	}
	if rep.Audit, err = verifyFinal(ctx, cfg, pki, alog, res); err != nil {
		return nil, err
	}
	rep.Elapsed = time.Since(start)
	printTable(out, rep)
	fmt.Fprintf(out, "\nAudit: the regulator exported the log and verified the final model offline:\n")
	rep.Audit.WriteText(out)
	fmt.Fprintf(out, "  re-check it yourself: fedledger verify %s --bundle %s --trust %s\n",
		filepath.Join(cfg.DataDir, "final-model.flm"), filepath.Join(cfg.DataDir, "audit-bundle.bin"), filepath.Join(cfg.DataDir, "trust.json"))
	return rep, nil
}

// verifyFinal is the regulator's check: export the log as an observer,
// write the model, bundle and trust files, and verify the final model's
// lineage offline.
func verifyFinal(ctx context.Context, cfg Config, pki *devPKI, alog *auditCluster, res coordinator.StudyResult) (*audit.Report, error) {
	reg, err := cluster.Dial(alog.addrs, tlsutil.ClientConfig(pki.regulator, pki.ca.Pool(), ""))
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	b, err := reg.Export(ctx, res.Study, 1<<30)
	if err != nil {
		return nil, fmt.Errorf("demo: exporting the audit log: %w", err)
	}
	for name, data := range map[string][]byte{"final-model.flm": res.ModelBytes, "audit-bundle.bin": b.Marshal()} {
		if err := os.WriteFile(filepath.Join(cfg.DataDir, name), data, 0o644); err != nil {
			return nil, err
		}
	}
	if err := alog.trust.Write(filepath.Join(cfg.DataDir, "trust.json")); err != nil {
		return nil, err
	}
	trust, err := alog.trust.Trust()
	if err != nil {
		return nil, err
	}
	lin, err := audit.VerifyBundle(b, trust, res.Study, audit.Hash(res.Model))
	if err != nil {
		return nil, fmt.Errorf("demo: the final model does not verify: %w", err)
	}
	return audit.NewReport(lin, audit.Hash(res.Model)), nil
}

func waitOrCancel(wg *sync.WaitGroup, cancel context.CancelFunc, grace time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		cancel()
		<-done
	}
}

// compare evaluates the federated model on every hospital's test split and
// trains the two baselines with the same local hyperparameters and the same
// total number of local updates per hospital as the federation used.
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
	pooled := &train.Dataset{Name: "pooled"}
	for _, h := range train.Hospitals {
		tr, te, err := train.LoadHeart(h, train.HeartSplitSeed)
		if err != nil {
			return nil, err
		}
		trains[h], tests[h] = tr, te
		pooled.Features = tr.Features
		pooled.X = append(pooled.X, tr.X...)
		pooled.Y = append(pooled.Y, tr.Y...)
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
		if row.Federated, err = train.Evaluate(spec, fedParams, tests[h]); err != nil {
			return nil, err
		}
		if row.Local, err = train.Evaluate(cfg.Model, localParams, tests[h]); err != nil {
			return nil, err
		}
		if row.Pooled, err = train.Evaluate(cfg.Model, pooledParams, tests[h]); err != nil {
			return nil, err
		}
		rep.Rows = append(rep.Rows, row)
	}
	return rep, nil
}
