// Package client is the hospital's participant. It loads the hospital's data
// once, dials the coordinator (outbound only, mutual TLS), and answers the
// coordinator's tasks: fetch the parent model and check its hash, train
// locally with client/train, and submit n·(w_local − w_parent) in chunks;
// evaluate the final model on the local test split.
//
// Only parameters ever leave this package; the records stay in memory here.
// It refuses tasks it cannot honour (wrong model shape for its data, a
// parent model that does not hash to what was announced) and says why.
package client

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand"
	"slices"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/version"
	pb "github.com/fedledger/fedledger/proto"
)

// DataConfig selects the local data: one of the shipped heart-disease
// hospitals, or a CSV export.
type DataConfig struct {
	Heart string
	CSV   *train.CSVConfig
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
	// MaxModelBytes bounds a model the client will download.
	MaxModelBytes int64
	ChunkSize     int
	// DataDir holds this site's key material for secure studies (the
	// secret share, mode 0600) and its decryption guard state.
	DataDir string
	// AllowPlaintext lets this site join plaintext-mode studies, whose
	// updates the coordinator can read. Off by default.
	AllowPlaintext bool
	// MinContributors is this site's own minimum number of contributions
	// in an aggregate it helps decrypt (the study's K applies if higher).
	MinContributors int
	// AuditNodes are the audit log's nodes. When set, the client trains
	// only on a parent model that is the study's latest committed output
	// on the log.
	AuditNodes []string
	// Policy is what this site accepts; a study outside it is refused
	// before any work, with the reason.
	Policy Policy
	// DialOptions are extra gRPC options for the connection to the
	// coordinator (e.g. a proxy dialer or interceptors).
	DialOptions []grpc.DialOption
}

const modeSecure, modePlaintext = "secure", "plaintext"

// DefaultConfig returns defaults for everything but the address, TLS and
// data.
func DefaultConfig() Config {
	return Config{MinBackoff: 200 * time.Millisecond, MaxBackoff: 10 * time.Second, MaxModelBytes: 512 << 20, ChunkSize: chunk.DefaultSize,
		MinContributors: 2}
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.CoordinatorAddr == "" {
		errs = append(errs, errors.New("coordinator address is empty"))
	}
	if c.TLS == nil || len(c.TLS.Certificates) == 0 || c.TLS.RootCAs == nil {
		errs = append(errs, errors.New("client: mutual TLS (certificate and CA bundle) is required"))
	}
	switch {
	case c.Data.Heart != "" && c.Data.CSV != nil:
		errs = append(errs, errors.New("data: set either heart or csv, not both"))
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
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("backoff %v..%v is not a range", c.MinBackoff, c.MaxBackoff))
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
	}
	if c.MaxModelBytes <= 0 || c.ChunkSize < 1024 {
		errs = append(errs, errors.New("model size limit and chunk size must be positive"))
	}
	return errors.Join(errs...)
}

// Client is one hospital's participant.
type Client struct {
	cfg         Config
	log         *slog.Logger
	train, test *train.Dataset
	id          string
	study       *pb.StudySpec
	signer      ed25519.PrivateKey
	setup       *keySetup // secure key setup in progress
	keys        *keys     // secure key material of the current study
	audit       *cluster.Client
	manifest    [32]byte // SHA-256 of the data manifest
	metrics     *metrics
	// own is this site's last secure upload, so re-summing a round does not
	// download the site's own contribution back.
	own struct {
		study   string
		round   uint64
		hash    [32]byte
		payload []byte
	}
}

// New checks the configuration and loads the local data, so that a missing
// file or an unknown column fails at start.
func New(cfg Config, logger *slog.Logger) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, log: logger, signer: cfg.TLS.Certificates[0].PrivateKey.(ed25519.PrivateKey)}
	site := ""
	if leaf := cfg.TLS.Certificates[0].Leaf; leaf != nil {
		site = leaf.Subject.CommonName
	} else if len(cfg.TLS.Certificates[0].Certificate) > 0 {
		if cert, err := x509.ParseCertificate(cfg.TLS.Certificates[0].Certificate[0]); err == nil {
			site = cert.Subject.CommonName
		}
	}
	c.metrics = newMetrics(site)
	var err error
	if cfg.Data.Heart != "" {
		c.train, c.test, err = train.LoadHeart(cfg.Data.Heart, train.HeartSplitSeed)
	} else {
		c.train, c.test, err = train.LoadCSV(*cfg.Data.CSV)
	}
	if err != nil {
		return nil, err
	}
	if len(cfg.AuditNodes) > 0 {
		if c.audit, err = cluster.Dial(cfg.AuditNodes, cfg.TLS); err != nil {
			return nil, err
		}
	}
	var m *manifest
	if c.manifest, m, err = dataManifest(cfg, c.train, c.test); err != nil {
		return nil, err
	}
	logger.Info("local data loaded", slog.Int("train", c.train.Len()), slog.Int("test", c.test.Len()), slog.Int("features", len(c.train.Features)),
		slog.String("source", m.Source), slog.String("file_sha256", m.FileSHA256), slog.String("manifest_sha256", fmt.Sprintf("%x", c.manifest)))
	return c, nil
}

// errFinished ends Run successfully.
var errFinished = errors.New("study finished")

// Run takes part until the coordinator says the study is over (nil), the
// context ends, or the coordinator refuses this client for good.
func (c *Client) Run(ctx context.Context) error {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(c.cfg.TLS)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20), grpc.MaxCallSendMsgSize(8<<20)),
	}, c.cfg.DialOptions...)
	conn, err := grpc.NewClient(c.cfg.CoordinatorAddr, opts...)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer conn.Close()
	api := pb.NewFederationClient(conn)
	backoff := c.cfg.MinBackoff
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	for {
		connected, err := c.session(ctx, api)
		switch {
		case errors.Is(err, errFinished):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case permanent(err):
			return fmt.Errorf("client: coordinator refused us: %w", err)
		}
		if connected {
			backoff = c.cfg.MinBackoff
		}
		wait := backoff/2 + time.Duration(rng.Int63n(int64(backoff)))
		c.log.Warn("connection to coordinator lost; retrying", slog.Any("err", err), slog.Duration("in", wait))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}

// permanent reports errors retrying cannot fix.
func permanent(err error) bool {
	switch status.Code(err) {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return true
	}
	return false
}

// session runs one Participate stream; connected reports whether it got as
// far as the Welcome.
func (c *Client) session(ctx context.Context, api pb.FederationClient) (connected bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.Participate(ctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Hello{Hello: &pb.Hello{
		ClientVersion: version.String(), Studies: c.cfg.Studies, NumTrain: uint64(c.train.Len()), NumTest: uint64(c.test.Len()),
	}}}); err != nil {
		return false, err
	}
	m, err := stream.Recv()
	if err != nil {
		return false, err
	}
	w := m.GetWelcome()
	if w == nil || w.Study == nil {
		return false, status.Error(codes.InvalidArgument, "client: coordinator did not start with Welcome")
	}
	c.id = w.ClientId
	if reason := c.checkStudy(ctx, w.Study); reason != "" {
		c.metrics.refusals.Inc()
		c.log.Error("refusing study", slog.String("study", w.Study.StudyId), slog.String("reason", reason))
		stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Refusal{Refusal: &pb.TaskRefusal{StudyId: w.Study.StudyId, Reason: reason}}})
		stream.CloseSend()
		return true, status.Error(codes.InvalidArgument, "client: "+reason)
	}
	if err := stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Accepted{Accepted: &pb.StudyAccepted{StudyId: w.Study.StudyId}}}); err != nil {
		return true, err
	}
	c.id, c.study = w.ClientId, w.Study
	c.metrics.connected.Set(1)
	defer c.metrics.connected.Set(0)
	c.log.Info("joined study", slog.String("study", w.Study.StudyId), slog.String("as", w.ClientId),
		slog.String("mode", w.Study.Mode), slog.String("strategy", w.Study.Strategy))
	if w.Study.Mode == modePlaintext {
		c.log.Warn("PLAINTEXT MODE: this hospital's updates are readable by the coordinator (allowed by allow_plaintext)")
	}
	send := stream.Send
	refuse := func(study string, round uint64, what string, err error) error {
		c.log.Error(what+" refused", slog.String("study", study), slog.Uint64("round", round), slog.Any("err", err))
		return send(&pb.ClientMessage{Msg: &pb.ClientMessage_Refusal{Refusal: &pb.TaskRefusal{StudyId: study, Round: round, Reason: err.Error()}}})
	}
	for {
		m, err := stream.Recv()
		if err != nil {
			return true, err
		}
		switch msg := m.Msg.(type) {
		case *pb.CoordinatorMessage_Train:
			err := c.trainRound(ctx, api, msg.Train)
			if err == nil {
				c.metrics.rounds.WithLabelValues("submitted").Inc()
			} else {
				c.metrics.rounds.WithLabelValues("failed").Inc()
			}
			if err != nil {
				c.log.Error("round task failed", slog.Uint64("round", msg.Train.Round), slog.Any("err", err))
				stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Refusal{Refusal: &pb.TaskRefusal{
					StudyId: msg.Train.StudyId, Round: msg.Train.Round, Reason: err.Error()}}})
			}
		case *pb.CoordinatorMessage_KeySetup:
			share, err := c.startKeySetup(msg.KeySetup)
			if err != nil {
				err = refuse(msg.KeySetup.StudyId, 0, "key setup", err)
			} else {
				err = send(&pb.ClientMessage{Msg: &pb.ClientMessage_KeyShare{KeyShare: share}})
			}
			if err != nil {
				return true, err
			}
		case *pb.CoordinatorMessage_PeerKey:
			boxes, err := c.onPeerKey(msg.PeerKey)
			if err != nil {
				c.setup = nil
				err = refuse(c.study.StudyId, 0, "key setup", err)
			}
			for _, b := range boxes {
				if err == nil {
					err = send(&pb.ClientMessage{Msg: &pb.ClientMessage_ShareBox{ShareBox: b}})
				}
			}
			if err != nil {
				return true, err
			}
		case *pb.CoordinatorMessage_ShareBox:
			done, err := c.onShareBox(msg.ShareBox)
			if err != nil {
				c.setup = nil
				err = refuse(c.study.StudyId, 0, "key setup", err)
			} else if done != nil {
				err = send(&pb.ClientMessage{Msg: &pb.ClientMessage_KeyDone{KeyDone: done}})
			}
			if err != nil {
				return true, err
			}
		case *pb.CoordinatorMessage_Decrypt:
			t0 := time.Now()
			err := c.decryptRound(ctx, api, msg.Decrypt)
			if err == nil {
				c.metrics.shares.WithLabelValues("given").Inc()
				c.metrics.phase.WithLabelValues("decryption_share").Observe(time.Since(t0).Seconds())
			} else {
				c.metrics.shares.WithLabelValues("refused").Inc()
			}
			if err != nil {
				if err := refuse(msg.Decrypt.StudyId, msg.Decrypt.Round, "decryption share", err); err != nil {
					return true, err
				}
			}
		case *pb.CoordinatorMessage_Evaluate:
			met, err := c.evaluate(ctx, api, msg.Evaluate)
			if err != nil {
				c.log.Error("evaluation failed", slog.Any("err", err))
				continue
			}
			if err := stream.Send(&pb.ClientMessage{Msg: &pb.ClientMessage_Eval{Eval: &pb.EvalReport{
				StudyId: msg.Evaluate.StudyId, Round: msg.Evaluate.Round, ModelSha256: msg.Evaluate.ModelSha256, Test: toPB(met)}}}); err != nil {
				return true, err
			}
		case *pb.CoordinatorMessage_Finished:
			f := msg.Finished
			c.log.Info("study finished", slog.Uint64("rounds", f.RoundsCompleted), slog.String("failure", f.Failure))
			stream.CloseSend()
			return true, errFinished
		}
	}
}

// checkStudy returns why this client cannot take part, or "".
func (c *Client) checkStudy(ctx context.Context, s *pb.StudySpec) string {
	if len(c.cfg.Studies) > 0 && !slices.Contains(c.cfg.Studies, s.StudyId) {
		return fmt.Sprintf("study %q is not in this site's configured studies %v", s.StudyId, c.cfg.Studies)
	}
	spec := specFrom(s.Model)
	if err := spec.Validate(); err != nil {
		return err.Error()
	}
	if spec.Inputs != len(c.train.Features) {
		return fmt.Sprintf("model %s takes %d inputs, local data has %d features", spec, spec.Inputs, len(c.train.Features))
	}
	if err := trainConfigFrom(s.Training).Validate(); err != nil {
		return err.Error()
	}
	switch s.Mode {
	case modeSecure:
		if _, err := secure.LookupPreset(s.HePreset); err != nil {
			return err.Error()
		}
		if s.Threshold < 2 {
			return fmt.Sprintf("decryption threshold t=%d: this site requires t >= 2", s.Threshold)
		}
		if c.cfg.DataDir == "" {
			return "secure study, but this site has no data_dir for its key material"
		}
	case modePlaintext:
		if !c.cfg.AllowPlaintext {
			return "study runs in plaintext mode (the coordinator could read this site's updates) and this site does not set allow_plaintext"
		}
	default:
		return fmt.Sprintf("unknown study mode %q", s.Mode)
	}
	return c.checkPolicy(ctx, s)
}

func (c *Client) trainRound(ctx context.Context, api pb.FederationClient, t *pb.TrainTask) error {
	start := time.Now()
	if err := c.checkParent(ctx, t); err != nil {
		return err
	}
	spec, parent, err := c.fetch(ctx, api, t.StudyId, t.ParentSha256, t.ParentSize)
	if err != nil {
		return err
	}
	want := specFrom(c.study.Model)
	if spec.String() != want.String() {
		return fmt.Errorf("parent model is %s, the study says %s", spec, want)
	}
	parentTest, err := train.Evaluate(spec, parent, c.test)
	if err != nil {
		return err
	}
	cfg := trainConfigFrom(c.study.Training)
	cfg.Seed += int64(t.Round) // a fresh shuffle every round, reproducibly
	t0 := time.Now()
	local, st, err := train.Train(ctx, spec, parent, c.train, cfg)
	if err != nil {
		return err
	}
	c.metrics.phase.WithLabelValues("train").Observe(time.Since(t0).Seconds())
	n := uint64(c.train.Len())
	t0 = time.Now()
	payload, encoding, sig, err := c.encodeUpdate(t, local, parent, n)
	if err != nil {
		return err
	}
	c.metrics.phase.WithLabelValues("encode").Observe(time.Since(t0).Seconds())
	trainMet, _ := train.Evaluate(spec, local, c.train)
	chunks := chunk.Split(t.StudyId, t.Round, payload, c.cfg.ChunkSize)
	chunks[0].Header = &pb.UpdateHeader{
		ParentSha256: t.ParentSha256, NumSamples: n, Encoding: encoding, Signature: sig, DataManifestSha256: c.manifest[:],
		Train: &pb.Metrics{Loss: st.Loss, Accuracy: trainMet.Accuracy, Auc: trainMet.AUC, N: n}, ParentTest: toPB(parentTest),
	}
	t0 = time.Now()
	up, err := api.SubmitUpdate(ctx)
	if err != nil {
		return err
	}
	for _, ch := range chunks {
		if err := up.Send(ch); err != nil {
			break // the server's verdict comes from CloseAndRecv
		}
	}
	rcpt, err := up.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("update for round %d rejected: %w", t.Round, err)
	}
	c.metrics.phase.WithLabelValues("upload").Observe(time.Since(t0).Seconds())
	c.metrics.updateSize.Add(float64(len(payload)))
	c.log.Info("update submitted", slog.Uint64("round", t.Round), slog.Int("steps", st.Steps), slog.Float64("train_loss", st.Loss),
		slog.Float64("parent_test_acc", parentTest.Accuracy), slog.String("sha256", fmt.Sprintf("%x", rcpt.ContentSha256[:8])),
		slog.String("encoding", encoding), slog.Int("bytes", len(payload)), slog.Duration("took", time.Since(start)))
	return nil
}

// checkParent confirms, when the client knows the audit log, that the
// round's parent is the study's latest committed output there: a
// coordinator cannot make hospitals train on a model the log does not
// account for.
func (c *Client) checkParent(ctx context.Context, t *pb.TrainTask) error {
	if c.audit == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, round, err := c.audit.LatestOutput(ctx, t.StudyId)
	if err != nil {
		return fmt.Errorf("cannot confirm the parent model on the audit log: %w", err)
	}
	if !slices.Equal(out[:], t.ParentSha256) {
		return fmt.Errorf("parent model %x is not the study's latest committed output on the audit log (%x, round %d)", t.ParentSha256[:min(8, len(t.ParentSha256))], out[:8], round)
	}
	return nil
}

// encodeUpdate turns the local model into the update payload, n·Δ in
// plaintext or n·Δ and n encrypted under the study's collective key, and
// signs the contribution statement (payload hash, n, data manifest) with
// the site's identity key.
func (c *Client) encodeUpdate(t *pb.TrainTask, local, parent []float64, n uint64) (payload []byte, encoding string, sig []byte, err error) {
	if c.study.Mode != modeSecure {
		if payload, err = aggregation.EncodeWeightedDelta(local, parent, n); err != nil {
			return nil, "", nil, err
		}
		encoding = aggregation.EncodingWeightedDelta
	} else {
		k, err := c.studyKeys()
		if err != nil {
			return nil, "", nil, err
		}
		delta, err := aggregation.WeightedDelta(local, parent, n)
		if err != nil {
			return nil, "", nil, err
		}
		cts, err := secure.Encrypt(k.preset, k.pk, delta, float64(n))
		if err != nil {
			return nil, "", nil, err
		}
		if payload, err = secure.SealPayload(secure.KindContribution, k.preset, t.StudyId, t.Round, cts); err != nil {
			return nil, "", nil, err
		}
		encoding = secure.EncodingContribution
	}
	stmt := audit.Contribution{Site: c.id, UpdateHash: sha256.Sum256(payload), Samples: n, DataManifest: c.manifest}
	if encoding == secure.EncodingContribution {
		c.own.study, c.own.round, c.own.hash, c.own.payload = t.StudyId, t.Round, stmt.UpdateHash, payload
	} else {
		c.own.payload = nil
	}
	return payload, encoding, c.sign(stmt.Message(t.StudyId, t.Round, [32]byte(t.ParentSha256))), nil
}

// decryptRound answers a DecryptTask: fetch the aggregate, let the
// ShareGuard check the manifest and re-sum the listed contributions,
// which it pulls one at a time, and only then compute and submit this
// site's decryption shares.
func (c *Client) decryptRound(ctx context.Context, api pb.FederationClient, t *pb.DecryptTask) error {
	start := time.Now()
	if c.study == nil || c.study.Mode != modeSecure || t.StudyId != c.study.StudyId {
		return fmt.Errorf("decryption task for %q, which is not this client's secure study", t.StudyId)
	}
	k, err := c.studyKeys()
	if err != nil {
		return err
	}
	count, err := secure.CiphertextCount(k.preset, specFrom(c.study.Model).NumParams())
	if err != nil {
		return err
	}
	aggMax, _ := secure.PayloadSize(secure.KindAggregate, k.preset, t.StudyId, count)
	contribMax, _ := secure.PayloadSize(secure.KindContribution, k.preset, t.StudyId, count)
	if len(t.AggregateSha256) != sha256.Size {
		return fmt.Errorf("aggregate hash has %d bytes", len(t.AggregateSha256))
	}
	if len(t.ParentSha256) != sha256.Size {
		return fmt.Errorf("parent hash has %d bytes", len(t.ParentSha256))
	}
	m := secure.Manifest{Study: t.StudyId, Round: t.Round, Parent: audit.Hash(t.ParentSha256), Count: count, AggregateHash: [32]byte(t.AggregateSha256)}
	sizes := map[string]uint64{}
	for _, e := range t.Contributions {
		if len(e.Sha256) != sha256.Size {
			return fmt.Errorf("contribution of %q has a %d-byte hash", e.ClientId, len(e.Sha256))
		}
		if len(e.DataManifestSha256) != sha256.Size {
			return fmt.Errorf("contribution of %q has a %d-byte data manifest hash", e.ClientId, len(e.DataManifestSha256))
		}
		m.Contributions = append(m.Contributions, audit.Contribution{Site: e.ClientId, UpdateHash: [32]byte(e.Sha256), Samples: e.Samples,
			DataManifest: [32]byte(e.DataManifestSha256), Signature: e.Signature})
		sizes[e.ClientId] = e.Size
	}
	aggregate, err := c.fetchBlob(ctx, api, t.StudyId, t.AggregateSha256, t.AggregateSize, aggMax)
	if err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	// The guard pulls the contributions one at a time; this site's own
	// comes from memory when it is the one it uploaded.
	fetched := 0
	fetch := func(client string, hash [32]byte) ([]byte, error) {
		if c.own.payload != nil && c.own.study == t.StudyId && c.own.round == t.Round && c.own.hash == hash {
			return c.own.payload, nil
		}
		fetched++
		c.metrics.resum.Inc()
		return c.fetchBlob(ctx, api, t.StudyId, hash[:], sizes[client], contribMax)
	}
	cts, err := k.guard.Authorize(t.StudyId, t.Round, m, k.preset, fetch, aggregate)
	c.own.payload = nil // the guard answers a round once: it is not needed again
	if err != nil {
		return err
	}
	shares, err := k.party.DecryptionShares(t.ActivePoints, cts)
	if err != nil {
		return err
	}
	payload, err := secure.SealSharePayload(k.preset, t.StudyId, t.Round, shares)
	if err != nil {
		return err
	}
	chunks := chunk.Split(t.StudyId, t.Round, payload, c.cfg.ChunkSize)
	ds := audit.DecryptionShare{Site: c.id, ShareHash: sha256.Sum256(payload)}
	chunks[0].Share = &pb.ShareHeader{AggregateSha256: t.AggregateSha256,
		Signature: c.sign(ds.Message(t.StudyId, t.Round, m.AggregateHash, m.Digest()))}
	up, err := api.SubmitShare(ctx)
	if err != nil {
		return err
	}
	for _, ch := range chunks {
		if err := up.Send(ch); err != nil {
			break // the server's verdict comes from CloseAndRecv
		}
	}
	if _, err := up.CloseAndRecv(); err != nil {
		return fmt.Errorf("decryption share for round %d rejected: %w", t.Round, err)
	}
	c.log.Info("decryption share given", slog.Uint64("round", t.Round), slog.Int("contributions", len(m.Contributions)),
		slog.Int("contributions_downloaded", fetched), slog.Duration("took", time.Since(start)))
	return nil
}

func (c *Client) evaluate(ctx context.Context, api pb.FederationClient, t *pb.EvaluateTask) (model.Metrics, error) {
	spec, params, err := c.fetch(ctx, api, t.StudyId, t.ModelSha256, t.ModelSize)
	if err != nil {
		return model.Metrics{}, err
	}
	m, err := train.Evaluate(spec, params, c.test)
	if err == nil {
		c.log.Info("final model evaluated", slog.Float64("test_acc", m.Accuracy), slog.Float64("test_auc", m.AUC), slog.Int("n", m.N))
	}
	return m, err
}

// fetch downloads a model and checks it hashes to what was announced.
func (c *Client) fetch(ctx context.Context, api pb.FederationClient, study string, sum []byte, size uint64) (model.Spec, []float64, error) {
	b, err := c.fetchBlob(ctx, api, study, sum, size, c.cfg.MaxModelBytes)
	if err != nil {
		return model.Spec{}, nil, err
	}
	return model.Decode(b)
}

// fetchBlob downloads a stored object (a model, a contribution, an
// aggregate) of at most limit bytes and checks it hashes to sum.
func (c *Client) fetchBlob(ctx context.Context, api pb.FederationClient, study string, sum []byte, size uint64, limit int64) ([]byte, error) {
	if len(sum) != sha256.Size {
		return nil, fmt.Errorf("announced hash has %d bytes", len(sum))
	}
	if size > uint64(limit) {
		return nil, fmt.Errorf("announced object of %d bytes exceeds the limit of %d", size, limit)
	}
	stream, err := api.FetchModel(ctx, &pb.FetchModelRequest{StudyId: study, Sha256: sum})
	if err != nil {
		return nil, err
	}
	var a *chunk.Assembler
	for {
		ch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if a == nil {
			a, err = chunk.NewAssembler(ch, limit, study, sum)
		} else {
			err = a.Add(ch)
		}
		if err != nil {
			return nil, fmt.Errorf("object %x: %w", sum[:8], err)
		}
	}
	if a == nil {
		return nil, fmt.Errorf("object %x: empty stream", sum[:8])
	}
	b, _, err := a.Bytes()
	if err != nil {
		return nil, fmt.Errorf("object %x: %w", sum[:8], err)
	}
	return b, nil
}

func specFrom(m *pb.ModelSpec) model.Spec {
	if m == nil {
		return model.Spec{}
	}
	s := model.Spec{Kind: m.Kind, Inputs: int(m.Inputs)}
	for _, h := range m.Hidden {
		s.Hidden = append(s.Hidden, int(h))
	}
	return s
}

func trainConfigFrom(p *pb.TrainingParams) model.TrainConfig {
	if p == nil {
		return model.TrainConfig{}
	}
	return model.TrainConfig{Optimizer: p.Optimizer, LearningRate: p.LearningRate, BatchSize: int(p.BatchSize), Epochs: int(p.Epochs),
		LocalSteps: int(p.LocalSteps), ProxMu: p.ProxMu, Seed: p.Seed}
}

func toPB(m model.Metrics) *pb.Metrics {
	return &pb.Metrics{Loss: m.Loss, Accuracy: m.Accuracy, Auc: m.AUC, N: uint64(m.N)}
}
