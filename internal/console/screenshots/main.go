// Command screenshots takes the README's pictures of the web consoles:
// it runs the demo with --serve (by default with a differential-privacy
// budget, so the privacy panel shows), opens the main pages in headless
// Chromium, fails if a page writes anything to the browser's console, and
// writes one PNG per page.
//
//	go run ./internal/console/screenshots -out docs/img
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedledger/fedledger/internal/console/consoletest"
	"github.com/fedledger/fedledger/internal/demo"
)

func main() {
	out := flag.String("out", "docs/img", "directory to write the PNG files to")
	rounds := flag.Int("rounds", 20, "the demo study's rounds")
	eps := flag.Float64("dp-epsilon", 3, "the demo study's privacy budget (0: no differential privacy)")
	width := flag.Int("width", 1280, "browser window width")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *out, *rounds, *eps, *width); err != nil {
		fmt.Fprintln(os.Stderr, "screenshots:", err)
		os.Exit(1)
	}
}

// shot is one page to photograph.
type shot struct {
	file, url string
	// before runs on the loaded page (fills a form, submits it).
	before func(t *consoletest.Tab) error
}

func run(ctx context.Context, out string, rounds int, eps float64, width int) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "fedledger-screenshots-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b, err := consoletest.NewBrowser(ctx, width, 900)
	if err != nil {
		return err
	}
	defer b.Close()
	cfg := demo.DefaultConfig()
	cfg.DataDir, cfg.Rounds, cfg.DPEpsilon, cfg.Out = dir, rounds, eps, io.Discard
	cfg.Serve = func(ctx context.Context, s demo.Served) error {
		model := filepath.Join(dir, "final-model.flm")
		shots := []shot{
			{file: "console-coordinator.png", url: s.CoordinatorURL},
			{file: "console-study.png", url: s.CoordinatorURL + "studies/heart-demo"},
			{file: "console-entries.png", url: s.AuditURL + "entries"},
			{file: "console-proof.png", url: s.AuditURL + "entries/2"},
			{file: "console-verify.png", url: s.AuditURL + "verify", before: func(t *consoletest.Tab) error {
				if err := t.Upload("#model", model); err != nil {
					return err
				}
				status, err := t.Submit("#verify-submit")
				if err == nil && status != 200 {
					err = fmt.Errorf("verify answered %d", status)
				}
				if err != nil {
					return err
				}
				if v, err := t.Text("#verdict"); err != nil || v != "VERIFIED" {
					return fmt.Errorf("verdict %q (%v), want VERIFIED", v, err)
				}
				return nil
			}},
		}
		for _, sh := range shots {
			if err := photograph(b, sh, filepath.Join(out, sh.file)); err != nil {
				return fmt.Errorf("%s: %w", sh.file, err)
			}
		}
		return nil
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	start := time.Now()
	if _, err := demo.Run(ctx, cfg, logger); err != nil {
		return err
	}
	fmt.Printf("screenshots of a %d-round demo in %s: %s\n", rounds, out, time.Since(start).Round(time.Second))
	return nil
}

// photograph loads sh.url in a fresh tab, runs sh.before, checks the page
// wrote nothing to the console, and writes its PNG to path.
func photograph(b *consoletest.Browser, sh shot, path string) error {
	t, err := b.NewTab()
	if err != nil {
		return err
	}
	defer t.Close()
	status, err := t.Open(sh.url)
	if err != nil {
		return err
	}
	if status != 200 {
		return fmt.Errorf("%s answered %d", sh.url, status)
	}
	if sh.before != nil {
		if err := sh.before(t); err != nil {
			return err
		}
	}
	p, err := t.Problems()
	if err != nil {
		return err
	}
	if len(p) > 0 {
		var lines []string
		for _, m := range p {
			lines = append(lines, m.String())
		}
		return errors.New("the page wrote to the console: " + strings.Join(lines, "; "))
	}
	png, err := t.Screenshot()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return err
	}
	fmt.Printf("  %s  %d KiB  sha256 %x\n", path, len(png)>>10, sha256.Sum256(png))
	return nil
}
