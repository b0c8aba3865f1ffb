package audit

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"
)

// Report is a verified lineage in a form for people and machines. The
// study's rules and mode come from its study-created and key-setup
// records (what the admin and the key holders signed), never from a
// round record.
type Report struct {
	Verified bool          `json:"verified"`
	Study    string        `json:"study"`
	Model    string        `json:"model_sha256"`
	Initial  string        `json:"initial_model_sha256"`
	Log      string        `json:"log"`
	TreeSize int64         `json:"tree_size"`
	Root     string        `json:"root"`
	Signers  []string      `json:"checkpoint_signers"`
	Rounds   []ReportRound `json:"rounds"`
	// Sites are the sites that contributed to some round on the path.
	Sites []string `json:"sites"`
	// Mode is "secure" or "plaintext", from the study record.
	Mode string `json:"mode"`
	// HEParams, Threshold (t), KeyHolders and CollectiveKey describe a
	// secure study: the study record's parameter set and t, the key setup's
	// holders and collective key hash.
	HEParams      string   `json:"he_params,omitempty"`
	Threshold     uint32   `json:"threshold,omitempty"`
	KeyHolders    []string `json:"key_holders,omitempty"`
	CollectiveKey string   `json:"collective_key_sha256,omitempty"`
	KeySetupIndex int64    `json:"key_setup_log_index,omitempty"`
	// The study record: who created it, where, and its rules.
	StudyIndex      int64    `json:"study_log_index"`
	CreatedBy       string   `json:"created_by"`
	ApprovedSites   []string `json:"approved_sites"`
	MinContributors uint32   `json:"min_contributors"`
	RoundsAllowed   uint32   `json:"rounds_allowed"`
	Strategy        string   `json:"strategy,omitempty"`
	Parameters      []Param  `json:"parameters,omitempty"`
	// DP is a differentially private study's budget and the ε its
	// hospitals had spent when this model was made (nil: no DP).
	DP *ReportDP `json:"differential_privacy,omitempty"`
	// Exclusions are the admins' exclusions (and readmissions) of sites
	// from the study's rounds, in log order.
	Exclusions []ReportExclusion `json:"exclusions,omitempty"`
}

// ReportExclusion is an admin's exclusion or readmission of a site.
type ReportExclusion struct {
	Site       string `json:"site"`
	From       uint64 `json:"from_round"`
	By         string `json:"by"`
	Reason     string `json:"reason"`
	Readmitted bool   `json:"readmitted,omitempty"`
	Index      int64  `json:"log_index"`
}

// ReportDP is the privacy a model's lineage spent, per hospital: ε after
// the model's last round, recomputed from the study's declared DP-SGD
// mechanism as the rules do, against the study's budget.
type ReportDP struct {
	Level           string  `json:"level"`
	EpsilonSpent    float64 `json:"epsilon_spent"`
	EpsilonBudget   float64 `json:"epsilon_budget"`
	Delta           float64 `json:"delta"`
	NoiseMultiplier float64 `json:"noise_multiplier"`
	ClipNorm        float64 `json:"clip_norm"`
	SampleRate      float64 `json:"sample_rate"`
	StepsPerRound   int     `json:"steps_per_round"`
	Rounds          uint64  `json:"rounds"`
}

// ReportRound is one completed round on the path to the model.
type ReportRound struct {
	Round  uint64 `json:"round"`
	Index  int64  `json:"log_index"`
	Parent string `json:"parent_sha256"`
	Output string `json:"output_sha256"`
	// Sites and Samples repeat Contributions' sites and sample counts.
	Sites         []string             `json:"sites"`
	Samples       map[string]uint64    `json:"samples"`
	Contributions []ReportContribution `json:"contributions"`
	Aggregate     string               `json:"aggregate_sha256"`
	Decryptors    []string             `json:"decryptors,omitempty"`
	// Countersigners are the sites that signed the round's outcome.
	Countersigners  []string `json:"countersigners"`
	OptimizerBefore string   `json:"optimizer_before_sha256"`
	OptimizerAfter  string   `json:"optimizer_after_sha256"`
	// Metrics are the coordinator's figures; no hospital signs them.
	Metrics map[string]float64 `json:"metrics,omitempty"`
	// Evaluations are each contributor's figures for the round's parent
	// model (and its personal model) on its own test split, signed by it.
	Evaluations map[string]map[string]float64 `json:"evaluations,omitempty"`
	CommittedAt time.Time                     `json:"committed_at"`
	Submitter   string                        `json:"submitter"`
	// Excluded are the sites whose contributions were past the study's
	// norm bound and left out; Flags the anomaly detector's flags by site
	// (both the coordinator's word).
	Excluded []string          `json:"norm_excluded,omitempty"`
	Flags    map[string]string `json:"anomaly_flags,omitempty"`
}

// ReportContribution is one hospital's signed contribution to a round.
type ReportContribution struct {
	Site         string `json:"site"`
	Samples      uint64 `json:"samples"`
	Update       string `json:"update_sha256"`
	DataManifest string `json:"data_manifest_sha256"`
}

// NewReport summarises a verified lineage for model.
func NewReport(l *Lineage, model Hash) *Report {
	study := l.StudyRecord.Record
	r := &Report{Verified: true, Study: l.Study, Model: hexOf(model), Initial: hexOf(l.Initial),
		Log: l.Checkpoint.Origin, TreeSize: l.Checkpoint.Size, Root: hex.EncodeToString(l.Checkpoint.Root[:]), Signers: l.Signers,
		Mode: "plaintext", StudyIndex: l.StudyRecord.Index, CreatedBy: study.SubmitterID, ApprovedSites: study.ApprovedSites,
		MinContributors: study.MinContributors, RoundsAllowed: study.Rounds, Strategy: study.Strategy, Parameters: study.Hyperparameters}
	if study.HEParamsID != "" {
		r.Mode, r.HEParams, r.Threshold = "secure", study.HEParamsID, study.Threshold
	}
	if b, err := DPBudgetOf(study); err == nil && b != nil {
		var last uint64
		if n := len(l.Steps); n > 0 {
			last = l.Steps[n-1].Record.Round
		}
		spent, _ := b.Spent(int(last))
		r.DP = &ReportDP{Level: b.Level, EpsilonSpent: spent, EpsilonBudget: b.Epsilon, Delta: b.Delta, NoiseMultiplier: b.NoiseMultiplier,
			ClipNorm: b.ClipNorm, SampleRate: b.SampleRate, StepsPerRound: b.StepsPerRound, Rounds: last}
	}
	if k := l.KeySetup; k != nil {
		r.KeySetupIndex, r.CollectiveKey = k.Index, hexOf(k.Record.CollectiveKeyHash)
		for _, h := range k.Record.KeyHolders {
			r.KeyHolders = append(r.KeyHolders, h.Site)
		}
	}
	for _, m := range l.Membership {
		r.Exclusions = append(r.Exclusions, ReportExclusion{Site: m.Record.MemberID, From: m.Record.Round, By: m.Record.SubmitterID,
			Reason: m.Record.Param(ParamReason), Readmitted: !m.Record.MemberRemoved, Index: m.Index})
	}
	sites := map[string]bool{}
	for _, s := range l.Steps {
		rec := s.Record
		rr := ReportRound{Round: rec.Round, Index: s.Index, Parent: hexOf(rec.ParentModel), Output: hexOf(rec.OutputModel),
			Samples: map[string]uint64{}, Aggregate: hexOf(rec.AggregateHash), Countersigners: []string{},
			OptimizerBefore: hexOf(rec.OptimizerBefore), OptimizerAfter: hexOf(rec.OptimizerAfter), Metrics: map[string]float64{},
			CommittedAt: time.Unix(0, rec.TimestampUnixNs).UTC(), Submitter: rec.SubmitterID}
		for _, c := range rec.Contributions {
			rr.Sites = append(rr.Sites, c.Site)
			rr.Samples[c.Site] = c.Samples
			rr.Contributions = append(rr.Contributions, ReportContribution{Site: c.Site, Samples: c.Samples,
				Update: hexOf(c.UpdateHash), DataManifest: hexOf(c.DataManifest)})
			sites[c.Site] = true
		}
		for _, d := range rec.DecryptionShares {
			rr.Decryptors = append(rr.Decryptors, d.Site)
		}
		for _, c := range rec.Countersignatures {
			rr.Countersigners = append(rr.Countersigners, c.Site)
		}
		for _, m := range rec.Metrics {
			rr.Metrics[m.Name] = m.Value
		}
		for _, p := range rec.Hyperparameters {
			switch {
			case p.Name == ParamExcluded && p.Value != "":
				rr.Excluded = strings.Split(p.Value, ",")
			case strings.HasPrefix(p.Name, ParamAnomalyPrefix):
				if rr.Flags == nil {
					rr.Flags = map[string]string{}
				}
				rr.Flags[strings.TrimPrefix(p.Name, ParamAnomalyPrefix)] = p.Value
			}
		}
		for _, e := range rec.Evaluations {
			if rr.Evaluations == nil {
				rr.Evaluations = map[string]map[string]float64{}
			}
			rr.Evaluations[e.Site] = map[string]float64{}
			for _, m := range e.Metrics {
				rr.Evaluations[e.Site][m.Name] = m.Value
			}
		}
		r.Rounds = append(r.Rounds, rr)
	}
	for s := range sites {
		r.Sites = append(r.Sites, s)
	}
	sort.Strings(r.Sites)
	return r
}

func hexOf(h Hash) string { return hex.EncodeToString(h[:]) }

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(r)
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "VERIFIED  model %s\n", r.Model)
	fmt.Fprintf(&b, "  study %q, %d completed rounds from initial model %s\n", r.Study, len(r.Rounds), short(r.Initial))
	fmt.Fprintf(&b, "  log %q: checkpoint of %d entries, root %s, signed by %s\n", r.Log, r.TreeSize, short(r.Root), strings.Join(r.Signers, ", "))
	fmt.Fprintf(&b, "  study rules (log #%d, created by %s): approved sites %s; K=%d contributors per round; at most %d rounds\n",
		r.StudyIndex, r.CreatedBy, strings.Join(r.ApprovedSites, ", "), r.MinContributors, r.RoundsAllowed)
	if r.Mode == "secure" {
		fmt.Fprintf(&b, "  updates encrypted under %s (secure aggregation, t=%d of %d key holders)\n", r.HEParams, r.Threshold, len(r.KeyHolders))
		fmt.Fprintf(&b, "  key setup (log #%d): collective key %s, key holders %s\n", r.KeySetupIndex, short(r.CollectiveKey), strings.Join(r.KeyHolders, ", "))
	} else {
		fmt.Fprintf(&b, "  updates were NOT encrypted (plaintext study)\n")
	}
	if len(r.Sites) > 0 {
		fmt.Fprintf(&b, "  sites: %s\n", strings.Join(r.Sites, ", "))
	}
	if d := r.DP; d != nil && d.Level == DPClient {
		fmt.Fprintf(&b, "  client-level differential privacy (DP-FedAvg): ε spent %.3f of the budget %g per hospital (δ = %g) over %d rounds (σ = %g, update clip norm %g)\n",
			d.EpsilonSpent, d.EpsilonBudget, d.Delta, d.Rounds, d.NoiseMultiplier, d.ClipNorm)
	} else if d != nil {
		fmt.Fprintf(&b, "  differential privacy: ε spent %.3f of the budget %g per hospital (δ = %g) over %d rounds of %d DP-SGD steps (σ = %g, clip %g, sampling rate %g)\n",
			d.EpsilonSpent, d.EpsilonBudget, d.Delta, d.Rounds, d.StepsPerRound, d.NoiseMultiplier, d.ClipNorm, d.SampleRate)
	}
	if r.Strategy != "" {
		line := "  strategy " + r.Strategy
		for i, p := range r.Parameters {
			sep := " "
			if i == 0 {
				sep = "; "
			}
			line += sep + p.Name + "=" + p.Value
		}
		fmt.Fprintln(&b, line)
	}
	for _, e := range r.Exclusions {
		verb := "excluded"
		if e.Readmitted {
			verb = "readmitted"
		}
		fmt.Fprintf(&b, "  %s %s from round %d (log #%d, signed by admin %s): %s\n", verb, e.Site, e.From, e.Index, e.By, e.Reason)
	}
	for _, rr := range r.Rounds {
		fmt.Fprintf(&b, "  round %d (log #%d, %s by %s): %s -> %s\n", rr.Round, rr.Index, rr.CommittedAt.Format(time.RFC3339), rr.Submitter, short(rr.Parent), short(rr.Output))
		var cs []string
		for _, c := range rr.Contributions {
			cs = append(cs, fmt.Sprintf("%s (%d samples, data %s)", c.Site, c.Samples, short(c.DataManifest)))
		}
		fmt.Fprintf(&b, "    contributors: %s\n", strings.Join(cs, ", "))
		if len(rr.Decryptors) > 0 {
			fmt.Fprintf(&b, "    decrypted by: %s\n", strings.Join(rr.Decryptors, ", "))
		}
		fmt.Fprintf(&b, "    countersigned by: %s\n", strings.Join(rr.Countersigners, ", "))
		fmt.Fprintf(&b, "    optimizer state %s -> %s\n", short(rr.OptimizerBefore), short(rr.OptimizerAfter))
		if len(rr.Evaluations) > 0 {
			var es []string
			for _, site := range slices.Sorted(maps.Keys(rr.Evaluations)) {
				e := rr.Evaluations[site]
				s := fmt.Sprintf("%s %.3f", site, e["global_test_accuracy"])
				if p, ok := e["personal_test_accuracy"]; ok {
					s += fmt.Sprintf(" (personal %.3f)", p)
				}
				es = append(es, s)
			}
			fmt.Fprintf(&b, "    parent model's test accuracy, signed by each site: %s\n", strings.Join(es, ", "))
		}
		if len(rr.Excluded) > 0 {
			fmt.Fprintf(&b, "    left out, past the norm bound: %s\n", strings.Join(rr.Excluded, ", "))
		}
		for _, site := range slices.Sorted(maps.Keys(rr.Flags)) {
			fmt.Fprintf(&b, "    anomaly flagged at %s: %s\n", site, rr.Flags[site])
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
