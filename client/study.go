package client

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
	pb "github.com/fedledger/fedledger/proto"
)

// checkStudy returns why this site cannot take part in the study the
// coordinator announced, or "": capability (model, data, mode), then this
// site's policy, then (with policy admins) the admin-signed study record.
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
	if _, err := strategyFrom(s); err != nil {
		return err.Error()
	}
	if s.GetDp() != nil {
		if _, err := dpBudget(s); err != nil {
			return fmt.Sprintf("differential privacy: %v", err)
		}
		if c.cfg.DataDir == "" {
			return "differentially private study, but this site has no data_dir to keep its privacy account"
		}
		if s.Training.GetProxMu() > 0 && s.GetDp().GetLevel() != audit.DPClient {
			return "record-level differentially private study with FedProx (prox_mu > 0): DP-SGD here does not support it"
		}
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
		if c.audit == nil {
			return "secure study, but this site has no audit_nodes: it checks every decryption task and countersignature against the audit log"
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

// checkStudyRecord reads the study's record from the audit log and checks
// it was signed by an admin this site trusts and says what the coordinator
// announced.
func (c *Client) checkStudyRecord(ctx context.Context, s *pb.StudySpec) string {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	env, err := c.audit.StudyRecord(ctx, s.StudyId)
	if err != nil {
		return refusal("cannot read study %q from the audit log: %v", s.StudyId, err)
	}
	e, err := audit.UnmarshalEnvelope(env)
	if err != nil {
		return refusal("study record: %v", err)
	}
	rec, signer, err := e.Verify(c.cfg.TLS.RootCAs)
	if err != nil {
		return refusal("study record: %v", err)
	}
	if !slices.Contains(c.cfg.Policy.Admins, signer.ID) {
		return refusal("study %q was created by %q, not one of this site's accepted admins %v", s.StudyId, signer.ID, c.cfg.Policy.Admins)
	}
	if err := studyTerms(s, c.id).Check(rec); err != nil {
		return refusal("%v", err)
	}
	return ""
}

// studyTerms are the study's rules as the coordinator announced them, for
// the one check against the signed study record.
func studyTerms(s *pb.StudySpec, site string) audit.Terms {
	t := audit.Terms{Study: s.StudyId, Site: site, K: int(s.MinClients), Rounds: int(s.Rounds), Strategy: s.Strategy}
	if s.Mode == modeSecure {
		t.HEParams, t.Threshold = s.HePreset, int(s.Threshold)
	}
	t.Params = announcedParams(s)
	return t
}

// announcedParams are the model, training, server-optimiser and
// validation parameters the coordinator announced, formatted as the study
// record carries them: a coordinator that trains the hospitals otherwise
// than the admin signed is refused.
func announcedParams(s *pb.StudySpec) []audit.Param {
	p := audit.StudyParam
	tr, so := s.GetTraining(), s.GetServerOptimizer()
	ps := []audit.Param{
		p("mode", s.Mode), p("model", specFrom(s.Model).String()),
		p("server_lr", so.GetServerLr()), p("beta1", so.GetBeta1()), p("beta2", so.GetBeta2()), p("tau", so.GetTau()),
		p("optimizer", tr.GetOptimizer()), p("learning_rate", tr.GetLearningRate()), p("batch_size", tr.GetBatchSize()),
		p("local_steps", tr.GetLocalSteps()), p("epochs", tr.GetEpochs()), p("prox_mu", tr.GetProxMu()),
	}
	if s.ValidationFraction != 0 {
		ps = append(ps, p("validation_fraction", s.ValidationFraction))
	} else {
		ps = append(ps, audit.Param{Name: "validation_fraction"})
	}
	if s.NormBound != 0 {
		ps = append(ps, p(audit.ParamNormBound, s.NormBound))
	} else {
		ps = append(ps, audit.Param{Name: audit.ParamNormBound})
	}
	if d := s.GetDp(); d != nil {
		ps = append(ps, p(audit.ParamDPEpsilon, d.Epsilon), p(audit.ParamDPDelta, d.Delta), p(audit.ParamDPNoiseMultiplier, d.NoiseMultiplier),
			p(audit.ParamDPClipNorm, d.ClipNorm), p(audit.ParamDPSampleRate, d.SampleRate), p(audit.ParamDPLevel, d.Level))
	} else {
		for _, n := range []string{audit.ParamDPEpsilon, audit.ParamDPDelta, audit.ParamDPNoiseMultiplier, audit.ParamDPClipNorm, audit.ParamDPSampleRate, audit.ParamDPLevel} {
			ps = append(ps, audit.Param{Name: n})
		}
	}
	return ps
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

// strategyFrom is the study's server optimiser, which a countersigning
// site runs itself.
func strategyFrom(s *pb.StudySpec) (aggregation.Config, error) {
	o := s.GetServerOptimizer()
	if o == nil || o.Name != s.Strategy {
		return aggregation.Config{}, fmt.Errorf("the study does not state its server optimiser %q in full", s.Strategy)
	}
	cfg := aggregation.Config{Name: o.Name, ServerLR: o.ServerLr, Beta1: o.Beta1, Beta2: o.Beta2, Tau: o.Tau}
	return cfg, cfg.Validate()
}

func toPB(m model.Metrics) *pb.Metrics {
	return &pb.Metrics{Loss: m.Loss, Accuracy: m.Accuracy, Auc: m.AUC, N: uint64(m.N)}
}
