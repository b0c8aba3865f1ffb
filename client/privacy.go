package client

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/fsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// ErrPrivacyCap: training once more would take this site past the privacy
// budget it accepts (its policy's cap, or the study's budget if lower).
var ErrPrivacyCap = errors.New("client: training would pass this site's privacy budget")

// dpAccount is this site's own account of the DP-SGD steps it has run in a
// study, kept in the study's directory. It is written before each training
// starts, so a crash never forgets a step; every training counts, a retry
// of the same round too (a second noisy release of the same data).
type dpAccount struct {
	Study string `json:"study"`
	Steps int    `json:"steps"`
}

func (c *Client) dpFile() string {
	return filepath.Join(c.studyDir(c.study.StudyId), "dp-account.json")
}

// dpBudget is the study's DP budget as announced (nil: not a DP study).
func dpBudget(s *pb.StudySpec) (*audit.DPBudget, error) {
	if s.GetDp() == nil {
		return nil, nil
	}
	rec := &audit.Record{}
	for _, p := range announcedParams(s) {
		if p.Value != "" {
			rec.Hyperparameters = append(rec.Hyperparameters, p)
		}
	}
	b, err := audit.DPBudgetOf(rec)
	if err == nil && b == nil {
		err = errors.New("a DP study without a budget")
	}
	return b, err
}

// dpCap is the ε this site lets the study spend of its data: the study's
// budget, or its policy's cap if lower.
func (c *Client) dpCap(b *audit.DPBudget) float64 {
	if m := c.cfg.Policy.MaxDPEpsilon; m > 0 {
		return min(m, b.Epsilon)
	}
	return b.Epsilon
}

// dpSpent reads the account: the steps run so far and the ε they spent.
func (c *Client) dpSpent(b *audit.DPBudget) (int, float64, error) {
	data, err := fsutil.ReadFileChecked(c.dpFile())
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("privacy account %s: %w", c.dpFile(), err)
	}
	var a dpAccount
	if err := json.Unmarshal(data, &a); err != nil || a.Study != c.study.StudyId || a.Steps < 0 {
		return 0, 0, fmt.Errorf("privacy account %s is not this study's (%q, %d steps): %v", c.dpFile(), a.Study, a.Steps, err)
	}
	spent, err := b.SpentSteps(a.Steps)
	return a.Steps, spent, err
}

// spendDP checks that steps more DP-SGD steps stay within this site's cap
// and records them before the training runs; it returns the ε spent
// after them.
func (c *Client) spendDP(b *audit.DPBudget, steps int) (float64, error) {
	done, spent, err := c.dpSpent(b)
	if err != nil {
		return 0, err
	}
	next, err := b.SpentSteps(done + steps)
	if err != nil {
		return 0, err
	}
	if cap := c.dpCap(b); next > cap*(1+1e-9) {
		return spent, fmt.Errorf("%w: %d more steps would bring ε to %.4f (δ = %g), this site's cap is %g; it has spent %.4f",
			ErrPrivacyCap, steps, next, b.Delta, cap, spent)
	}
	data, _ := json.Marshal(dpAccount{Study: c.study.StudyId, Steps: done + steps})
	if err := os.MkdirAll(filepath.Dir(c.dpFile()), 0o700); err != nil {
		return 0, err
	}
	if err := fsutil.WriteFileChecked(c.dpFile(), data, 0o600); err != nil {
		return 0, fmt.Errorf("privacy account: %w", err)
	}
	c.metrics.dpSpent.Set(next)
	return next, nil
}

// dpConfig is the study's DP-SGD mechanism for train.TrainDP.
func dpConfig(b *audit.DPBudget) train.DPConfig {
	return train.DPConfig{NoiseMultiplier: b.NoiseMultiplier, ClipNorm: b.ClipNorm, SampleRate: b.SampleRate}
}

// secretSeed seeds DP-SGD's Poisson sampling from crypto/rand: the
// accountant's amplification by sampling assumes nobody knows which
// records a step used, so the study's public seed must not decide it.
func secretSeed() int64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return int64(binary.LittleEndian.Uint64(b[:]) >> 1)
}

// clientLevelUpdate is DP-FedAvg's update from this site: local − parent
// clipped to the study's clip norm S, plus this site's share of the
// noise, N(0, (σ·S)²/K) per coordinate. The sum of at least K such updates
// (the study's minimum; secure aggregation reveals only the sum) carries
// noise of at least σ·S, the Gaussian mechanism the accountant counts
// with sensitivity S; with m > K contributors it carries √(m/K) times
// that, the price of tolerating dropouts down to K. It returns the new
// local model, parent plus the noisy clipped update.
func clientLevelUpdate(parent, local []float64, b *audit.DPBudget, k int, noise train.Noise) []float64 {
	out, _ := clipUpdate(parent, local, b.ClipNorm)
	out = slices.Clone(out)
	std := b.NoiseMultiplier * b.ClipNorm / math.Sqrt(float64(max(k, 1)))
	for i := range out {
		out[i] += std * noise.Normal()
	}
	return out
}
