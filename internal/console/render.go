package console

import (
	"bytes"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fedledger/fedledger/audit"
)

//go:embed templates/*.html static/*
var assets embed.FS

// pages are the page templates, each with the shared layout and chart.
var pages = parsePages()

var funcs = template.FuncMap{
	"short":   shortHex,
	"hex":     func(b []byte) string { return hex.EncodeToString(b) },
	"hashhex": func(h audit.Hash) string { return hex.EncodeToString(h[:]) },
	"f3":      func(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) },
	"f4":      func(v float64) string { return strconv.FormatFloat(v, 'f', 4, 64) },
	// exact is a float as Go prints it shortest, for data-value
	// attributes a test (or a script reader) compares exactly.
	"exact": func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) },
	// pct rounds down, so that only a full budget reads 100%.
	"pct": func(v float64) string { return strconv.FormatFloat(math.Floor(1000*v)/10, 'f', 1, 64) + "%" },
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return "—"
		}
		return d.Round(time.Millisecond).String()
	},
	"join": func(s []string) string {
		if len(s) == 0 {
			return "—"
		}
		return strings.Join(s, ", ")
	},
	"add": func(a, b int) int { return a + b },
}

func parsePages() map[string]*template.Template {
	base := template.Must(template.New("").Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/chart.html"))
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" || name == "chart" {
			continue
		}
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(assets, n))
	}
	return out
}

// shortHex is the first 12 hex digits of a hash given as hex or bytes.
func shortHex(v any) string {
	var s string
	switch h := v.(type) {
	case string:
		s = h
	case []byte:
		s = hex.EncodeToString(h)
	case audit.Hash:
		s = hex.EncodeToString(h[:])
	default:
		s = fmt.Sprint(v)
	}
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// navItem is a link of a console's navigation bar.
type navItem struct {
	Href, Label string
	Current     bool
}

// page is what the layout renders around a page's body.
type page struct {
	Title   string
	Console string // "coordinator" or "audit node audit-1"
	Nav     []navItem
	// Viewer names who reads (their certificate), or says it is the
	// demo's loopback console.
	Viewer string
	Body   any
}

// render executes the page template name into w with status, buffered so
// that a template error is a clean 500, never half a page.
func render(w http.ResponseWriter, r *http.Request, status int, name string, p page, logger *slog.Logger) {
	t, ok := pages[name]
	if !ok {
		panic("console: no page template " + name)
	}
	if p.Viewer == "" {
		if v, ok := viewer(r); ok {
			p.Viewer = fmt.Sprintf("%s (%s)", v.ID, v.Role)
		} else {
			p.Viewer = "demo console: loopback, no sign-in"
		}
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", p); err != nil {
		if logger != nil {
			logger.Error("console page", slog.String("page", name), slog.Any("err", err))
		}
		http.Error(w, "console: the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

// errorBody is the error page's content.
type errorBody struct {
	Status  int
	Reason  string
	Message string
}

// renderError answers with an error page: the status and the reason.
func renderError(w http.ResponseWriter, r *http.Request, status int, msg string) {
	render(w, r, status, "error", page{Title: http.StatusText(status), Console: "fedledger console",
		Body: errorBody{Status: status, Reason: http.StatusText(status), Message: msg}}, nil)
}

// staticHandler serves the embedded stylesheet and icon.
func staticHandler() http.Handler {
	sub, err := fs.Sub(assets, "static")
	if err != nil {
		panic(err)
	}
	files := http.FileServerFS(sub)
	return http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			renderError(w, r, http.StatusNotFound, "no such file")
			return
		}
		w.Header().Set("Cache-Control", "max-age=3600")
		files.ServeHTTP(w, r)
	}))
}

// finite reports whether v is a number a page can print.
func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
