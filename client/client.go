// Package client is the hospital's participant. It loads the hospital's data
// once, dials the coordinator (outbound only, mutual TLS), and answers the
// coordinator's tasks: take part in key setup, fetch the parent model and
// check it against the audit log, train locally with client/train and
// submit its (encrypted) update; give a decryption share of an aggregate
// its guard accepts; recompute a round's new model and countersign it;
// evaluate the final model on the local test split.
//
// # Shape
//
// The decisions live in methods that talk to the coordinator and the audit
// log only through two small interfaces ([Coordinator], [AuditLog]), so
// every one of them (accept or refuse a study, train, answer or refuse a
// decryption task, countersign or refuse a round, resume from stored key
// material) is tested without a network. The gRPC session loop (session.go)
// only moves messages between the stream and those methods.
//
// Only parameters ever leave this package; the records stay in memory here.
// It refuses tasks it cannot honour and says why.
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/grpc"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client/fhir"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/chunk"
	pb "github.com/fedledger/fedledger/proto"
)

// DataConfig selects the local data: one of the shipped heart-disease
// hospitals, or a CSV export.
type DataConfig struct {
	Heart string
	CSV   *train.CSVConfig
	// FHIR is a FHIR R4 Bulk Data export (client/fhir): its manifest, and
	// the mapping of codes to columns (empty: the heart-disease mapping).
	FHIR *FHIRData
	// Standardization, when set, replaces this site's own standardisation
	// with the consortium's (train.Restandardize); the data manifest
	// records which was used.
	Standardization *train.Standardization
}

// Config configures a Client.
type Config struct {
	CoordinatorAddr string
	// TLS is the client's mutual-TLS configuration; there is no other mode.
	TLS  *tls.Config
	Data DataConfig
	// Studies this client takes part in; empty means any.
	Studies []string
	// Reconnect backoff: starts at MinBackoff, doubles to MaxBackoff, with
	// jitter.
	MinBackoff, MaxBackoff time.Duration
	// CertFailures is how many connection attempts may fail on
	// certificates (the coordinator refuses this site's, or this site
	// cannot verify the coordinator's) with no session in between before
	// the client gives up and says so: retrying cannot fix a certificate.
	CertFailures int
	// MaxModelBytes bounds a model the client will download.
	MaxModelBytes int64
	ChunkSize     int
	// DataDir holds this site's key material for secure studies (the
	// secret share, mode 0600) and its decryption and countersigning
	// state.
	DataDir string
	// AllowPlaintext lets this site join plaintext-mode studies, whose
	// updates the coordinator can read. Off by default.
	AllowPlaintext bool
	// MinContributors is this site's own minimum number of contributions
	// in an aggregate it helps decrypt (the study's K applies if higher).
	MinContributors int
	// AuditNodes are the audit log's nodes. The client trains only on a
	// parent model that is the study's latest committed output there, and
	// gives a decryption share or a countersignature only for the round
	// after the log's last one. Secure studies need them.
	AuditNodes []string
	// Policy is what this site accepts; a study outside it is refused
	// before any work, with the reason.
	Policy Policy
	// Personal, when set, makes this site keep a personal model beside the
	// global one (PersonalConfig).
	Personal *PersonalConfig
	// DialOptions are extra gRPC options for the connection to the
	// coordinator (e.g. a proxy dialer or interceptors).
	DialOptions []grpc.DialOption
	// Tamper, when set, rewrites this site's model update Δ (the local
	// model minus the parent) after clipping and before encryption: a
	// compromised hospital, for attack experiments and tests. No
	// configuration file sets it.
	Tamper func(round uint64, delta []float64)
	// PoisonData, when set, rewrites this site's training split once it is
	// loaded (e.g. flips its labels): a compromised hospital, for attack
	// experiments. No configuration file sets it.
	PoisonData func(train *train.Dataset)
}

const modeSecure, modePlaintext = "secure", "plaintext"

// sources counts the data sources set.
func (d DataConfig) sources() int {
	n := 0
	for _, set := range []bool{d.Heart != "", d.CSV != nil, d.FHIR != nil} {
		if set {
			n++
		}
	}
	return n
}

// DefaultConfig returns defaults for everything but the address, TLS and
// data.
func DefaultConfig() Config {
	return Config{MinBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second, CertFailures: 5, MaxModelBytes: 512 << 20,
		ChunkSize: chunk.DefaultSize, MinContributors: 2}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.CoordinatorAddr == "" {
		errs = append(errs, errors.New("coordinator address is empty"))
	}
	if c.Personal != nil {
		if err := c.Personal.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("personal: %w", err))
		}
	}
	if c.TLS == nil || len(c.TLS.Certificates) == 0 || c.TLS.RootCAs == nil {
		errs = append(errs, errors.New("client: mutual TLS (certificate and CA bundle) is required"))
	}
	switch {
	case c.Data.sources() > 1:
		errs = append(errs, errors.New("data: set one of heart, csv and fhir, not several"))
	case c.Data.FHIR != nil:
		if c.Data.FHIR.Manifest == "" {
			errs = append(errs, errors.New("data.fhir.manifest: the Bulk Data export's manifest is required"))
		}
	case c.Data.Heart != "":
		if !slices.Contains(train.Hospitals, c.Data.Heart) {
			errs = append(errs, fmt.Errorf("data.heart: unknown hospital %q (want one of %v)", c.Data.Heart, train.Hospitals))
		}
	case c.Data.CSV != nil:
		if err := c.Data.CSV.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("data.csv: %w", err))
		}
	default:
		errs = append(errs, errors.New("data: no local data configured"))
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff || c.CertFailures < 1 {
		errs = append(errs, fmt.Errorf("backoff %v..%v is not a range, or cert_failures %d < 1", c.MinBackoff, c.MaxBackoff, c.CertFailures))
	}
	if err := c.Policy.Validate(c); err != nil {
		errs = append(errs, err)
	}
	if c.MinContributors < 1 {
		errs = append(errs, fmt.Errorf("min_contributors = %d, want >= 1", c.MinContributors))
	}
	if c.TLS != nil && len(c.TLS.Certificates) > 0 {
		if _, ok := c.TLS.Certificates[0].PrivateKey.(ed25519.PrivateKey); !ok {
			errs = append(errs, fmt.Errorf("client: identity key is %T, want Ed25519 (it signs contributions)", c.TLS.Certificates[0].PrivateKey))
		}
		if leaf := leafOf(c.TLS); leaf != nil && time.Now().After(leaf.NotAfter) {
			errs = append(errs, fmt.Errorf("client: this site's certificate %q expired on %s: the coordinator will refuse it; renew it (fedledger provision --rotate)",
				leaf.Subject.CommonName, leaf.NotAfter.Format(time.DateOnly)))
		}
	}
	if c.MaxModelBytes <= 0 || c.ChunkSize < 1024 {
		errs = append(errs, errors.New("model size limit and chunk size must be positive"))
	}
	return errors.Join(errs...)
}

func leafOf(cfg *tls.Config) *x509.Certificate {
	if len(cfg.Certificates) == 0 {
		return nil
	}
	if leaf := cfg.Certificates[0].Leaf; leaf != nil {
		return leaf
	}
	if len(cfg.Certificates[0].Certificate) > 0 {
		if cert, err := x509.ParseCertificate(cfg.Certificates[0].Certificate[0]); err == nil {
			return cert
		}
	}
	return nil
}

// Coordinator is what the client needs of the coordinator besides the
// control stream: objects fetched by hash (checked against it, at most
// limit bytes), and the two uploads, each returning the coordinator's
// verdict.
type Coordinator interface {
	Fetch(ctx context.Context, study string, sum []byte, size uint64, limit int64) ([]byte, error)
	SubmitUpdate(ctx context.Context, chunks []*pb.Chunk) error
	SubmitShare(ctx context.Context, chunks []*pb.Chunk) error
}

// AuditLog is what the client needs of the audit log (*cluster.Client is
// one, through logClient): the study's latest committed output and round,
// its study record, and the collective key of its committed key setup
// (done false while there is none).
type AuditLog interface {
	LatestOutput(ctx context.Context, study string) ([32]byte, uint64, error)
	StudyRecord(ctx context.Context, study string) ([]byte, error)
	KeySetup(ctx context.Context, study string) (key [32]byte, done bool, err error)
}

// Client is one hospital's participant.
type Client struct {
	cfg         Config
	log         *slog.Logger
	train, test *train.Dataset
	// fhirReport: what the FHIR loader read and left out (data.fhir).
	fhirReport *fhir.Report
	id         string // this site, from its certificate
	signer     ed25519.PrivateKey
	manifest   [32]byte // SHA-256 of the data manifest
	audit      AuditLog
	metrics    *metrics

	study *pb.StudySpec // the study joined
	// fit and eval are what this site trains and evaluates on in the
	// study: its training and test splits, or, in a tuning trial, the
	// training split less a validation part and that part (evalSplit
	// names which).
	fit, eval *train.Dataset
	evalSplit string
	setup     *keySetup  // a key setup in progress
	keys      *studyKeys // the finished key material of the study
	rounds    roundCache // what this site has of the current round
	// personal is this site's personal model in the study (nil: none yet).
	personal []float64
	// initial is the study's initial model, once checked against the
	// study record (for the norm check's direction).
	initial []float64
	// csMemory is the countersigning record of a site without a data_dir.
	csMemory *countersignedFile
}

// New checks the configuration and loads the local data, so that a missing
// file or an unknown column fails at start.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: logger, signer: cfg.TLS.Certificates[0].PrivateKey.(ed25519.PrivateKey)}
	if leaf := leafOf(cfg.TLS); leaf != nil {
		c.id = leaf.Subject.CommonName
	}
	c.metrics = newMetrics(c.id)
	var err error
	if cfg.Data.Heart != "" {
		c.train, c.test, err = train.LoadHeart(cfg.Data.Heart, train.HeartSplitSeed)
	} else if f := cfg.Data.FHIR; f != nil {
		var m *fhir.Mapping
		if m, err = fhir.LoadMappingOrHeart(f.Mapping); err == nil {
			c.train, c.test, c.fhirReport, err = fhir.LoadDatasets(f.Manifest, m)
		}
		if err == nil {
			c.log.Info("FHIR export loaded", slog.String("manifest", f.Manifest), slog.Int("patients", c.fhirReport.Patients),
				slog.Int("excluded_by_consent", c.fhirReport.ExcludedByConsent), slog.Int("dropped_missing", c.fhirReport.DroppedMissing))
		}
	} else {
		c.train, c.test, err = train.LoadCSV(*cfg.Data.CSV)
	}
	if err != nil {
		return nil, err
	}
	if cfg.PoisonData != nil {
		cfg.PoisonData(c.train)
	}
	if s := cfg.Data.Standardization; s != nil {
		if err := train.Restandardize(c.train, c.test, *s); err != nil {
			return nil, err
		}
	}
	if len(cfg.AuditNodes) > 0 {
		cli, err := cluster.Dial(cfg.AuditNodes, cfg.TLS)
		if err != nil {
			return nil, err
		}
		c.audit = logClient{cli}
	}
	var m *manifest
	if c.manifest, m, err = dataManifest(cfg, c.train, c.test, c.fhirReport); err != nil {
		return nil, err
	}
	logger.Info("local data loaded", slog.Int("train", c.train.Len()), slog.Int("test", c.test.Len()), slog.Int("features", len(c.train.Features)),
		slog.String("source", m.Source), slog.String("file_sha256", m.FileSHA256), slog.String("manifest_sha256", fmt.Sprintf("%x", c.manifest)))
	return c, nil
}

// logClient adapts *cluster.Client to AuditLog.
type logClient struct{ *cluster.Client }

func (l logClient) LatestOutput(ctx context.Context, study string) ([32]byte, uint64, error) {
	h, r, err := l.Client.LatestOutput(ctx, study)
	return [32]byte(h), r, err
}

func (l logClient) KeySetup(ctx context.Context, study string) ([32]byte, bool, error) {
	studies, err := l.Client.ListStudies(ctx)
	if err != nil {
		return [32]byte{}, false, err
	}
	for _, s := range studies {
		if s.StudyId == study {
			if !s.KeySetupDone || len(s.CollectiveKeySha256) != 32 {
				return [32]byte{}, false, nil
			}
			return [32]byte(s.CollectiveKeySha256), true, nil
		}
	}
	return [32]byte{}, false, fmt.Errorf("%w: %q", audit.ErrUnknownStudy, study)
}

// sign signs msg with the hospital's identity (certificate) key.
func (c *Client) sign(msg []byte) []byte { return ed25519.Sign(c.signer, msg) }
