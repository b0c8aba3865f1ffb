package console

import (
	"bytes"
	"context"
	"encoding/hex"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/model"
)

func newAuditHandler(t *testing.T, n *fakeNode, mod func(*AuditNodeConfig)) http.Handler {
	t.Helper()
	cfg := AuditNodeConfig{Node: n, Trust: n.f.trustFunc, PageSize: 2}
	if mod != nil {
		mod(&cfg)
	}
	h, err := NewAuditNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// form is a multipart body with the given fields and, when file is not
// nil, a "model" file.
func form(t *testing.T, fields map[string]string, file []byte) (*bytes.Buffer, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range fields {
		w.WriteField(k, v)
	}
	if file != nil {
		fw, err := w.CreateFormFile("model", "model.flm")
		if err != nil {
			t.Fatal(err)
		}
		fw.Write(file)
	}
	w.Close()
	return &b, w.FormDataContentType()
}

// TestAuditNodePages: every page of the log explorer, the figures it
// shows, and what it answers to bad input.
func TestAuditNodePages(t *testing.T) {
	f := newLogFixture(t)
	n := newFakeNode(f)
	h := newAuditHandler(t, n, nil)
	size := f.L.Log().Size() // study, key setup, 3 rounds
	if size != 5 {
		t.Fatalf("fixture log of %d entries", size)
	}
	for _, tc := range []struct {
		method, target string
		status         int
		want           []string
	}{
		{"GET", "/", 200, []string{`id="tree-size">5<`, `data-study="heart"`, `class="num completed">2<`, `class="num failed">1<`}},
		{"GET", "/entries", 200, []string{`page 1 of 3`, `data-index="0"`, `data-index="1"`, `study-created`, `href="/entries?page=2"`}},
		{"GET", "/entries?page=3", 200, []string{`data-index="4"`, `round-completed`, `href="/entries?page=2"`}},
		{"GET", "/entries?page=0", 400, []string{"want a page number from 1 to 3"}},
		{"GET", "/entries?page=two", 400, []string{"want a page number"}},
		{"GET", "/entries?page=4", 404, []string{"the log has 5 entries"}},
		{"GET", "/entries/2", 200, []string{`id="proof-result" class="verdict ok">VERIFIED<`, `id="proof-size">5<`, "Contributions", "site-a", "test_n"}},
		{"GET", "/entries/0", 200, []string{`>VERIFIED<`, "study-created"}},
		{"GET", "/entries/5", 404, []string{"this replica has 5 entries"}},
		{"GET", "/entries/-1", 400, []string{"want an index"}},
		{"GET", "/entries/01", 400, []string{"want an index"}},
		{"GET", "/entries/x", 400, []string{"want an index"}},
		{"GET", "/checkpoints", 200, []string{`id="checkpoint-size">5<`, `data-count="2"`, "audit-1, audit-2", `id="no-evidence"`}},
		{"GET", "/verify", 200, []string{`enctype="multipart/form-data"`, "256 MiB"}},
		{"GET", "/nothing", 404, []string{"no page /nothing"}},
		{"DELETE", "/entries", 405, nil},
		{"GET", "/static/console.css", 200, []string{"--accent"}},
		{"GET", "/static/", 404, nil},
		{"GET", "/static/nope.css", 404, nil},
	} {
		status, body := get(t, h, tc.method, tc.target, nil, "")
		if status != tc.status {
			t.Errorf("%s %s: %d, want %d\n%s", tc.method, tc.target, status, tc.status, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("%s %s: no %q in\n%s", tc.method, tc.target, w, body)
			}
		}
	}
	// The checkpoints page remembers what it saw and checks each new
	// checkpoint extends the one before.
	f.MustApply(t, f.Coord, f.Round(4, f.final, audittest.Output(4), "site-a", "site-c"))
	if _, body := get(t, h, "GET", "/checkpoints", nil, ""); !strings.Contains(body, "extends size 5 (consistency proof of") {
		t.Errorf("second checkpoint: no consistency check in\n%s", body)
	}
}

// TestAuditNodeProofFailures: a checkpoint the trust does not accept, or
// none at all, is a FAILED proof with the reason, never VERIFIED.
func TestAuditNodeProofFailures(t *testing.T) {
	f := newLogFixture(t)
	n := newFakeNode(f)
	// One signature where the trust wants two.
	strict := newAuditHandler(t, n, func(c *AuditNodeConfig) {
		c.Trust = func(context.Context) (audit.Trust, error) {
			tr := f.trust
			tr.Quorum = 3
			return tr, nil
		}
	})
	status, body := get(t, strict, "GET", "/entries/2", nil, "")
	if status != 200 || !strings.Contains(body, `>FAILED<`) || !strings.Contains(body, "lacks a quorum") {
		t.Errorf("quorum 3 of 2: %d\n%s", status, body)
	}
	// Another log's checkpoint.
	other := newAuditHandler(t, n, func(c *AuditNodeConfig) {
		c.Trust = func(context.Context) (audit.Trust, error) {
			tr := f.trust
			tr.Origin = "another/log"
			return tr, nil
		}
	})
	if _, body := get(t, other, "GET", "/entries/2", nil, ""); !strings.Contains(body, `>FAILED<`) || !strings.Contains(body, `trusted log is "another/log"`) {
		t.Errorf("other origin:\n%s", body)
	}
	n.cpErr = errDown
	h := newAuditHandler(t, n, nil)
	if _, body := get(t, h, "GET", "/entries/2", nil, ""); !strings.Contains(body, `>FAILED<`) || !strings.Contains(body, "no cosigned checkpoint now") {
		t.Errorf("no checkpoint:\n%s", body)
	}
	if _, body := get(t, h, "GET", "/checkpoints", nil, ""); !strings.Contains(body, `id="checkpoint-error"`) {
		t.Errorf("checkpoints without one:\n%s", body)
	}
	if status, body := get(t, h, "POST", "/verify", strings.NewReader("sha256="+hex.EncodeToString(f.final[:])), "application/x-www-form-urlencoded"); status != 503 {
		t.Errorf("verify without a checkpoint: %d\n%s", status, body)
	}
}

// TestAuditNodeUnhealthy: a replica that is not healthy serves no page
// of its entries.
func TestAuditNodeUnhealthy(t *testing.T) {
	n := newFakeNode(newLogFixture(t))
	n.state = "recovering"
	h := newAuditHandler(t, n, nil)
	for _, p := range []string{"/", "/entries", "/entries/1", "/checkpoints", "/verify"} {
		if status, body := get(t, h, "GET", p, nil, ""); status != 503 || !strings.Contains(body, "replica is recovering") {
			t.Errorf("%s: %d\n%s", p, status, body)
		}
	}
	if status, _ := get(t, h, "GET", "/static/console.css", nil, ""); status != 200 {
		t.Errorf("stylesheet of an unhealthy node: %d", status)
	}
}

// TestVerifyPage: a model named by its SHA-256 or uploaded is VERIFIED
// only if the log accounts for it, with `fedledger verify`'s reason
// otherwise; bad requests are 400 and 413.
func TestVerifyPage(t *testing.T) {
	f := newLogFixture(t)
	n := newFakeNode(f)
	h := newAuditHandler(t, n, func(c *AuditNodeConfig) { c.MaxUpload = 4 << 10 })
	final := hex.EncodeToString(f.final[:])
	realModel, err := model.Encode(model.Spec{Kind: "logreg", Inputs: 2}, []float64{0.1, 0.2, 0.3})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		fields map[string]string
		file   []byte
		status int
		want   []string
	}{
		{"the final model's hash", map[string]string{"sha256": final}, nil, 200,
			[]string{`id="verdict">VERIFIED<`, `id="report-study">heart<`, `id="report-rounds">2<`, `data-round="3"`, "ε spent"}},
		{"upper case and the study", map[string]string{"sha256": strings.ToUpper(final), "study": "heart"}, nil, 200, []string{`>VERIFIED<`}},
		{"an intermediate model", map[string]string{"sha256": hx(audittest.Output(1))}, nil, 200, []string{`>VERIFIED<`, `id="report-rounds">1<`}},
		{"an unknown model", map[string]string{"sha256": strings.Repeat("ab", 32)}, nil, 200, []string{`id="verdict">FAILED<`, "not the output of any record"}},
		{"the wrong study", map[string]string{"sha256": final, "study": "other"}, nil, 200, []string{`>FAILED<`, `study "other" not in bundle`}},
		{"a file that is no model", nil, []byte("hello"), 200, []string{`>FAILED<`, "model.flm is not a fedledger model file"}},
		{"a model the log does not hold", nil, realModel, 200, []string{`>FAILED<`, "not the output of any record", `id="model-sha256"`}},
		{"nothing", nil, nil, 400, []string{"give a model file or its SHA-256"}},
		{"a short hash", map[string]string{"sha256": "abc"}, nil, 400, []string{"want 64 hex digits"}},
		{"not hex", map[string]string{"sha256": strings.Repeat("zz", 32)}, nil, 400, []string{"want 64 hex digits"}},
		{"a bad study id", map[string]string{"sha256": final, "study": "No Such/Study"}, nil, 400, []string{"not a valid study id"}},
		{"an empty file", nil, []byte{}, 400, []string{"empty"}},
		{"too large", nil, bytes.Repeat([]byte{1}, 8<<10), 413, []string{"larger than 4 KiB"}},
	} {
		body, ct := form(t, tc.fields, tc.file)
		status, page := get(t, h, "POST", "/verify", body, ct)
		if status != tc.status {
			t.Errorf("%s: %d, want %d\n%s", tc.name, status, tc.status, page)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(page, w) {
				t.Errorf("%s: no %q in\n%s", tc.name, w, page)
			}
		}
		if tc.status == 200 && strings.Contains(page, ">VERIFIED<") == strings.Contains(page, ">FAILED<") {
			t.Errorf("%s: the page must say exactly one of VERIFIED and FAILED", tc.name)
		}
	}
	// A bundle whose entries do not hash to the checkpoint fails, whatever
	// the model.
	n.tamper = func(b *audit.Bundle) { b.Leaves[2] = bytes.Clone(b.Leaves[2]); b.Leaves[2][len(b.Leaves[2])-1] ^= 1 }
	body, ct := form(t, map[string]string{"sha256": final}, nil)
	if status, page := get(t, h, "POST", "/verify", body, ct); status != 200 || !strings.Contains(page, ">FAILED<") || !strings.Contains(page, "entry 2") {
		t.Errorf("tampered log: %d\n%s", status, page)
	}
	if _, err := NewAuditNode(AuditNodeConfig{Node: n}); err == nil {
		t.Error("a console without a trust was made")
	}
}

func hx(h audit.Hash) string { return hex.EncodeToString(h[:]) }
