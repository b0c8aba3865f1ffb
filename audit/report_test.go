package audit_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

func TestReport(t *testing.T) {
	for _, c := range []struct {
		name   string
		f      *audittest.Fixture
		rounds int
		text   []string
	}{
		{"secure", audittest.NewSecureFixture(t), 2, []string{
			`study "heart", 2 completed rounds from initial model 00aa00000000`,
			"study rules (log #0, created by admin): approved sites site-a, site-b, site-c; K=2 contributors per round; at most 64 rounds",
			"updates encrypted under ckks-n14-q2x60-seeded/v2 (secure aggregation, t=2 of 3 key holders)",
			"key setup (log #1): collective key ",
			"key holders site-a, site-b, site-c",
			"round 2 (log #3, ",
			"by coord): 01aa00000000 -> 02aa00000000",
			"contributors: site-a (110 samples, data ",
			"decrypted by: site-a, site-b",
			"countersigned by: site-a, site-b",
			"optimizer state 000000000000 -> ",
		}},
		// The mode comes from the study, not from a round: a secure study's
		// initial model, with no round yet, still says it is encrypted.
		{"secure, initial model", audittest.NewSecureFixture(t), 0, []string{
			"0 completed rounds",
			"updates encrypted under ckks-n14-q2x60-seeded/v2 (secure aggregation, t=2 of 3 key holders)",
		}},
		{"plaintext", audittest.NewFixture(t), 1, []string{
			"updates were NOT encrypted (plaintext study)",
			"round 1 (log #1, ",
			"countersigned by: site-a, site-b",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newBundleFixture(t, c.f, c.rounds)
			m := model(byte(c.rounds))
			lin, err := audit.VerifyBundle(f.bundle, f.trust, "heart", m)
			if err != nil {
				t.Fatal(err)
			}
			rep := audit.NewReport(lin, m)
			var text bytes.Buffer
			if err := rep.WriteText(&text); err != nil {
				t.Fatal(err)
			}
			for _, want := range c.text {
				if !strings.Contains(text.String(), want) {
					t.Errorf("report text lacks %q:\n%s", want, text.String())
				}
			}
			if strings.Contains(text.String(), "NOT encrypted") == strings.HasPrefix(c.name, "secure") {
				t.Errorf("report text states the wrong mode:\n%s", text.String())
			}
			var js bytes.Buffer
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(js.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"verified", "study", "model_sha256", "initial_model_sha256", "log", "tree_size", "root",
				"checkpoint_signers", "rounds", "sites", "mode", "min_contributors", "rounds_allowed", "approved_sites", "study_log_index"} {
				if _, ok := got[k]; !ok {
					t.Errorf("JSON report lacks %q:\n%s", k, js.String())
				}
			}
			if strings.HasPrefix(c.name, "secure") {
				if got["he_params"] != audittest.HEParams || got["threshold"] != 2.0 || got["mode"] != "secure" || got["collective_key_sha256"] == nil {
					t.Errorf("secure study JSON:\n%s", js.String())
				}
			} else if got["he_params"] != nil || got["mode"] != "plaintext" {
				t.Errorf("plaintext study JSON:\n%s", js.String())
			}
			if c.rounds > 0 {
				r0 := got["rounds"].([]any)[0].(map[string]any)
				for _, k := range []string{"round", "log_index", "parent_sha256", "output_sha256", "sites", "samples", "contributions",
					"aggregate_sha256", "countersigners", "optimizer_before_sha256", "optimizer_after_sha256", "committed_at", "submitter"} {
					if _, ok := r0[k]; !ok {
						t.Errorf("JSON round lacks %q:\n%s", k, js.String())
					}
				}
				if cs := r0["contributions"].([]any); len(cs) != 2 || cs[0].(map[string]any)["data_manifest_sha256"] == "" {
					t.Errorf("JSON contributions %v", cs)
				}
			}
			t.Logf("\n%s", text.String())
		})
	}
}
