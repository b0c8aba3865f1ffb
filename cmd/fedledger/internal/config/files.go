package config

import (
	"time"

	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/coordinator"
)

// TLSFile locates an identity and the consortium CA bundle.
type TLSFile struct {
	Cert       string `mapstructure:"cert"`
	Key        string `mapstructure:"key"`
	CA         string `mapstructure:"ca"`
	ServerName string `mapstructure:"server_name"`
}

// LogFile configures log/slog output.
type LogFile struct {
	Format string `mapstructure:"format"` // text | json
	Level  string `mapstructure:"level"`  // debug | info | warn | error
}

// ModelFile is a model specification.
type ModelFile struct {
	Kind   string `mapstructure:"kind"`
	Inputs int    `mapstructure:"inputs"`
	Hidden []int  `mapstructure:"hidden"`
}

// TrainingFile holds the hyperparameters of local training.
type TrainingFile struct {
	Optimizer    string  `mapstructure:"optimizer"`
	LearningRate float64 `mapstructure:"learning_rate"`
	BatchSize    int     `mapstructure:"batch_size"`
	Epochs       int     `mapstructure:"epochs"`
	LocalSteps   int     `mapstructure:"local_steps"`
	ProxMu       float64 `mapstructure:"prox_mu"`
	Seed         int64   `mapstructure:"seed"`
}

// StrategyFile selects the server strategy. Zero values take the strategy's
// published defaults.
type StrategyFile struct {
	Name     string  `mapstructure:"name"`
	ServerLR float64 `mapstructure:"server_lr"`
	Beta1    float64 `mapstructure:"beta1"`
	Beta2    float64 `mapstructure:"beta2"`
	Tau      float64 `mapstructure:"tau"`
}

// StudyFile describes one study.
type StudyFile struct {
	ID            string        `mapstructure:"id"`
	Model         ModelFile     `mapstructure:"model"`
	Training      TrainingFile  `mapstructure:"training"`
	Strategy      StrategyFile  `mapstructure:"strategy"`
	Rounds        int           `mapstructure:"rounds"`
	MinClients    int           `mapstructure:"min_clients"`
	Clients       []string      `mapstructure:"clients"`
	RoundDeadline time.Duration `mapstructure:"round_deadline"`
	StartTimeout  time.Duration `mapstructure:"start_timeout"`
	Seed          int64         `mapstructure:"seed"`
	// Mode is "secure" (default) or "plaintext".
	Mode string `mapstructure:"mode"`
	// HEPreset names the homomorphic-encryption parameter set.
	HEPreset string `mapstructure:"he_preset"`
	// Threshold is t, the key holders needed to decrypt an aggregate; 0
	// means a majority of the clients (N/2 + 1).
	Threshold int `mapstructure:"threshold"`
	// CRSSeed is the hex seed of the common reference string; empty means
	// derived from the study id.
	CRSSeed         string        `mapstructure:"crs_seed"`
	KeySetupTimeout time.Duration `mapstructure:"key_setup_timeout"`
	// Features names the model's input columns, in order (optional).
	Features []string `mapstructure:"features"`
	// Purpose says what the study is for; it goes on the study record.
	Purpose string `mapstructure:"purpose"`
	// Start is "auto" (default: start as soon as the coordinator runs) or
	// "manual" (wait for an admin: fedledger study start).
	Start string `mapstructure:"start"`
	// DP makes the study record-level differentially private.
	DP *DPFile `mapstructure:"dp"`
	// NormBound bounds every hospital's update norm (secure studies: each
	// hospital clips to it, and t key holders check it under encryption).
	NormBound float64 `mapstructure:"norm_bound"`
	// RobustAggregator replaces the weighted average of a plaintext study:
	// median, trimmed-mean:T or multi-krum:F.
	RobustAggregator string `mapstructure:"robust_aggregator"`
}

// DPFile is a DP study's budget and DP-SGD mechanism. Without a
// noise_multiplier the smallest one whose ε over the study's rounds stays
// within epsilon is used.
type DPFile struct {
	Epsilon         float64 `mapstructure:"epsilon"`
	Delta           float64 `mapstructure:"delta"`
	NoiseMultiplier float64 `mapstructure:"noise_multiplier"`
	ClipNorm        float64 `mapstructure:"clip_norm"`
	SampleRate      float64 `mapstructure:"sample_rate"`
	// Level is "record" (default: DP-SGD at each hospital) or "client"
	// (DP-FedAvg over the hospitals' clipped updates).
	Level string `mapstructure:"level"`
}

// AuditClientFile points a coordinator at the audit log.
type AuditClientFile struct {
	// Nodes are the audit nodes' addresses; empty means no audit log.
	Nodes []string `mapstructure:"nodes"`
	// StudyRecord is the admin-signed study record (fedledger study sign)
	// to append if the log does not have the study yet.
	StudyRecord string `mapstructure:"study_record"`
}

// CoordinatorFile is the coordinator's configuration file.
type CoordinatorFile struct {
	Listen string `mapstructure:"listen"`
	// MetricsListen serves Prometheus /metrics over HTTP; empty disables.
	MetricsListen string          `mapstructure:"metrics_listen"`
	DataDir       string          `mapstructure:"data_dir"`
	TLS           TLSFile         `mapstructure:"tls"`
	Study         StudyFile       `mapstructure:"study"`
	Audit         AuditClientFile `mapstructure:"audit"`
	Log           LogFile         `mapstructure:"log"`
	// Linger keeps answering `study status` and serving the final model
	// this long after the study ends (0: exit at once).
	Linger time.Duration `mapstructure:"linger"`
	// Console serves the read-only web console (internal/console).
	Console ConsoleFile `mapstructure:"console"`
}

// ConsoleFile configures a server's read-only web console: served over
// mutual TLS with the server's own certificate, to observers and admins
// of the consortium. An empty addr (the default) serves none.
type ConsoleFile struct {
	Addr string `mapstructure:"addr"`
}

// AuditNodeFile is an audit node's configuration file.
type AuditNodeFile struct {
	Listen        string  `mapstructure:"listen"`
	Advertise     string  `mapstructure:"advertise"`
	MetricsListen string  `mapstructure:"metrics_listen"`
	DataDir       string  `mapstructure:"data_dir"`
	TLS           TLSFile `mapstructure:"tls"`
	// Bootstrap starts a new cluster with this node as its first voter.
	Bootstrap bool `mapstructure:"bootstrap"`
	// Join is an existing member's address to join through (first start
	// only).
	Join   string  `mapstructure:"join"`
	Origin string  `mapstructure:"origin"`
	Quorum int     `mapstructure:"quorum"`
	Log    LogFile `mapstructure:"log"`
	// Console serves the read-only log explorer (internal/console).
	Console ConsoleFile `mapstructure:"console"`
}

// CSVFile points a client at a hospital's own CSV export (see
// train.CSVConfig for the meaning of each key; `fedledger client --help`
// and docs/DEPLOYMENT.md describe them for operators).
type CSVFile struct {
	Path           string   `mapstructure:"path"`
	LabelColumn    string   `mapstructure:"label_column"`
	PositiveLabels []string `mapstructure:"positive_labels"`
	// Numeric lists numeric columns, or is "all": every column that is not
	// the label, categorical or in Exclude.
	Numeric       []string `mapstructure:"numeric"`
	Categorical   []string `mapstructure:"categorical"`
	Exclude       []string `mapstructure:"exclude"`
	Missing       string   `mapstructure:"missing"`
	MissingTokens []string `mapstructure:"missing_tokens"`
	TestFraction  float64  `mapstructure:"test_fraction"`
	Seed          int64    `mapstructure:"seed"`
	Standardize   bool     `mapstructure:"standardize"`
}

// DataFile selects the client's local data: one of the shipped heart-disease
// hospitals, or a CSV file.
type DataFile struct {
	Heart string  `mapstructure:"heart"`
	CSV   CSVFile `mapstructure:"csv"`
	// FHIR is a FHIR R4 Bulk Data export: its manifest and, optionally,
	// the mapping of codes to columns (default: the heart-disease one).
	FHIR FHIRFile `mapstructure:"fhir"`
	// Standardization is a JSON file of the consortium's statistics
	// (train.Standardization: features, mean, std) to scale the inputs
	// with instead of this site's own.
	Standardization string `mapstructure:"standardization"`
}

// FHIRFile locates a FHIR R4 Bulk Data export (client/fhir).
type FHIRFile struct {
	Manifest string `mapstructure:"manifest"`
	Mapping  string `mapstructure:"mapping"`
}

// PersonalFile is how a hospital personalises (client.PersonalConfig).
type PersonalFile struct {
	Method             string    `mapstructure:"method"`
	Optimizer          string    `mapstructure:"optimizer"`
	LearningRate       float64   `mapstructure:"learning_rate"`
	BatchSize          int       `mapstructure:"batch_size"`
	Steps              int       `mapstructure:"steps"`
	Lambdas            []float64 `mapstructure:"lambdas"`
	ValidationFraction float64   `mapstructure:"validation_fraction"`
	SelectBy           string    `mapstructure:"select_by"`
	Seed               int64     `mapstructure:"seed"`
}

// PolicyFile is what a hospital accepts (see client.Policy).
type PolicyFile struct {
	Admins         []string `mapstructure:"admins"`
	ModelKinds     []string `mapstructure:"model_kinds"`
	MaxParameters  int      `mapstructure:"max_parameters"`
	AllowedColumns []string `mapstructure:"allowed_columns"`
	MinK           int      `mapstructure:"min_k"`
	MinThreshold   int      `mapstructure:"min_threshold"`
	MaxRounds      int      `mapstructure:"max_rounds"`
	// MaxDPEpsilon caps the privacy budget of the studies this site joins
	// (0: none; set, it joins only differentially private studies).
	MaxDPEpsilon float64 `mapstructure:"max_dp_epsilon"`
}

// ClientFile is a hospital client's configuration file.
type ClientFile struct {
	Coordinator string `mapstructure:"coordinator"`
	// MetricsListen serves Prometheus /metrics over HTTP; empty (the
	// default) disables.
	MetricsListen string   `mapstructure:"metrics_listen"`
	DataDir       string   `mapstructure:"data_dir"`
	TLS           TLSFile  `mapstructure:"tls"`
	Data          DataFile `mapstructure:"data"`
	Studies       []string `mapstructure:"studies"`
	Log           LogFile  `mapstructure:"log"`
	// AuditNodes are the audit log's addresses; when set, the client
	// trains only on parents committed there.
	AuditNodes []string `mapstructure:"audit_nodes"`
	// AllowPlaintext lets the site join plaintext-mode studies.
	AllowPlaintext bool `mapstructure:"allow_plaintext"`
	// MinContributors is the site's own floor on the contributions in an
	// aggregate it helps decrypt.
	MinContributors int        `mapstructure:"min_contributors"`
	Policy          PolicyFile `mapstructure:"policy"`
	// Personal, when its method is set, makes the site keep a personal
	// model beside the study's global one.
	Personal PersonalFile `mapstructure:"personal"`
}

func defaultLog() LogFile { return LogFile{Format: "text", Level: "info"} }

// DefaultCoordinatorFile is what an empty coordinator file means.
func DefaultCoordinatorFile() CoordinatorFile {
	return CoordinatorFile{
		Listen:        "127.0.0.1:7443",
		MetricsListen: "127.0.0.1:9464",
		DataDir:       "fedledger-coordinator",
		Log:           defaultLog(),
		Linger:        24 * time.Hour,
		Study: StudyFile{
			Model:           ModelFile{Kind: "logreg", Inputs: 13},
			Training:        TrainingFile{Optimizer: "adam", LearningRate: 1e-3, BatchSize: 4, LocalSteps: 50, Seed: 1},
			Strategy:        StrategyFile{Name: "fedavg"},
			Rounds:          20,
			RoundDeadline:   2 * time.Minute,
			StartTimeout:    10 * time.Minute,
			Seed:            1,
			Mode:            coordinator.ModeSecure,
			HEPreset:        secure.Default.ID,
			KeySetupTimeout: 5 * time.Minute,
			Start:           "auto",
		},
	}
}

// DefaultClientFile is what an empty client file means.
func DefaultClientFile() ClientFile {
	return ClientFile{
		Coordinator:     "127.0.0.1:7443",
		DataDir:         "fedledger-client",
		Log:             defaultLog(),
		MinContributors: 2,
		Data:            DataFile{CSV: CSVFile{Missing: "drop", TestFraction: 0.34, Seed: 1, Standardize: true}},
	}
}

// DefaultAuditNodeFile is what an empty audit-node file means.
func DefaultAuditNodeFile() AuditNodeFile {
	return AuditNodeFile{Listen: "127.0.0.1:7600", MetricsListen: "127.0.0.1:9465", DataDir: "fedledger-audit",
		Origin: "fedledger/audit-log", Log: defaultLog()}
}
