package study

import (
	"log/slog"
	"math"
	"slices"

	"github.com/fedledger/fedledger/internal/anomaly"
)

// Flag is an anomaly the detector found in a site's signals of a round.
type Flag struct {
	Site   string
	Reason string
}

// The signals the detector watches, per contributing site and completed
// round: its reported test loss of the round's parent, how long after the
// round opened its update arrived, and, in a study with a norm bound, the
// disclosed projection of its update over its bound (|p| / n·B). They are
// pooled over the sites and the last rounds (a robust z-score, and an
// isolation forest; internal/anomaly), after a warm-up of five rounds.
var detectorFeatures = []string{"parent_test_loss", "upload_seconds", "projection_ratio"}

func newDetector() *anomaly.Detector {
	return anomaly.NewDetector(detectorFeatures,
		anomaly.WithMinScale("parent_test_loss", 0.05),
		anomaly.WithMinScale("upload_seconds", 5),
		anomaly.WithMinScale("projection_ratio", 0.05))
}

// detect runs the detector over the round's signals and returns its flags
// (none during the warm-up). A detector error is logged, not fatal: the
// flags are advice.
func (m *Machine) detect() []Flag {
	r := m.r
	var obs []anomaly.Observation
	for _, site := range sortedKeys(r.updates) {
		u := r.updates[site]
		loss := math.NaN()
		if u.parentTest != nil {
			loss = u.parentTest.Loss
		}
		ratio := math.NaN()
		if p, ok := r.projections[site]; ok && m.cfg.NormBound > 0 && u.c.Samples > 0 {
			ratio = math.Abs(p) / (float64(u.c.Samples) * m.cfg.NormBound)
		}
		obs = append(obs, anomaly.Observation{Site: site, Round: r.n, Values: []float64{loss, u.uploaded.Seconds(), ratio}})
	}
	flags, err := m.detector.Observe(r.n, obs)
	if err != nil {
		m.detectorErr = err
		flags = nil
	}
	out := make([]Flag, 0, len(flags))
	flagged := map[string]bool{}
	for _, f := range flags {
		out = append(out, Flag{Site: f.Site, Reason: f.Reason})
		flagged[f.Site] = true
	}
	out = append(out, m.violationFlags(sortedKeys(r.updates), flagged)...)
	slices.SortFunc(out, func(a, b Flag) int {
		if a.Site < b.Site {
			return -1
		}
		if a.Site > b.Site {
			return 1
		}
		return 0
	})
	return out
}

// detectorLog reports a detector error once.
func (m *Machine) detectorLog() []Action {
	if m.detectorErr == nil {
		return nil
	}
	err := m.detectorErr
	m.detectorErr = nil
	return []Action{logf(slog.LevelWarn, "anomaly detector", "err", err.Error())}
}
