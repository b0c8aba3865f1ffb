package audit

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/fedledger/fedledger/internal/privacy"
)

// Privacy-budget errors.
var (
	// ErrPrivacyBudget: the round would bring the study's ε past its
	// declared budget.
	ErrPrivacyBudget = errors.New("audit: the round exceeds the study's privacy budget")
	// ErrPrivacyAccount: the round record's ε spent is missing or is not
	// what the study's declared mechanism gives.
	ErrPrivacyAccount = errors.New("audit: the round record's privacy account is wrong")
)

// Study-record parameters of a record-level differential-privacy study:
// every hospital trains with DP-SGD (Poisson sampling at rate q, each
// example's gradient clipped to norm C, Gaussian noise of σ·C), LocalSteps
// steps a round, and the study's ε may not pass Epsilon at δ = Delta.
const (
	ParamDPEpsilon         = "dp_epsilon"
	ParamDPDelta           = "dp_delta"
	ParamDPNoiseMultiplier = "dp_noise_multiplier"
	ParamDPClipNorm        = "dp_clip_norm"
	ParamDPSampleRate      = "dp_sample_rate"
	// ParamDPLevel is "client" for client-level DP (DP-FedAvg: each
	// hospital's whole update clipped to ClipNorm and noised, one
	// mechanism per round over all hospitals, SampleRate 1); absent or
	// "record" for record-level DP-SGD.
	ParamDPLevel = "dp_level"
	// MetricDPEpsilon is the ε spent so far, on every round record of a DP
	// study.
	MetricDPEpsilon = "dp_epsilon_spent"
)

// Bounds of a declared noise multiplier.
const (
	minNoise = 0.1
	maxNoise = 1000.0
)

// DPBudget is a record-level DP study's declared budget and mechanism, per
// hospital: each trains StepsPerRound DP-SGD steps a round.
type DPBudget struct {
	Epsilon, Delta                        float64
	NoiseMultiplier, ClipNorm, SampleRate float64
	StepsPerRound                         int
	// Level is DPRecord or DPClient.
	Level string
}

// DP levels.
const (
	DPRecord = "record"
	DPClient = "client"
)

// DPBudgetOf reads a study record's DP budget: nil (and no error) for a
// study that declares none, an error naming the parameter if it declares
// one badly.
func DPBudgetOf(study *Record) (*DPBudget, error) {
	names := []string{ParamDPEpsilon, ParamDPDelta, ParamDPNoiseMultiplier, ParamDPClipNorm, ParamDPSampleRate}
	if study.Param(ParamDPLevel) != "" && study.Param(ParamDPEpsilon) == "" {
		return nil, fmt.Errorf("%w: %s without a budget", ErrStudyRules, ParamDPLevel)
	}
	var vals [5]float64
	declared := 0
	for i, n := range names {
		v := study.Param(n)
		if v == "" {
			continue
		}
		declared++
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return nil, fmt.Errorf("%w: %s = %q is not a finite number", ErrStudyRules, n, v)
		}
		vals[i] = f
	}
	if declared == 0 {
		return nil, nil
	}
	if declared != len(names) {
		return nil, fmt.Errorf("%w: a DP study declares all of %v", ErrStudyRules, names)
	}
	b := &DPBudget{Epsilon: vals[0], Delta: vals[1], NoiseMultiplier: vals[2], ClipNorm: vals[3], SampleRate: vals[4], Level: DPRecord}
	switch study.Param(ParamDPLevel) {
	case "", DPRecord:
		steps, err := strconv.Atoi(study.Param("local_steps"))
		if err != nil || steps < 1 {
			return nil, fmt.Errorf("%w: a DP study fixes local_steps >= 1 (got %q): its accounting counts steps", ErrStudyRules, study.Param("local_steps"))
		}
		b.StepsPerRound = steps
	case DPClient:
		// One Gaussian mechanism a round over every hospital's clipped
		// update. Who takes part is no secret (the coordinator picks), so
		// no amplification by sampling is claimed.
		b.Level, b.StepsPerRound = DPClient, 1
		if b.SampleRate != 1 {
			return nil, fmt.Errorf("%w: client-level DP with %s = %v: every round asks every hospital, and the coordinator knows who takes part, so it is 1", ErrStudyRules, ParamDPSampleRate, b.SampleRate)
		}
	default:
		return nil, fmt.Errorf("%w: %s = %q, want %q or %q", ErrStudyRules, ParamDPLevel, study.Param(ParamDPLevel), DPRecord, DPClient)
	}
	switch {
	case !(b.Epsilon > 0):
		return nil, fmt.Errorf("%w: %s = %v, want > 0", ErrStudyRules, ParamDPEpsilon, b.Epsilon)
	case !(b.Delta > 0 && b.Delta < 1):
		return nil, fmt.Errorf("%w: %s = %v, want in (0, 1)", ErrStudyRules, ParamDPDelta, b.Delta)
	case !(b.NoiseMultiplier >= minNoise && b.NoiseMultiplier <= maxNoise):
		// Below 0.1 ε runs to the thousands and the accountant's series
		// converge slowly; above 1000 nothing is learnt. Bounding it keeps
		// every audit node's check of a round cheap.
		return nil, fmt.Errorf("%w: %s = %v, want %g..%g", ErrStudyRules, ParamDPNoiseMultiplier, b.NoiseMultiplier, minNoise, maxNoise)
	case !(b.ClipNorm > 0):
		return nil, fmt.Errorf("%w: %s = %v, want > 0", ErrStudyRules, ParamDPClipNorm, b.ClipNorm)
	case !(b.SampleRate > 0 && b.SampleRate <= 1):
		return nil, fmt.Errorf("%w: %s = %v, want in (0, 1]", ErrStudyRules, ParamDPSampleRate, b.SampleRate)
	}
	return b, nil
}

// Spent is the ε each hospital has spent after rounds rounds: the RDP of
// rounds·StepsPerRound sampled Gaussian steps, converted at δ (at client
// level one unsampled Gaussian mechanism a round). Every round
// counts, failed or not: a hospital may have trained and sent its update
// before a round failed.
func (b DPBudget) Spent(rounds int) (float64, error) { return b.SpentSteps(rounds * b.StepsPerRound) }

// SpentSteps is the ε after steps steps of the mechanism (mechanisms, at
// client level): a hospital's own account counts the steps it trained.
func (b DPBudget) SpentSteps(steps int) (float64, error) {
	if steps == 0 {
		return 0, nil
	}
	return privacy.EpsilonFor([]privacy.Entry{{Q: b.SampleRate, Sigma: b.NoiseMultiplier, Steps: steps}}, b.Delta)
}

// within reports whether spent is within the budget. Audit nodes on
// different hardware may differ in the last bits of ε, so the comparison
// allows a relative 1e-9.
func (b DPBudget) within(spent float64) bool { return spent <= b.Epsilon*(1+1e-9) }

// Rounds is how many rounds the budget allows, at most limit.
func (b DPBudget) Rounds(limit int) (int, error) {
	lo, hi := 0, limit // Spent(lo) is within, find the largest such
	for lo < hi {
		mid := (lo + hi + 1) / 2
		e, err := b.Spent(mid)
		if err != nil {
			return 0, err
		}
		if b.within(e) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// checkPrivacy holds round round's record to the study's budget: its ε
// spent must be the declared mechanism's after round rounds, and within
// the budget.
func checkPrivacy(b *DPBudget, rec *Record) error {
	if b.Level == DPClient {
		// The sensitivity bound holds for updates of weight 1: a sample
		// count would scale it (and reveal the count).
		for _, c := range rec.Contributions {
			if c.Samples != 1 && rec.Kind == KindRoundCompleted {
				return fmt.Errorf("%w: %q's contribution weighs %d samples; in a client-level DP study every update weighs 1", ErrPrivacyAccount, c.Site, c.Samples)
			}
		}
	}
	spent, err := b.Spent(int(rec.Round))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrPrivacyAccount, err)
	}
	if !b.within(spent) {
		return fmt.Errorf("%w: round %d brings each hospital's ε to %.4f (δ = %g), the study's budget is %g", ErrPrivacyBudget, rec.Round, spent, b.Delta, b.Epsilon)
	}
	for _, m := range rec.Metrics {
		if m.Name == MetricDPEpsilon {
			if math.Abs(m.Value-spent) > 1e-9*spent || math.IsNaN(m.Value) {
				return fmt.Errorf("%w: it states ε spent %v after round %d, the study's mechanism gives %v", ErrPrivacyAccount, m.Value, rec.Round, spent)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: no %s on round %d of a DP study", ErrPrivacyAccount, MetricDPEpsilon, rec.Round)
}
