package audit

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Report is a verified lineage in a form for people and machines.
type Report struct {
	Verified   bool          `json:"verified"`
	Study      string        `json:"study"`
	Model      string        `json:"model_sha256"`
	Initial    string        `json:"initial_model_sha256"`
	Log        string        `json:"log"`
	TreeSize   int64         `json:"tree_size"`
	Root       string        `json:"root"`
	Signers    []string      `json:"checkpoint_signers"`
	Rounds     []ReportRound `json:"rounds"`
	Sites      []string      `json:"sites"`
	HEParams   string        `json:"he_params,omitempty"`
	Strategy   string        `json:"strategy,omitempty"`
	Parameters []Param       `json:"parameters,omitempty"`
}

// ReportRound is one completed round on the path to the model.
type ReportRound struct {
	Round       uint64             `json:"round"`
	Index       int64              `json:"log_index"`
	Parent      string             `json:"parent_sha256"`
	Output      string             `json:"output_sha256"`
	Sites       []string           `json:"sites"`
	Samples     map[string]uint64  `json:"samples"`
	Decryptors  []string           `json:"decryptors,omitempty"`
	Metrics     map[string]float64 `json:"metrics,omitempty"`
	CommittedAt time.Time          `json:"committed_at"`
	Submitter   string             `json:"submitter"`
}

// NewReport summarises a verified lineage for model.
func NewReport(l *Lineage, model Hash) *Report {
	r := &Report{Verified: true, Study: l.Study, Model: hex.EncodeToString(model[:]), Initial: hex.EncodeToString(l.Initial[:]),
		Log: l.Checkpoint.Origin, TreeSize: l.Checkpoint.Size, Root: hex.EncodeToString(l.Checkpoint.Root[:]), Signers: l.Signers}
	sites := map[string]bool{}
	for _, s := range l.Steps {
		rec := s.Record
		rr := ReportRound{Round: rec.Round, Index: s.Index, Parent: hex.EncodeToString(rec.ParentModel[:]), Output: hex.EncodeToString(rec.OutputModel[:]),
			Samples: map[string]uint64{}, Metrics: map[string]float64{},
			CommittedAt: time.Unix(0, rec.TimestampUnixNs).UTC(), Submitter: rec.SubmitterID}
		for _, c := range rec.Contributions {
			rr.Sites = append(rr.Sites, c.Site)
			rr.Samples[c.Site] = c.Samples
			sites[c.Site] = true
		}
		for _, d := range rec.DecryptionShares {
			rr.Decryptors = append(rr.Decryptors, d.Site)
		}
		for _, m := range rec.Metrics {
			rr.Metrics[m.Name] = m.Value
		}
		r.Rounds = append(r.Rounds, rr)
		r.HEParams, r.Strategy, r.Parameters = rec.HEParamsID, rec.Strategy, rec.Hyperparameters
	}
	for s := range sites {
		r.Sites = append(r.Sites, s)
	}
	sort.Strings(r.Sites)
	return r
}

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
	fmt.Fprintf(&b, "  sites: %s\n", strings.Join(r.Sites, ", "))
	if r.HEParams != "" {
		fmt.Fprintf(&b, "  updates encrypted under %s (secure aggregation)\n", r.HEParams)
	} else {
		fmt.Fprintf(&b, "  updates were NOT encrypted (plaintext study)\n")
	}
	if r.Strategy != "" {
		var ps []string
		for _, p := range r.Parameters {
			ps = append(ps, p.Name+"="+p.Value)
		}
		fmt.Fprintf(&b, "  strategy %s; %s\n", r.Strategy, strings.Join(ps, " "))
	}
	fmt.Fprintf(&b, "  round  log#  parent        output        sites (samples)                      decrypted by\n")
	for _, rr := range r.Rounds {
		var ss []string
		for _, s := range rr.Sites {
			ss = append(ss, fmt.Sprintf("%s(%d)", s, rr.Samples[s]))
		}
		fmt.Fprintf(&b, "  %5d  %4d  %s  %s  %-36s %s\n", rr.Round, rr.Index, short(rr.Parent), short(rr.Output), strings.Join(ss, " "), strings.Join(rr.Decryptors, ","))
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
