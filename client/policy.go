package client

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fedledger/fedledger/internal/model"

	pb "github.com/fedledger/fedledger/proto"
)

// Policy is what a hospital accepts, enforced before it does any work for
// a study. Zero values mean "no limit" except where noted; the study list,
// plaintext permission and the decryption floor live in Config (Studies,
// AllowPlaintext, MinContributors).
type Policy struct {
	// Admins are the consortium admins whose signed study records this
	// site accepts. Set, it requires AuditNodes: the client reads the study
	// record from the log, checks the signature and that its rules are the
	// ones the coordinator announced.
	Admins []string
	// ModelKinds are the allowed model kinds (logreg, mlp).
	ModelKinds []string
	// MaxParameters bounds the model size.
	MaxParameters int
	// AllowedColumns are the data columns this site lets a model use.
	AllowedColumns []string
	// MinK is the smallest study K this site joins.
	MinK int
	// MinThreshold is the smallest decryption threshold t this site joins
	// (never below 2).
	MinThreshold int
	// MaxRounds bounds the rounds a study may ask of this site.
	MaxRounds int
	// MaxDPEpsilon, when > 0, is the most privacy this site spends of its
	// patients' records in one study: it joins only record-level DP studies
	// whose budget is at most this (at their δ), and its client never
	// trains past it, by its own account.
	MaxDPEpsilon float64
}

// Validate checks the policy against the rest of the configuration.
func (p Policy) Validate(c Config) error {
	var errs []error
	if len(p.Admins) > 0 && len(c.AuditNodes) == 0 {
		errs = append(errs, errors.New("policy.admins needs audit_nodes: study records are read from the audit log"))
	}
	for _, k := range p.ModelKinds {
		if k != model.KindLogReg && k != model.KindMLP {
			errs = append(errs, fmt.Errorf("policy.model_kinds: unknown kind %q", k))
		}
	}
	if p.MaxParameters < 0 || p.MinK < 0 || p.MinThreshold < 0 || p.MaxRounds < 0 || p.MaxDPEpsilon < 0 || p.MaxDPEpsilon != p.MaxDPEpsilon {
		errs = append(errs, errors.New("policy: limits must not be negative"))
	}
	return errors.Join(errs...)
}

// refusal is a study outside this site's policy; its text is the reason
// logged here and sent to the coordinator.
func refusal(format string, a ...any) string { return "policy: " + fmt.Sprintf(format, a...) }

// checkPolicy returns why the study is outside this site's policy, or "".
func (c *Client) checkPolicy(ctx context.Context, s *pb.StudySpec) string {
	p := c.cfg.Policy
	spec := specFrom(s.Model)
	switch {
	case len(p.ModelKinds) > 0 && !slices.Contains(p.ModelKinds, spec.Kind):
		return refusal("model kind %q is not allowed here (allowed: %v)", spec.Kind, p.ModelKinds)
	case p.MaxParameters > 0 && spec.NumParams() > p.MaxParameters:
		return refusal("model of %d parameters exceeds this site's limit of %d", spec.NumParams(), p.MaxParameters)
	case p.MinK > 0 && int(s.MinClients) < p.MinK:
		return refusal("study K=%d is below this site's minimum of %d contributors per round", s.MinClients, p.MinK)
	case s.Mode == modeSecure && int(s.Threshold) < max(2, p.MinThreshold):
		return refusal("decryption threshold t=%d is below this site's minimum of %d", s.Threshold, max(2, p.MinThreshold))
	case p.MaxRounds > 0 && int(s.Rounds) > p.MaxRounds:
		return refusal("study asks for %d rounds, this site allows at most %d", s.Rounds, p.MaxRounds)
	case p.MaxDPEpsilon > 0 && s.GetDp() == nil:
		return refusal("study is not differentially private; this site joins only studies with a privacy budget of ε <= %g", p.MaxDPEpsilon)
	case p.MaxDPEpsilon > 0 && s.GetDp().GetEpsilon() > p.MaxDPEpsilon:
		return refusal("study's privacy budget ε = %g (δ = %g) exceeds this site's cap of %g", s.GetDp().GetEpsilon(), s.GetDp().GetDelta(), p.MaxDPEpsilon)
	}
	local := c.train.Features
	if len(s.Features) > 0 && !slices.Equal(s.Features, local) {
		return refusal("study expects features %v, this site's data has %v", s.Features, local)
	}
	if len(p.AllowedColumns) > 0 {
		for _, f := range local {
			if !slices.Contains(p.AllowedColumns, f) {
				return refusal("column %q is not among this site's allowed columns", f)
			}
		}
	}
	if len(p.Admins) > 0 {
		return c.checkStudyRecord(ctx, s)
	}
	return ""
}
