package client

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand"
	"os"
	"path/filepath"
	"slices"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/fedledger/fedledger/internal/model"
)

// PersonalConfig is how this site personalises: beside the study's global
// model, which goes on the audit log, it keeps a personal model of its own
// (train.Personalise) and reports that model's metrics on its test split
// with each update and with the final evaluation.
type PersonalConfig struct {
	// Method is one of train.Personalisations. With the intercept method
	// the site also trains each round from the global weights with its own
	// intercept (train.LocalStart, FedPer style).
	Method string
	// Train is the personal training (optimiser, learning rate, batch,
	// steps).
	Train model.TrainConfig
	// Lambdas are the candidate pulls towards the global model, chosen on a
	// validation split held out of the training split (the test split is
	// never used to choose); keeping the global model is always a
	// candidate. Fine-tuning ignores them.
	Lambdas []float64
	// ValidationFraction of the training split is held out to choose
	// (default 0.25).
	ValidationFraction float64
	// SelectBy is what the choice maximises on the validation part:
	// "accuracy" (the default; ties go to the lower loss) or "loss" (the
	// lowest cross-entropy, the training objective: a proper scoring rule,
	// steadier than accuracy on a few dozen rows).
	SelectBy string
}

// Selection criteria.
const (
	SelectByAccuracy = "accuracy"
	SelectByLoss     = "loss"
)

// Validate checks the configuration.
func (p PersonalConfig) Validate() error {
	for _, l := range p.candidates() {
		if err := (train.PersonalConfig{Method: p.Method, Train: p.Train, Lambda: l}).Validate(); err != nil {
			return err
		}
	}
	if p.SelectBy != "" && p.SelectBy != SelectByAccuracy && p.SelectBy != SelectByLoss {
		return fmt.Errorf("%w: select by %q, want %s or %s", train.ErrPersonal, p.SelectBy, SelectByAccuracy, SelectByLoss)
	}
	if p.ValidationFraction < 0 || p.ValidationFraction >= 1 {
		return fmt.Errorf("%w: validation fraction %v, want in [0, 1)", train.ErrPersonal, p.ValidationFraction)
	}
	return nil
}

// candidates are the λ to try (one, 0, for fine-tuning).
func (p PersonalConfig) candidates() []float64 {
	if p.Method == train.PersonalFineTune || len(p.Lambdas) == 0 {
		return []float64{0}
	}
	return p.Lambdas
}

// holdOut splits the training data into a fitting and a validation part,
// stratified by label, the same way every time.
func holdOut(d *train.Dataset, frac float64, seed int64) (fit, val *train.Dataset) {
	fit = &train.Dataset{Name: d.Name + "/fit", Features: d.Features, Preprocessing: d.Preprocessing}
	val = &train.Dataset{Name: d.Name + "/validation", Features: d.Features, Preprocessing: d.Preprocessing}
	rng := rand.New(rand.NewSource(seed))
	for _, label := range []float64{0, 1} {
		var idx []int
		for i, y := range d.Y {
			if y == label {
				idx = append(idx, i)
			}
		}
		rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
		nv := int(float64(len(idx))*frac + 0.5)
		for k, i := range idx {
			dst := fit
			if k < nv {
				dst = val
			}
			dst.X, dst.Y = append(dst.X, d.X[i]), append(dst.Y, d.Y[i])
		}
	}
	return fit, val
}

// personalise makes the site's personal model from the global one: it
// tries each candidate λ (and the global model itself) on the validation
// part, keeps the best by SelectBy (ties keep the global model, then the
// earlier candidate), refits the chosen one on the whole
// training split, and returns it with its metrics on the test split.
func (c *Client) personalise(ctx context.Context, spec model.Spec, global []float64, seed int64) ([]float64, model.Metrics, error) {
	p := *c.cfg.Personal
	frac := p.ValidationFraction
	if frac == 0 {
		frac = 0.25
	}
	fit, val := holdOut(c.train, frac, seed)
	cfg := train.PersonalConfig{Method: p.Method, Train: p.Train}
	cfg.Train.Seed = seed
	best, err := train.Evaluate(spec, global, val)
	if err != nil {
		return nil, model.Metrics{}, err
	}
	chosen := -1
	cands := p.candidates()
	for i, l := range cands {
		cfg.Lambda = l
		params, _, err := train.Personalise(ctx, spec, global, c.previousPersonal(global), fit, cfg)
		if err != nil {
			return nil, model.Metrics{}, err
		}
		m, err := train.Evaluate(spec, params, val)
		if err != nil {
			return nil, model.Metrics{}, err
		}
		better := m.Accuracy > best.Accuracy || m.Accuracy == best.Accuracy && m.Loss < best.Loss
		if p.SelectBy == SelectByLoss {
			better = m.Loss < best.Loss
		}
		if better {
			best, chosen = m, i
		}
	}
	personal := slices.Clone(global)
	if chosen >= 0 {
		cfg.Lambda = cands[chosen]
		if personal, _, err = train.Personalise(ctx, spec, global, c.previousPersonal(global), c.train, cfg); err != nil {
			return nil, model.Metrics{}, err
		}
	}
	test, err := train.Evaluate(spec, personal, c.test)
	if err != nil {
		return nil, model.Metrics{}, err
	}
	lambda := "global model kept"
	if chosen >= 0 {
		lambda = fmt.Sprint(cands[chosen])
	}
	c.log.Info("personal model", slog.String("method", p.Method), slog.String("lambda", lambda),
		slog.Float64("validation_acc", best.Accuracy), slog.Float64("test_acc", test.Accuracy))
	return personal, test, nil
}

// Summary is this site's contribution to the consortium's standardisation
// (train.Summary): its training rows' count and, per input, the sum and
// the sum of squares. No row leaves with it.
func (c *Client) Summary() (train.Summary, error) { return train.Summarize(c.train) }

// previousPersonal is the personal model Ditto continues from and whose
// intercept the intercept method trains from (nil: start from the global
// model). After a restart it is the one the site kept on disk.
func (c *Client) previousPersonal(global []float64) []float64 {
	if c.personal == nil && c.study != nil {
		if b, err := fsutil.ReadFileChecked(c.personalFile()); err == nil {
			if _, p, err := model.Decode(b); err == nil {
				c.personal = p
			} else {
				c.log.Warn("the kept personal model is unreadable; starting again from the global model", slog.String("file", c.personalFile()), slog.Any("err", err))
			}
		}
	}
	if len(c.personal) != len(global) {
		return nil
	}
	return c.personal
}

// personalFile is where the site keeps its personal model of the study, a
// model file like the global one's, for its own use.
func (c *Client) personalFile() string {
	return filepath.Join(c.studyDir(c.study.StudyId), "personal.flm")
}

// keepPersonal makes p the site's personal model and writes it to its file.
func (c *Client) keepPersonal(spec model.Spec, p []float64) error {
	c.personal = p
	b, err := model.Encode(spec, p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(c.personalFile()), 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileChecked(c.personalFile(), b, 0o600)
}
