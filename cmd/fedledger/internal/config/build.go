package config

import (
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/fedledger/fedledger/internal/model"

	"github.com/spf13/pflag"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Flag names bound to configuration keys. cmd/fedledger defines the flags;
// the config package only needs their names.
var (
	coordinatorFlags = map[string]string{
		"listen":              "listen",
		"data_dir":            "data-dir",
		"log.format":          "log-format",
		"log.level":           "log-level",
		"study.rounds":        "rounds",
		"study.strategy.name": "strategy",
		"study.mode":          "mode",
		"linger":              "linger",
	}
	auditNodeFlags = map[string]string{
		"listen":     "listen",
		"data_dir":   "data-dir",
		"bootstrap":  "bootstrap",
		"join":       "join",
		"log.format": "log-format",
		"log.level":  "log-level",
	}
	clientFlags = map[string]string{
		"coordinator":   "coordinator",
		"data_dir":      "data-dir",
		"log.format":    "log-format",
		"log.level":     "log-level",
		"data.heart":    "heart",
		"data.csv.path": "csv",
	}
)

// Coordinator is a loaded coordinator configuration.
type Coordinator struct {
	File     CoordinatorFile
	Config   coordinator.Config
	Identity *tlsutil.Identity
	// AuditTLS is the coordinator's client configuration for the audit
	// nodes (nil without an audit log).
	AuditTLS *tls.Config
	// StudyRecordFile is the admin-signed study record's path, if set.
	StudyRecordFile string
}

// StudyRecord reads the admin-signed study record (nil if none is
// configured). It is read when the coordinator starts, not when the file
// is loaded, because the admin signs it from this same configuration.
func (c *Coordinator) StudyRecord() ([]byte, error) {
	if c.StudyRecordFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(c.StudyRecordFile)
	if err != nil {
		return nil, fmt.Errorf("%w: audit.study_record: %v", ErrConfig, err)
	}
	return b, nil
}

// LoadCoordinator reads and checks a coordinator configuration. path may be
// empty (flags and environment only). Certificates are loaded here, so an
// unreadable one fails at start.
func LoadCoordinator(path string, flags *pflag.FlagSet) (*Coordinator, error) {
	var f CoordinatorFile
	s, err := load(path, flags, coordinatorFlags, DefaultCoordinatorFile(), &f)
	if err != nil {
		return nil, err
	}
	id, tlsCfg, err := s.identity(f.TLS, tlsutil.RoleCoordinator, "")
	if err != nil {
		return nil, err
	}
	study, err := s.study(f.Study)
	if err != nil {
		return nil, err
	}
	cfg := coordinator.DefaultConfig()
	// Absolute: the coordinator reports paths under it (the final model's,
	// in study status) to people who do not know its working directory.
	if cfg.DataDir = s.path("data_dir", f.DataDir); cfg.DataDir != "" {
		if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
			return nil, s.errorf("data_dir", "%v", err)
		}
	}
	cfg.Study = study
	cfg.TLS = tlsCfg
	if f.Linger < 0 {
		return nil, s.errorf("linger", "%v: want a duration >= 0 (0: exit when the study ends)", f.Linger)
	}
	cfg.Linger = f.Linger
	if err := s.console(f.Console); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, s.where(), err)
	}
	out := &Coordinator{File: f, Config: cfg, Identity: id}
	if len(f.Audit.Nodes) > 0 {
		for _, a := range f.Audit.Nodes {
			if _, _, err := net.SplitHostPort(a); err != nil {
				return nil, s.errorf("audit.nodes", "address %q: %v", a, err)
			}
		}
		pool, err := tlsutil.LoadCAPool(s.path("tls.ca", f.TLS.CA))
		if err != nil {
			return nil, s.errorf("tls.ca", "%v", err)
		}
		out.AuditTLS = tlsutil.ClientConfig(id, pool, "")
		if f.Audit.StudyRecord != "" {
			out.StudyRecordFile = s.path("audit.study_record", f.Audit.StudyRecord)
		}
	} else if f.Audit.StudyRecord != "" {
		return nil, s.errorf("audit.study_record", "set, but audit.nodes is empty")
	}
	return out, nil
}

// LoadStudy reads only the study section of a coordinator configuration:
// what an admin signs (fedledger study sign). It loads and checks the
// study exactly as LoadCoordinator does, but reads no certificate or key,
// so the admin needs the file and not the coordinator's identity.
func LoadStudy(path string) (coordinator.StudyConfig, error) {
	var f CoordinatorFile
	s, err := load(path, nil, nil, DefaultCoordinatorFile(), &f)
	if err != nil {
		return coordinator.StudyConfig{}, err
	}
	study, err := s.study(f.Study)
	if err != nil {
		return coordinator.StudyConfig{}, err
	}
	if err := study.Validate(); err != nil {
		return coordinator.StudyConfig{}, fmt.Errorf("%w: %s: study: %v", ErrConfig, s.where(), err)
	}
	return study, nil
}

// AuditNode is a loaded audit-node configuration.
type AuditNode struct {
	File   AuditNodeFile
	Config cluster.NodeConfig
}

// LoadAuditNode reads and checks an audit node's configuration.
func LoadAuditNode(path string, flags *pflag.FlagSet) (*AuditNode, error) {
	var f AuditNodeFile
	s, err := load(path, flags, auditNodeFlags, DefaultAuditNodeFile(), &f)
	if err != nil {
		return nil, err
	}
	id, _, err := s.identity(f.TLS, tlsutil.RoleAuditNode, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	pool, err := tlsutil.LoadCAPool(s.path("tls.ca", f.TLS.CA))
	if err != nil {
		return nil, s.errorf("tls.ca", "%v", err)
	}
	if f.Bootstrap && f.Join != "" {
		return nil, s.errorf("join", "set either bootstrap (first node of a new cluster) or join, not both")
	}
	cfg := cluster.DefaultNodeConfig()
	cfg.Listen, cfg.Advertise, cfg.DataDir = f.Listen, f.Advertise, s.path("data_dir", f.DataDir)
	cfg.Identity, cfg.Roots, cfg.Bootstrap, cfg.Origin, cfg.Quorum = id, pool, f.Bootstrap, f.Origin, f.Quorum
	if err := s.console(f.Console); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, s.where(), err)
	}
	return &AuditNode{File: f, Config: cfg}, nil
}

func (s *source) study(f StudyFile) (coordinator.StudyConfig, error) {
	spec := model.Spec{Kind: f.Model.Kind, Inputs: f.Model.Inputs, Hidden: f.Model.Hidden}
	if err := spec.Validate(); err != nil {
		return coordinator.StudyConfig{}, s.errorf("study.model", "%v", err)
	}
	tc := model.TrainConfig{
		Optimizer: f.Training.Optimizer, LearningRate: f.Training.LearningRate, BatchSize: f.Training.BatchSize,
		Epochs: f.Training.Epochs, LocalSteps: f.Training.LocalSteps, ProxMu: f.Training.ProxMu, Seed: f.Training.Seed,
	}
	if err := tc.Validate(); err != nil {
		return coordinator.StudyConfig{}, s.errorf("study.training", "%v", err)
	}
	strat, err := strategy(f.Strategy)
	if err != nil {
		return coordinator.StudyConfig{}, s.errorf("study.strategy", "%v", err)
	}
	var seed []byte
	if f.CRSSeed != "" {
		if seed, err = hex.DecodeString(f.CRSSeed); err != nil {
			return coordinator.StudyConfig{}, s.errorf("study.crs_seed", "not hex: %v", err)
		}
	}
	if f.Start != "auto" && f.Start != "manual" {
		return coordinator.StudyConfig{}, s.errorf("study.start", "%q, want auto or manual", f.Start)
	}
	t := f.Threshold
	if t == 0 {
		t = max(2, len(f.Clients)/2+1)
	}
	var dp *coordinator.DPConfig
	if d := f.DP; d != nil {
		dp = &coordinator.DPConfig{Epsilon: d.Epsilon, Delta: d.Delta, NoiseMultiplier: d.NoiseMultiplier, ClipNorm: d.ClipNorm, SampleRate: d.SampleRate}
		switch d.Level {
		case "", "record":
		case "client":
			dp.Level = "client"
		default:
			return coordinator.StudyConfig{}, s.errorf("study.dp.level", "%q, want record or client", d.Level)
		}
		if dp.NoiseMultiplier == 0 {
			if dp.NoiseMultiplier, err = coordinator.CalibrateNoise(*dp, f.Rounds, tc.LocalSteps); err != nil {
				return coordinator.StudyConfig{}, s.errorf("study.dp", "%v", err)
			}
		}
	}
	return coordinator.StudyConfig{
		DP: dp,
		ID: f.ID, Model: spec, Training: tc, Rounds: f.Rounds, MinClients: f.MinClients, Clients: f.Clients,
		RoundDeadline: f.RoundDeadline, StartTimeout: f.StartTimeout, Strategy: strat, Seed: f.Seed,
		Mode: f.Mode, HEPreset: f.HEPreset, Threshold: t, CRSSeed: seed, KeySetupTimeout: f.KeySetupTimeout, Features: f.Features,
		Purpose: f.Purpose, ManualStart: f.Start == "manual", NormBound: f.NormBound, Robust: f.RobustAggregator,
	}, nil
}

// strategy starts from the named strategy's defaults and applies the
// non-zero fields of f.
func strategy(f StrategyFile) (aggregation.Config, error) {
	c, err := aggregation.DefaultConfig(f.Name)
	if err != nil {
		return c, err
	}
	if f.ServerLR != 0 {
		c.ServerLR = f.ServerLR
	}
	if f.Beta1 != 0 {
		c.Beta1 = f.Beta1
	}
	if f.Beta2 != 0 {
		c.Beta2 = f.Beta2
	}
	if f.Tau != 0 {
		c.Tau = f.Tau
	}
	return c, c.Validate()
}

// Client is a loaded client configuration.
type Client struct {
	File     ClientFile
	Config   client.Config
	Identity *tlsutil.Identity
}

// LoadClient reads and checks a hospital client's configuration.
func LoadClient(path string, flags *pflag.FlagSet) (*Client, error) {
	var f ClientFile
	s, err := load(path, flags, clientFlags, DefaultClientFile(), &f)
	if err != nil {
		return nil, err
	}
	id, tlsCfg, err := s.identity(f.TLS, tlsutil.RoleClient, f.Coordinator)
	if err != nil {
		return nil, err
	}
	cfg := client.DefaultConfig()
	cfg.CoordinatorAddr = f.Coordinator
	cfg.TLS = tlsCfg
	cfg.Studies = f.Studies
	cfg.AuditNodes = f.AuditNodes
	cfg.DataDir = s.path("data_dir", f.DataDir)
	cfg.AllowPlaintext, cfg.MinContributors = f.AllowPlaintext, f.MinContributors
	p := f.Policy
	cfg.Policy = client.Policy{Admins: p.Admins, ModelKinds: p.ModelKinds, MaxParameters: p.MaxParameters, AllowedColumns: p.AllowedColumns,
		MinK: p.MinK, MinThreshold: p.MinThreshold, MaxRounds: p.MaxRounds, MaxDPEpsilon: p.MaxDPEpsilon}
	sources := 0
	for _, set := range []bool{f.Data.Heart != "", f.Data.CSV.Path != "", f.Data.FHIR.Manifest != "" || f.Data.FHIR.Mapping != ""} {
		if set {
			sources++
		}
	}
	switch {
	case sources > 1:
		return nil, s.errorf("data", "set one of data.heart, data.csv.path and data.fhir, not several")
	case f.Data.FHIR.Manifest != "" || f.Data.FHIR.Mapping != "":
		if f.Data.FHIR.Manifest == "" {
			return nil, s.errorf("data.fhir.manifest", "the Bulk Data export's manifest is required")
		}
		cfg.Data.FHIR = &client.FHIRData{Manifest: s.path("data.fhir.manifest", f.Data.FHIR.Manifest)}
		if f.Data.FHIR.Mapping != "" {
			cfg.Data.FHIR.Mapping = s.path("data.fhir.mapping", f.Data.FHIR.Mapping)
		}
	case f.Data.Heart != "":
		cfg.Data.Heart = f.Data.Heart
	case f.Data.CSV.Path != "":
		c := f.Data.CSV
		cfg.Data.CSV = &train.CSVConfig{
			Path: s.path("data.csv.path", c.Path), LabelColumn: c.LabelColumn, PositiveLabels: c.PositiveLabels,
			Numeric: c.Numeric, Categorical: c.Categorical, Exclude: c.Exclude, Missing: c.Missing, MissingTokens: c.MissingTokens,
			TestFraction: c.TestFraction, Seed: c.Seed, Standardize: c.Standardize,
		}
	default:
		return nil, s.errorf("data", "no local data: set data.heart (one of %v), data.csv.path or data.fhir.manifest", train.Hospitals)
	}
	if f.Data.Standardization != "" {
		path := s.path("data.standardization", f.Data.Standardization)
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, s.errorf("data.standardization", "%v", err)
		}
		var st train.Standardization
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&st); err != nil {
			return nil, s.errorf("data.standardization", "%s is not a standardisation file: %v", path, err)
		}
		cfg.Data.Standardization = &st
	}
	if p := f.Personal; p.Method != "" {
		tc := model.DefaultTrainConfig()
		tc.Epochs, tc.LocalSteps, tc.Seed = 0, p.Steps, p.Seed
		if p.Steps == 0 {
			tc.LocalSteps = 300
		}
		if p.Optimizer != "" {
			tc.Optimizer = p.Optimizer
		}
		if p.LearningRate != 0 {
			tc.LearningRate = p.LearningRate
		}
		if p.BatchSize != 0 {
			tc.BatchSize = p.BatchSize
		}
		cfg.Personal = &client.PersonalConfig{Method: p.Method, Train: tc, Lambdas: p.Lambdas, ValidationFraction: p.ValidationFraction, SelectBy: p.SelectBy}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, s.where(), err)
	}
	return &Client{File: f, Config: cfg, Identity: id}, nil
}

// identity loads the TLS identity named by f and checks it holds role. The
// coordinator role gets a server configuration; others a client one that
// dials dialAddr.
func (s *source) identity(f TLSFile, role tlsutil.Role, dialAddr string) (*tlsutil.Identity, *tls.Config, error) {
	id, cfg, err := s.loadTLS(f, role == tlsutil.RoleCoordinator, dialAddr)
	if err == nil && id.Role != role {
		err = s.errorf("tls.cert", "certificate %q has role %q, want %q", id.ID, id.Role, role)
	}
	return id, cfg, err
}

// loadTLS loads the identity and CA bundle named by f; every connection is
// mutual TLS, so all three files are required.
func (s *source) loadTLS(f TLSFile, server bool, dialAddr string) (*tlsutil.Identity, *tls.Config, error) {
	for _, kv := range [][2]string{{"tls.cert", f.Cert}, {"tls.key", f.Key}, {"tls.ca", f.CA}} {
		if kv[1] == "" {
			return nil, nil, s.errorf(kv[0], "required: every fedledger link is mutual TLS (use `fedledger demo` for a local trial)")
		}
	}
	id, err := tlsutil.LoadIdentity(s.path("tls.cert", f.Cert), s.path("tls.key", f.Key))
	if err != nil {
		return nil, nil, s.errorf("tls.cert", "%v", err)
	}
	pool, err := tlsutil.LoadCAPool(s.path("tls.ca", f.CA))
	if err != nil {
		return nil, nil, s.errorf("tls.ca", "%v", err)
	}
	if server {
		return id, tlsutil.ServerConfig(id, pool), nil
	}
	name := f.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(dialAddr)
		if err != nil {
			return nil, nil, s.errorf("coordinator", "address %q: %v", dialAddr, err)
		}
		name = host
	}
	return id, tlsutil.ClientConfig(id, pool, name), nil
}
