package console

import (
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedledger/fedledger/audit"
)

// What a study page shows, built from the records of a replayed log only
// (buildStudy): every figure here is on the log, and the page says who
// vouches for it.

// studyView is one study as the log has it.
type studyView struct {
	ID         string
	Index      int64 // the study record's log index
	CreatedBy  string
	Created    time.Time
	Expires    time.Time
	Purpose    string
	Secure     bool
	HEParams   string
	Threshold  uint32
	K          uint32
	Allowed    uint32
	Sites      []string
	KeyHolders []string
	// KeySetupIndex is the key setup's log index (-1: none).
	KeySetupIndex int64
	Strategy      string
	Params        []audit.Param
	Initial       string

	Completed, Failed int
	LatestModel       string
	Rounds            []roundView
	SiteRows          []siteView
	DP                *dpView
	Flags             []flagView
	Exclusions        []exclusionView
	Charts            []chart
	// EvalSplit is "test", or "val" for a tuning trial: the split the
	// hospitals' signed evaluations are on.
	EvalSplit string
}

// roundView is one round record (completed or failed).
type roundView struct {
	Round     uint64
	Index     int64
	Completed bool
	Failure   string
	Time      time.Time
	Duration  time.Duration
	// Contributors are the sites whose contributions the record lists;
	// Absent the approved sites it does not.
	Contributors []string
	Absent       []string
	Samples      uint64
	Excluded     []string
	Flags        []flagView
	Decryptors   []string
	Counter      []string
	// Accuracy and Loss are the sample-weighted means of the contributors'
	// signed evaluations of the round's starting model (HasEval).
	Accuracy, Loss float64
	EvalN          float64
	HasEval        bool
	TrainLoss      float64
	HasTrainLoss   bool
	Epsilon        float64
	HasEpsilon     bool
	Bytes          int
	Output         string
}

// siteView is one approved site over the study's rounds.
type siteView struct {
	Site                                  string
	KeyHolder                             bool
	Contributed, Decrypted, Countersigned int
	Excluded, Flagged, Absent             int
	// Samples is the sample count of its latest contribution.
	Samples uint64
	// Accuracy is its latest signed evaluation of a round's starting
	// model (HasAccuracy).
	Accuracy    float64
	HasAccuracy bool
	AccuracyAt  uint64
}

type flagView struct {
	Round        uint64
	Site, Reason string
}

type exclusionView struct {
	Round uint64
	Sites []string
}

// dpView is a differentially private study's budget and what the log
// states was spent.
type dpView struct {
	Level           string
	Budget, Delta   float64
	NoiseMultiplier float64
	ClipNorm        float64
	SampleRate      float64
	StepsPerRound   int
	// Spent is the ε the latest round record states (the rules recompute
	// it), after SpentAt rounds.
	Spent   float64
	SpentAt uint64
	Frac    float64
	// BarW is the spent fraction's width in the gauge (0..300).
	BarW string
}

// failedContributors reads a failed round's "contributors" parameter
// ("[a b c]", the coordinator's list of what had arrived).
func failedContributors(v string) []string {
	v = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(v), "["), "]")
	return strings.Fields(v)
}

// buildStudy builds the view of study from steps (every record of a
// replayed log, in log order) and leaves (their encodings). It returns
// false when the log has no such study.
func buildStudy(study string, steps []audit.LineageStep, leaves [][]byte) (*studyView, bool) {
	var v *studyView
	var rounds []audit.LineageStep
	for _, s := range steps {
		rec := s.Record
		if rec.StudyID != study {
			continue
		}
		switch rec.Kind {
		case audit.KindStudyCreated:
			v = &studyView{ID: rec.StudyID, Index: s.Index, CreatedBy: rec.SubmitterID, Created: time.Unix(0, rec.TimestampUnixNs),
				K: rec.MinContributors, Allowed: rec.Rounds, Sites: slices.Clone(rec.ApprovedSites), KeySetupIndex: -1,
				Strategy: rec.Strategy, Params: rec.Hyperparameters, Initial: hexOf(rec.OutputModel), HEParams: rec.HEParamsID,
				Threshold: rec.Threshold, Secure: rec.HEParamsID != "", Purpose: rec.Param("purpose")}
			v.LatestModel = v.Initial
			if rec.ExpiresAtUnixNs != 0 {
				v.Expires = time.Unix(0, rec.ExpiresAtUnixNs)
			}
			if b, err := audit.DPBudgetOf(rec); err == nil && b != nil {
				v.DP = &dpView{Level: b.Level, Budget: b.Epsilon, Delta: b.Delta, NoiseMultiplier: b.NoiseMultiplier,
					ClipNorm: b.ClipNorm, SampleRate: b.SampleRate, StepsPerRound: b.StepsPerRound}
				if v.DP.Level == "" {
					v.DP.Level = audit.DPRecord
				}
			}
		case audit.KindKeySetupDone:
			if v != nil {
				v.KeySetupIndex = s.Index
				for _, h := range rec.KeyHolders {
					v.KeyHolders = append(v.KeyHolders, h.Site)
				}
			}
		case audit.KindRoundCompleted, audit.KindRoundFailed:
			rounds = append(rounds, s)
		}
	}
	if v == nil {
		return nil, false
	}
	sites := map[string]*siteView{}
	for _, s := range v.Sites {
		sites[s] = &siteView{Site: s, KeyHolder: slices.Contains(v.KeyHolders, s)}
	}
	site := func(s string) *siteView {
		if sites[s] == nil { // not approved: the rules would refuse it, but show it rather than hide it
			sites[s] = &siteView{Site: s}
		}
		return sites[s]
	}
	v.EvalSplit = "test"
	for _, s := range rounds {
		for _, e := range s.Record.Evaluations {
			for _, m := range e.Metrics {
				if m.Name == "val_n" {
					v.EvalSplit = "val"
				}
			}
		}
	}
	for _, s := range rounds {
		rec := s.Record
		rv := roundView{Round: rec.Round, Index: s.Index, Completed: rec.Kind == audit.KindRoundCompleted,
			Time: time.Unix(0, rec.TimestampUnixNs), Failure: rec.Param("failure")}
		if int(s.Index) < len(leaves) {
			rv.Bytes = len(leaves[s.Index])
		}
		for _, c := range rec.Contributions {
			rv.Contributors = append(rv.Contributors, c.Site)
			rv.Samples += c.Samples
		}
		if !rv.Completed && len(rv.Contributors) == 0 {
			rv.Contributors = failedContributors(rec.Param("contributors"))
		}
		for _, d := range rec.DecryptionShares {
			rv.Decryptors = append(rv.Decryptors, d.Site)
			site(d.Site).Decrypted++
		}
		for _, c := range rec.Countersignatures {
			rv.Counter = append(rv.Counter, c.Site)
			site(c.Site).Countersigned++
		}
		for _, m := range rec.Metrics {
			switch m.Name {
			case "duration_s":
				rv.Duration = time.Duration(m.Value * float64(time.Second))
			case "train_loss":
				rv.TrainLoss, rv.HasTrainLoss = m.Value, finite(m.Value)
			case audit.MetricDPEpsilon:
				rv.Epsilon, rv.HasEpsilon = m.Value, true
			}
		}
		for _, p := range rec.Hyperparameters {
			switch {
			case p.Name == audit.ParamExcluded && p.Value != "":
				rv.Excluded = strings.Split(p.Value, ",")
			case strings.HasPrefix(p.Name, audit.ParamAnomalyPrefix):
				f := flagView{Round: rec.Round, Site: strings.TrimPrefix(p.Name, audit.ParamAnomalyPrefix), Reason: p.Value}
				rv.Flags = append(rv.Flags, f)
				v.Flags = append(v.Flags, f)
				site(f.Site).Flagged++
			}
		}
		if len(rv.Excluded) > 0 {
			v.Exclusions = append(v.Exclusions, exclusionView{Round: rec.Round, Sites: rv.Excluded})
			for _, s := range rv.Excluded {
				site(s).Excluded++
			}
		}
		var acc, loss, n float64
		for _, e := range rec.Evaluations {
			fig := map[string]float64{}
			for _, m := range e.Metrics {
				fig[m.Name] = m.Value
			}
			w, ok := fig[v.EvalSplit+"_n"]
			a, okA := fig["global_"+v.EvalSplit+"_accuracy"]
			if !ok || !okA || w <= 0 {
				continue
			}
			acc, n = acc+w*a, n+w
			loss += w * fig["global_"+v.EvalSplit+"_loss"]
			sv := site(e.Site)
			sv.Accuracy, sv.HasAccuracy, sv.AccuracyAt = a, true, rec.Round
		}
		if n > 0 {
			rv.Accuracy, rv.Loss, rv.EvalN, rv.HasEval = acc/n, loss/n, n, true
		}
		for _, c := range rec.Contributions {
			sv := site(c.Site)
			sv.Contributed++
			sv.Samples = c.Samples
		}
		for _, s := range v.Sites {
			if !slices.Contains(rv.Contributors, s) && !slices.Contains(rv.Excluded, s) {
				rv.Absent = append(rv.Absent, s)
				site(s).Absent++
			}
		}
		if rv.Completed {
			v.Completed++
			rv.Output = hexOf(rec.OutputModel)
			v.LatestModel = rv.Output
		} else {
			v.Failed++
		}
		if v.DP != nil && rv.HasEpsilon {
			v.DP.Spent, v.DP.SpentAt = rv.Epsilon, rec.Round
		}
		v.Rounds = append(v.Rounds, rv)
	}
	for _, s := range slices.Sorted(maps.Keys(sites)) {
		v.SiteRows = append(v.SiteRows, *sites[s])
	}
	if d := v.DP; d != nil && d.Budget > 0 {
		d.Frac = min(d.Spent/d.Budget, 1)
		d.BarW = num(300 * d.Frac)
	}
	v.Charts = studyCharts(v)
	return v, true
}

// studyCharts are the study page's charts, over its rounds.
func studyCharts(v *studyView) []chart {
	var acc, loss, eps, dur []point
	var rounds []int
	var contrib, bytes []float64
	var classes, cTitles, bTitles []string
	for _, r := range v.Rounds {
		x := float64(r.Round)
		if r.HasEval {
			acc, loss = append(acc, point{x, r.Accuracy}), append(loss, point{x, r.Loss})
		}
		if r.HasEpsilon {
			eps = append(eps, point{x, r.Epsilon})
		}
		if r.Completed && r.Duration > 0 {
			dur = append(dur, point{x, r.Duration.Seconds()})
		}
		rounds = append(rounds, int(r.Round))
		contrib, bytes = append(contrib, float64(len(r.Contributors))), append(bytes, float64(r.Bytes))
		outcome, class := "completed", "bar-ok"
		if !r.Completed {
			outcome, class = "failed", "bar-failed"
		}
		classes = append(classes, class)
		cTitles = append(cTitles, fmt.Sprintf("round %d (%s): %d contributions", r.Round, outcome, len(r.Contributors)))
		bTitles = append(bTitles, fmt.Sprintf("round %d (%s): %d bytes on the log", r.Round, outcome, r.Bytes))
	}
	f3 := func(x float64) string { return strconv.FormatFloat(x, 'f', 3, 64) }
	split := "test"
	if v.EvalSplit == "val" {
		split = "validation"
	}
	signed := "signed by each contributing hospital, weighted by its " + split + " rows"
	out := []chart{
		lineChart("chart-accuracy", "Mean "+split+" accuracy of each round's starting model", signed,
			[]series{{Label: "accuracy", Points: acc}}, false, nil, "", f3),
		lineChart("chart-loss", "Mean "+split+" loss of each round's starting model", signed,
			[]series{{Label: "loss", Class: "s1", Points: loss}}, false, nil, "", f3),
		barChart("chart-contributions", "Contributions per round", "each signed by its hospital; failed rounds in red",
			rounds, contrib, classes, cTitles),
		barChart("chart-bytes", "Round record size on the log (bytes)", "the signed record as the log stores it",
			rounds, bytes, classes, bTitles),
	}
	if len(dur) > 0 {
		out = append(out, lineChart("chart-duration", "Round duration (s)", "the coordinator's clock",
			[]series{{Label: "duration", Class: "s2", Points: dur}}, true, nil, "", func(x float64) string { return strconv.FormatFloat(x, 'f', 2, 64) + " s" }))
	}
	if d := v.DP; d != nil {
		budget := d.Budget
		out = append(out, lineChart("chart-epsilon", "Privacy spent per hospital (ε)", "stated on every round record; every audit node recomputes it",
			[]series{{Label: "ε", Class: "s3", Points: eps}}, true, &budget, "budget ε = "+strconv.FormatFloat(budget, 'g', -1, 64), f3))
	}
	return out
}

func hexOf(h audit.Hash) string { return hex.EncodeToString(h[:]) }
