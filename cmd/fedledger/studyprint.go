package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/fedledger/fedledger/proto"
)

// What `study list` and `study status` print. Hashes are hex, as in every
// other output of the binary (verify's report, the coordinator's log).

// studyJSON is one study of `study list --json`.
type studyJSON struct {
	Study           string   `json:"study"`
	CreatedBy       string   `json:"created_by"`
	ApprovedSites   []string `json:"approved_sites"`
	MinContributors uint32   `json:"min_contributors"`
	RoundsAllowed   uint32   `json:"rounds_allowed"`
	Expires         string   `json:"expires,omitempty"`
	// Mode is "secure" (HEParams, Threshold) or "plaintext".
	Mode          string   `json:"mode"`
	HEParams      string   `json:"he_params,omitempty"`
	Threshold     uint32   `json:"threshold,omitempty"`
	KeySetupDone  bool     `json:"key_setup_done"`
	KeyHolders    []string `json:"key_holders,omitempty"`
	CollectiveKey string   `json:"collective_key_sha256,omitempty"`
	// LastRound is the last recorded round, completed or failed.
	LastRound       uint64 `json:"last_round"`
	RoundsCompleted uint32 `json:"rounds_completed"`
	RoundsFailed    uint32 `json:"rounds_failed"`
	LatestModel     string `json:"latest_model_sha256"`
	OptimizerState  string `json:"optimizer_state_sha256,omitempty"`
}

func studyView(s *pb.StudySummary) studyJSON {
	v := studyJSON{Study: s.StudyId, CreatedBy: s.CreatedBy, ApprovedSites: s.ApprovedSites, MinContributors: s.MinContributors,
		RoundsAllowed: s.Rounds, Mode: "plaintext", KeySetupDone: s.KeySetupDone, KeyHolders: s.KeyHolders,
		CollectiveKey: hex.EncodeToString(s.CollectiveKeySha256), LastRound: s.LastRound, RoundsCompleted: s.RoundsCompleted,
		RoundsFailed: s.RoundsFailed, LatestModel: hex.EncodeToString(s.LatestModelSha256), OptimizerState: hex.EncodeToString(s.OptimizerStateSha256)}
	if s.Secure {
		v.Mode, v.HEParams, v.Threshold = "secure", s.HeParams, s.Threshold
	}
	if s.ExpiresUnixNanos != 0 {
		v.Expires = time.Unix(0, s.ExpiresUnixNanos).UTC().Format(time.RFC3339)
	}
	if v.ApprovedSites == nil {
		v.ApprovedSites = []string{}
	}
	return v
}

// printStudies writes the studies on the log as a table, one row each, or
// as JSON.
func printStudies(w io.Writer, studies []*pb.StudySummary, asJSON bool) error {
	if asJSON {
		out := make([]studyJSON, 0, len(studies))
		for _, s := range studies {
			out = append(out, studyView(s))
		}
		return writeJSON(w, out)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STUDY\tCREATED BY\tROUND\tDONE\tFAILED\tK\tMODE\tKEY HOLDERS\tLATEST MODEL\tSITES")
	for _, s := range studies {
		v := studyView(s)
		mode := "plaintext"
		holders := "-"
		if s.Secure {
			mode = fmt.Sprintf("secure:%s,t=%d", s.HeParams, s.Threshold)
			holders = "pending"
			if s.KeySetupDone {
				holders = strings.Join(s.KeyHolders, ",")
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", s.StudyId, s.CreatedBy, s.LastRound, s.Rounds,
			s.RoundsCompleted, s.RoundsFailed, s.MinContributors, mode, holders, short(v.LatestModel), strings.Join(s.ApprovedSites, ","))
	}
	return tw.Flush()
}

// statusJSON is `study status --json`.
type statusJSON struct {
	Study                  string   `json:"study"`
	Mode                   string   `json:"mode"`
	Phase                  string   `json:"phase"`
	Round                  uint64   `json:"round"`
	Rounds                 uint32   `json:"rounds"`
	Connected              []string `json:"connected"`
	Reported               []string `json:"reported"`
	RoundsCompleted        uint32   `json:"rounds_completed"`
	RoundsFailed           uint32   `json:"rounds_failed"`
	LastTrainLoss          float64  `json:"last_train_loss"`
	LastParentTestAccuracy float64  `json:"last_parent_test_accuracy"`
	LatestModel            string   `json:"latest_model_sha256,omitempty"`
	// WaitingFor says why the study is not moving, when it is waiting.
	WaitingFor string `json:"waiting_for,omitempty"`
	Failure    string `json:"failure,omitempty"`
	// Once the study has ended: the final model's path on the
	// coordinator's host and each site's metrics of it.
	FinalModelPath string            `json:"final_model_path,omitempty"`
	FinalTest      []siteMetricsJSON `json:"final_test,omitempty"`
	// LastRound: the last committed round's start model (and the sites'
	// personal models) on each contributing site's test split.
	LastRound []siteMetricsJSON `json:"last_round,omitempty"`
	// A DP study's budget per hospital, at its δ, and the ε spent.
	DPEpsilonBudget float64 `json:"dp_epsilon_budget,omitempty"`
	DPDelta         float64 `json:"dp_delta,omitempty"`
	DPEpsilonSpent  float64 `json:"dp_epsilon_spent,omitempty"`
	// The last committed round's anomaly flags (site: reason) and the
	// sites its norm check left out.
	LastFlags    map[string]string `json:"last_anomaly_flags,omitempty"`
	LastExcluded []string          `json:"last_norm_excluded,omitempty"`
	// Exclusions: the sites an admin excluded from the study's rounds.
	Exclusions []exclusionJSON `json:"exclusions,omitempty"`
}

type exclusionJSON struct {
	Site      string `json:"site"`
	FromRound uint64 `json:"from_round"`
	By        string `json:"by"`
	Reason    string `json:"reason"`
}

type siteMetricsJSON struct {
	Site     string  `json:"site"`
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	AUC      float64 `json:"auc"`
	N        uint64  `json:"n"`
	// Personal: the site's personal model made from the final model.
	Personal *personalJSON `json:"personal,omitempty"`
}

type personalJSON struct {
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	AUC      float64 `json:"auc"`
}

func statusView(s *pb.StudyStatus) statusJSON {
	v := statusJSON{Study: s.StudyId, Mode: s.Mode, Phase: s.Phase, Round: s.Round, Rounds: s.Rounds, Connected: s.Connected,
		Reported: s.Reported, RoundsCompleted: s.RoundsCompleted, RoundsFailed: s.RoundsFailed, LastTrainLoss: s.LastTrainLoss,
		LastParentTestAccuracy: s.LastParentTestAccuracy, LatestModel: hex.EncodeToString(s.LatestModelSha256),
		WaitingFor: s.WaitingFor, Failure: s.Failure, FinalModelPath: s.FinalModelPath,
		DPEpsilonBudget: s.DpEpsilonBudget, DPDelta: s.DpDelta, DPEpsilonSpent: s.DpEpsilonSpent, LastExcluded: s.LastExcluded}
	for _, x := range s.Exclusions {
		v.Exclusions = append(v.Exclusions, exclusionJSON{Site: x.Site, FromRound: x.FromRound, By: x.By, Reason: x.Reason})
	}
	for _, f := range s.LastFlags {
		if v.LastFlags == nil {
			v.LastFlags = map[string]string{}
		}
		v.LastFlags[f.Site] = f.Reason
	}
	if v.Connected == nil {
		v.Connected = []string{}
	}
	if v.Reported == nil {
		v.Reported = []string{}
	}
	view := func(ms []*pb.SiteMetrics) []siteMetricsJSON {
		var out []siteMetricsJSON
		for _, m := range ms {
			t := m.GetTest()
			sm := siteMetricsJSON{Site: m.Site, Loss: t.GetLoss(), Accuracy: t.GetAccuracy(), AUC: t.GetAuc(), N: t.GetN()}
			if p := m.GetPersonal(); p != nil {
				sm.Personal = &personalJSON{Loss: p.GetLoss(), Accuracy: p.GetAccuracy(), AUC: p.GetAuc()}
			}
			out = append(out, sm)
		}
		return out
	}
	v.FinalTest, v.LastRound = view(s.FinalTest), view(s.LastRound)
	return v
}

// printStatus writes a study's status from its coordinator: where it
// stands, what it waits for, and once it has ended the final model and
// each site's results.
func printStatus(w io.Writer, s *pb.StudyStatus, asJSON bool) error {
	if asJSON {
		return writeJSON(w, statusView(s))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "study %q (%s): %s, round %d of %d\n", s.StudyId, s.Mode, s.Phase, s.Round, s.Rounds)
	fmt.Fprintf(&b, "  connected: %s\n  reported this round: %s\n", strings.Join(s.Connected, ", "), strings.Join(s.Reported, ", "))
	fmt.Fprintf(&b, "  rounds completed %d, failed %d; last train loss %.4f, last start-model test accuracy %.3f\n",
		s.RoundsCompleted, s.RoundsFailed, s.LastTrainLoss, s.LastParentTestAccuracy)
	if len(s.LatestModelSha256) > 0 {
		fmt.Fprintf(&b, "  latest model %s\n", hex.EncodeToString(s.LatestModelSha256))
	}
	if s.DpEpsilonBudget > 0 {
		fmt.Fprintf(&b, "  differential privacy: each hospital has spent ε = %.3f of its budget %g (δ = %g); %.3f left\n",
			s.DpEpsilonSpent, s.DpEpsilonBudget, s.DpDelta, max(0, s.DpEpsilonBudget-s.DpEpsilonSpent))
	}
	if s.WaitingFor != "" {
		fmt.Fprintf(&b, "  waiting for %s\n", s.WaitingFor)
	}
	if len(s.LastExcluded) > 0 {
		fmt.Fprintf(&b, "  last round left out, past the norm bound: %s\n", strings.Join(s.LastExcluded, ", "))
	}
	for _, f := range s.LastFlags {
		fmt.Fprintf(&b, "  last round's anomaly flag at %s: %s\n", f.Site, f.Reason)
	}
	for _, x := range s.Exclusions {
		fmt.Fprintf(&b, "  %s excluded from round %d by %s: %s\n", x.Site, x.FromRound, x.By, x.Reason)
	}
	if len(s.LastFlags) > 0 {
		fmt.Fprintf(&b, "  an admin may exclude a flagged site: fedledger study exclude %s SITE --reason TEXT\n", s.StudyId)
	}
	if s.Failure != "" {
		fmt.Fprintf(&b, "  failure: %s\n", s.Failure)
	}
	if s.FinalModelPath != "" {
		fmt.Fprintf(&b, "  final model (on the coordinator's host): %s\n", s.FinalModelPath)
	}
	sites := func(title string, ms []*pb.SiteMetrics) {
		if len(ms) == 0 {
			return
		}
		fmt.Fprintf(&b, "  %s on each site's own test split:\n", title)
		for _, m := range ms {
			t := m.GetTest()
			fmt.Fprintf(&b, "    %-20s test accuracy %.3f  AUC %.3f  loss %.4f  (%d examples)", m.Site, t.GetAccuracy(), t.GetAuc(), t.GetLoss(), t.GetN())
			if p := m.GetPersonal(); p != nil {
				fmt.Fprintf(&b, "; its personal model %.3f, AUC %.3f", p.GetAccuracy(), p.GetAuc())
			}
			b.WriteString("\n")
		}
	}
	sites("last round's start model", s.LastRound)
	sites("final model", s.FinalTest)
	_, err := io.WriteString(w, b.String())
	return err
}

func writeJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
