package console_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/console"
	"github.com/fedledger/fedledger/internal/console/consoletest"
	"github.com/fedledger/fedledger/internal/demo"
	"github.com/fedledger/fedledger/internal/logtest"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// browser starts headless Chromium for the test, and fails the test (it
// never skips) when there is none: .ci/run installs it.
func browser(t *testing.T, ctx context.Context) *consoletest.Browser {
	t.Helper()
	b, err := consoletest.NewBrowser(ctx, 1280, 900)
	if err != nil {
		t.Fatalf("the console's browser tests need Chromium: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// load opens url in tab and requires a 200 and a clean browser console.
func load(t *testing.T, tab *consoletest.Tab, url string) {
	t.Helper()
	status, err := tab.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK {
		t.Fatalf("%s: HTTP %d", url, status)
	}
	clean(t, tab, url)
}

func clean(t *testing.T, tab *consoletest.Tab, what string) {
	t.Helper()
	problems, err := tab.Problems()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range problems {
		t.Errorf("%s wrote to the browser's console: %s (%s:%d)", what, m, m.URL, m.Line)
	}
}

func text(t *testing.T, tab *consoletest.Tab, sel string) string {
	t.Helper()
	s, err := tab.Text(sel)
	if err != nil {
		t.Fatalf("%s: %v", sel, err)
	}
	return s
}

func attr(t *testing.T, tab *consoletest.Tab, sel, name string) string {
	t.Helper()
	s, err := tab.Attr(sel, name)
	if err != nil {
		t.Fatalf("%s[%s]: %v", sel, name, err)
	}
	return s
}

func count(t *testing.T, tab *consoletest.Tab, sel string) int {
	t.Helper()
	n, err := tab.Count(sel)
	if err != nil {
		t.Fatalf("%s: %v", sel, err)
	}
	return n
}

// floatAttr reads a data-value: the exact figure behind a rounded one.
func floatAttr(t *testing.T, tab *consoletest.Tab, sel string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(attr(t, tab, sel, "data-value"), 64)
	if err != nil {
		t.Fatalf("%s: %v", sel, err)
	}
	return v
}

func wantEq[T comparable](t *testing.T, what string, page, direct T) {
	t.Helper()
	if page != direct {
		t.Errorf("%s: the page says %v, read directly %v", what, page, direct)
	}
}

// TestConsolesInBrowser runs a real federation (the demo: four hospitals,
// three audit nodes, a secure study of three rounds under a DP budget;
// plaintext with -short),
// serves its consoles as `fedledger demo --serve` does, and reads every
// page in headless Chromium: each must load with nothing on the browser's
// console, and its figures must be those the test reads itself from the
// coordinator (StudyAdmin.Status) and the audit log (an export replayed
// through the rules). The verify page must say VERIFIED for the study's
// model and FAILED for a tampered copy.
func TestConsolesInBrowser(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	b := browser(t, ctx)
	dir := t.TempDir()
	var out bytes.Buffer
	cfg := demo.DefaultConfig()
	cfg.DataDir, cfg.Rounds, cfg.DPEpsilon, cfg.Personal, cfg.Out = dir, 3, 3, nil, &out
	if testing.Short() {
		// make test's second pass runs everything under the race
		// detector, where Lattigo's arithmetic is slow: the same pages
		// and checks on a plaintext study.
		cfg.Mode = coordinator.ModePlaintext
	}
	served := false
	start := time.Now()
	cfg.Serve = func(ctx context.Context, s demo.Served) error {
		served = true
		t.Logf("federation and study: %s", time.Since(start).Round(time.Millisecond))
		defer func(start time.Time) { t.Logf("browser checks: %s", time.Since(start).Round(time.Millisecond)) }(time.Now())
		checkConsoles(t, ctx, b, s, dir)
		return nil
	}
	var logs logtest.Buffer
	rep, err := demo.Run(ctx, cfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if t.Failed() || err != nil {
		t.Logf("demo output:\n%s\nlogs:\n%s", out.String(), logs.String())
	}
	if err != nil {
		t.Fatalf("demo: %v", err)
	}
	if !served || rep.Audit == nil || rep.Audit.DP == nil {
		t.Fatalf("served %v, report %+v", served, rep.Audit)
	}
}

func checkConsoles(t *testing.T, ctx context.Context, b *consoletest.Browser, s demo.Served, dir string) {
	fed := s.Federation
	const study = "heart-demo"
	// What the test reads itself. The demo's coordinator has stopped
	// serving gRPC with the study (fedtest's Wait); its StudyAdmin status
	// is the same call in process.
	status := fed.Coordinator().Status()
	reg, err := fed.AuditClient(fed.PKI.Regulator)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	studies, err := reg.ListStudies(ctx)
	if err != nil || len(studies) != 1 {
		t.Fatalf("studies %v, %v", studies, err)
	}
	bundle, err := fed.Export(ctx)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := fed.Audit.Trust.Trust()
	if err != nil {
		t.Fatal(err)
	}
	_, _, steps, err := audit.ReplayBundle(bundle, trust)
	if err != nil {
		t.Fatal(err)
	}
	var rounds []*audit.Record
	for _, st := range steps {
		if st.Record.StudyID == study && (st.Record.Kind == audit.KindRoundCompleted || st.Record.Kind == audit.KindRoundFailed) {
			rounds = append(rounds, st.Record)
		}
	}
	if len(rounds) != 3 {
		t.Fatalf("%d round records on the log, want 3", len(rounds))
	}
	node := fed.Audit.Nodes[0].Status()

	tab, err := b.NewTab()
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	if err := tab.DisableCache(); err != nil {
		t.Fatal(err)
	}

	t.Run("coordinator overview", func(t *testing.T) {
		load(t, tab, s.CoordinatorURL)
		wantEq(t, "rounds completed (status)", text(t, tab, "#status-rounds-completed"), fmt.Sprint(status.RoundsCompleted))
		wantEq(t, "rounds failed (status)", text(t, tab, "#status-rounds-failed"), fmt.Sprint(status.RoundsFailed))
		wantEq(t, "ε spent (status)", floatAttr(t, tab, "#status-dp-spent"), status.DpEpsilonSpent)
		wantEq(t, "phase", text(t, tab, "#status-phase"), status.Phase)
		row := `#studies tr[data-study="` + study + `"]`
		wantEq(t, "rounds completed (log summary)", text(t, tab, row+" td.completed"), fmt.Sprint(studies[0].RoundsCompleted))
		wantEq(t, "rounds failed (log summary)", text(t, tab, row+" td.failed"), fmt.Sprint(studies[0].RoundsFailed))
		wantEq(t, "final-test rows", count(t, tab, "#final-test tbody tr"), len(status.FinalTest))
	})

	t.Run("study", func(t *testing.T) {
		load(t, tab, s.CoordinatorURL+"studies/"+study)
		completed, lastEps := 0, 0.0
		for _, rec := range rounds {
			row := fmt.Sprintf(`#timeline tr[data-round="%d"]`, rec.Round)
			if rec.Kind == audit.KindRoundCompleted {
				completed++
				wantEq(t, "outcome", text(t, tab, row+" .outcome"), "completed")
			}
			wantEq(t, fmt.Sprintf("round %d contributors", rec.Round), attr(t, tab, row+" td.contributors", "data-count"), fmt.Sprint(len(rec.Contributions)))
			var acc, n float64
			for _, e := range rec.Evaluations {
				fig := map[string]float64{}
				for _, m := range e.Metrics {
					fig[m.Name] = m.Value
				}
				acc, n = acc+fig["test_n"]*fig["global_test_accuracy"], n+fig["test_n"]
			}
			if n == 0 {
				t.Fatalf("round %d has no signed evaluation", rec.Round)
			}
			if got, want := floatAttr(t, tab, row+" td.accuracy"), acc/n; abs(got-want) > 1e-12 {
				t.Errorf("round %d mean accuracy: the page says %v, the evaluations give %v", rec.Round, got, want)
			}
			for _, m := range rec.Metrics {
				if m.Name == audit.MetricDPEpsilon {
					lastEps = m.Value
					wantEq(t, fmt.Sprintf("round %d ε", rec.Round), floatAttr(t, tab, row+" td.epsilon"), m.Value)
				}
			}
		}
		wantEq(t, "rounds completed (log)", text(t, tab, "#rounds-completed"), fmt.Sprint(completed))
		wantEq(t, "ε spent (log)", floatAttr(t, tab, "#dp-spent"), lastEps)
		wantEq(t, "ε spent (log) = ε spent (status)", lastEps, status.DpEpsilonSpent)
		wantEq(t, "ε budget", floatAttr(t, tab, "#dp-budget"), 3.0)
		wantEq(t, "checkpoint size", text(t, tab, "#checkpoint-size"), fmt.Sprint(len(bundle.Leaves)))
		wantEq(t, "latest model", attr(t, tab, "#latest-model", "title"), hex.EncodeToString(studies[0].LatestModelSha256))
		wantEq(t, "accuracy chart dots", count(t, tab, "#chart-accuracy circle"), len(rounds))
		wantEq(t, "contribution bars", count(t, tab, "#chart-contributions rect"), len(rounds))
		wantEq(t, "ε chart dots", count(t, tab, "#chart-epsilon circle"), len(rounds))
		wantEq(t, "site rows", count(t, tab, "#sites tbody tr"), 4)
		wantEq(t, "cleveland's contributions", text(t, tab, `#sites tr[data-site="cleveland"] td.contributed`), fmt.Sprint(completed))
	})

	t.Run("audit node", func(t *testing.T) {
		load(t, tab, s.AuditURL)
		wantEq(t, "tree size", text(t, tab, "#tree-size"), fmt.Sprint(node.TreeSize))
		wantEq(t, "root", text(t, tab, "#tree-root"), hex.EncodeToString(node.Root))
		load(t, tab, s.AuditURL+"entries")
		wantEq(t, "entries listed", count(t, tab, "#entries tbody tr"), int(node.TreeSize))
		wantEq(t, "entry 2's kind", text(t, tab, `#entries tr[data-index="2"] td.kind`), rounds[0].Kind.String())
		load(t, tab, s.AuditURL+"entries/2")
		wantEq(t, "inclusion proof", text(t, tab, "#proof-result"), "VERIFIED")
		load(t, tab, s.AuditURL+"checkpoints")
		wantEq(t, "checkpoint size", text(t, tab, "#checkpoint-size"), fmt.Sprint(node.TreeSize))
		if n, _ := strconv.Atoi(attr(t, tab, "#checkpoint-signers", "data-count")); n < trust.Quorum {
			t.Errorf("%d cosigners, the trust needs %d", n, trust.Quorum)
		}
	})

	t.Run("through the proxy, over mutual TLS", func(t *testing.T) {
		// A deployment's console: mutual TLS with the node's certificate,
		// read by the regulator's browser through `fedledger console`.
		h, err := console.NewAuditNode(console.AuditNodeConfig{Node: console.Node(fed.Audit.Nodes[0]), Trust: console.TrustFile(fed.Audit.Trust)})
		if err != nil {
			t.Fatal(err)
		}
		pool := fed.PKI.CA.Pool()
		srv, err := console.Start(console.ServerConfig{Addr: "127.0.0.1:0", Identity: fed.PKI.AuditNodes[0], Roots: pool}, h)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		target, _ := url.Parse(srv.URL())
		ph, err := console.NewProxy(console.ProxyConfig{Target: target, TLS: tlsutil.ClientConfig(fed.PKI.Regulator, pool, "")})
		if err != nil {
			t.Fatal(err)
		}
		proxy, err := console.Start(console.ServerConfig{Addr: "127.0.0.1:0"}, ph)
		if err != nil {
			t.Fatal(err)
		}
		defer proxy.Close()
		load(t, tab, proxy.URL()+"entries/2")
		wantEq(t, "inclusion proof", text(t, tab, "#proof-result"), "VERIFIED")
		wantEq(t, "reader", text(t, tab, "#viewer"), "regulator (observer)")
	})

	t.Run("verify", func(t *testing.T) {
		modelFile := filepath.Join(dir, "final-model.flm")
		data, err := os.ReadFile(modelFile)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		tampered := filepath.Join(t.TempDir(), "tampered.flm")
		bad := bytes.Clone(data)
		bad[len(bad)-1] ^= 1 // the last weight's lowest bit: still a model file
		if err := os.WriteFile(tampered, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		check := func(name, file, sha, want, reason string) {
			t.Helper()
			load(t, tab, s.AuditURL+"verify")
			if file != "" {
				if err := tab.Upload("#model", file); err != nil {
					t.Fatal(err)
				}
			} else if err := tab.SetValue("#sha256", sha); err != nil {
				t.Fatal(err)
			}
			status, err := tab.Submit("#verify-submit")
			if err != nil || status != 200 {
				t.Fatalf("%s: HTTP %d, %v", name, status, err)
			}
			clean(t, tab, name)
			wantEq(t, name, text(t, tab, "#verdict"), want)
			if reason != "" {
				if r := text(t, tab, "#reason"); !strings.Contains(r, reason) {
					t.Errorf("%s: reason %q, want %q in it", name, r, reason)
				}
			}
		}
		check("the study's model", modelFile, "", "VERIFIED", "")
		wantEq(t, "model hash", text(t, tab, "#model-sha256"), hex.EncodeToString(sum[:]))
		wantEq(t, "rounds on its path", text(t, tab, "#report-rounds"), "3")
		wantEq(t, "ε in the report", floatAttr(t, tab, "#report-dp-spent"), status.DpEpsilonSpent)
		check("a tampered copy", tampered, "", "FAILED", "is not the output of any record")
		check("a file that is no model", filepath.Join(dir, "trust.json"), "", "FAILED", "is not a fedledger model file")
		check("the model's SHA-256", "", hex.EncodeToString(sum[:]), "VERIFIED", "")
	})
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestBrowserSeesConsoleProblems: the check every console page passes is
// not vacuous: a page with a missing stylesheet, a console.error and an
// exception shows all three.
func TestBrowserSeesConsoleProblems(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := browser(t, ctx)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, `<!doctype html><html><head><link rel="icon" href="data:,"><link rel="stylesheet" href="/missing.css"></head>`+
			`<body><script>console.error("boom"); null.x;</script></body></html>`)
	}))
	defer srv.Close()
	tab, err := b.NewTab()
	if err != nil {
		t.Fatal(err)
	}
	defer tab.Close()
	if _, err := tab.Open(srv.URL); err != nil {
		t.Fatal(err)
	}
	problems, err := tab.Problems()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range problems {
		got = append(got, m.String())
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{"error: boom", "exception: Uncaught TypeError", "missing.css"} {
		if !strings.Contains(all, want) {
			t.Errorf("no %q among the problems:\n%s", want, all)
		}
	}
}
