// Package consoletest drives the web consoles in headless Chromium, with
// chromedp, for the console's browser tests and the README's screenshots.
// It records every message a page writes to the browser's console (calls
// of the console API, uncaught exceptions, and the browser's own log:
// resources that failed to load, policy violations), so a test can require
// a page to load clean.
//
// Chromium is a requirement, not an option: NewBrowser fails when it is
// missing, and tests fail with it rather than skip (.ci/run installs the
// Debian package). $FEDLEDGER_CHROMIUM names another binary.
package consoletest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// ErrNoChromium: no Chromium binary was found.
var ErrNoChromium = errors.New("consoletest: Chromium not found; install it (Debian: apt-get install -y chromium; .ci/run does) or set FEDLEDGER_CHROMIUM")

// ExecPath finds Chromium: $FEDLEDGER_CHROMIUM, or the first of chromium,
// chromium-browser, google-chrome, google-chrome-stable, headless_shell on
// the PATH.
func ExecPath() (string, error) {
	if p := os.Getenv("FEDLEDGER_CHROMIUM"); p != "" {
		full, err := exec.LookPath(p)
		if err != nil {
			return "", fmt.Errorf("%w: FEDLEDGER_CHROMIUM=%s: %v", ErrNoChromium, p, err)
		}
		return full, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoChromium
}

// Browser is a headless Chromium process.
type Browser struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// NewBrowser starts headless Chromium with the flags a container needs:
// no GPU, no /dev/shm, and no sandbox when running as root (Chromium
// refuses to start sandboxed as root). width and height are the window's.
func NewBrowser(ctx context.Context, width, height int) (*Browser, error) {
	path, err := ExecPath()
	if err != nil {
		return nil, err
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("headless", "new"),
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.WindowSize(width, height),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	// Start the browser now, so a missing library fails here, once.
	if err := chromedp.Do(bctx); err != nil {
		bcancel()
		acancel()
		return nil, fmt.Errorf("consoletest: starting %s: %w", path, err)
	}
	return &Browser{ctx: bctx, cancel: func() { bcancel(); acancel() }}, nil
}

// Close stops the browser.
func (b *Browser) Close() { b.cancel() }

// Tab is a browser tab that records what its pages write to the console.
type Tab struct {
	ctx    context.Context
	cancel context.CancelFunc
	mu     sync.Mutex
	msgs   []chromedp.ConsoleMessage
	seq    int
}

// NewTab opens a tab.
func (b *Browser) NewTab() (*Tab, error) {
	ctx, cancel := chromedp.NewContext(b.ctx)
	t := &Tab{ctx: ctx, cancel: cancel}
	msgs := chromedp.Console(ctx)
	// Start the tab before listening, so the first page's messages are
	// not lost.
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		return nil, err
	}
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			t.mu.Lock()
			t.msgs = append(t.msgs, m)
			t.mu.Unlock()
		}
	}()
	return t, nil
}

// Context is the tab's chromedp context, for other actions.
func (t *Tab) Context() context.Context { return t.ctx }

// Close closes the tab.
func (t *Tab) Close() { t.cancel() }

// Open loads url and returns the HTTP status of the page.
func (t *Tab) Open(url string) (int64, error) {
	resp, err := chromedp.Run(t.ctx, chromedp.NavigateResponse(url))
	if err != nil {
		return 0, fmt.Errorf("loading %s: %w", url, err)
	}
	return resp.Status, nil
}

// Submit clicks sel (a submit button) and waits for the page it loads,
// returning its HTTP status.
func (t *Tab) Submit(sel string) (int64, error) {
	resp, err := chromedp.RunResponse(t.ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		return 0, fmt.Errorf("submitting %s: %w", sel, err)
	}
	return resp.Status, nil
}

// Text is the text of the first element sel matches.
func (t *Tab) Text(sel string) (string, error) {
	s, err := chromedp.Run(t.ctx, chromedp.TextContent(chromedp.CSS(sel)))
	return strings.TrimSpace(s), err
}

// Attr is the attribute name of the first element sel matches; it fails
// when the element has no such attribute.
func (t *Tab) Attr(sel, name string) (string, error) {
	r, err := chromedp.Run(t.ctx, chromedp.AttributeValue(chromedp.CSS(sel), name))
	if err != nil {
		return "", err
	}
	if !r.Exists {
		return "", fmt.Errorf("%s has no attribute %s", sel, name)
	}
	return r.Value, nil
}

// Count is how many elements sel matches.
func (t *Tab) Count(sel string) (int, error) {
	return chromedp.Run(t.ctx, chromedp.Evaluate[int](fmt.Sprintf("document.querySelectorAll(%q).length", sel)))
}

// Upload sets the files of the file input sel.
func (t *Tab) Upload(sel string, files ...string) error {
	return chromedp.Do(t.ctx, chromedp.SetUploadFiles(chromedp.CSS(sel), files))
}

// SetValue sets the value of the input sel.
func (t *Tab) SetValue(sel, v string) error {
	return chromedp.Do(t.ctx, chromedp.SetValue(chromedp.CSS(sel), v))
}

// Screenshot is a PNG of the whole page.
func (t *Tab) Screenshot() ([]byte, error) {
	return chromedp.Run(t.ctx, chromedp.FullScreenshot(100))
}

// Problems are the messages the tab's pages wrote to the console since
// the last call, but for the browser's own verbose and info lines: every
// console API call (the consoles have no script, so any is a surprise),
// every exception, every warning and error the browser logged (a resource
// that failed to load, a blocked one, a policy violation).
//
// To know it has them all, it writes a marker to the page's console
// through the DevTools protocol (which no content policy blocks) and
// waits until the marker comes back: the browser reports a page's
// messages in order.
func (t *Tab) Problems() ([]chromedp.ConsoleMessage, error) {
	t.mu.Lock()
	t.seq++
	mark := fmt.Sprintf("consoletest mark %d", t.seq)
	t.mu.Unlock()
	if _, err := chromedp.Run(t.ctx, chromedp.Evaluate[int](fmt.Sprintf("console.debug(%q), 0", mark))); err != nil {
		return nil, fmt.Errorf("consoletest: marking the console: %w", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		t.mu.Lock()
		i := slices.IndexFunc(t.msgs, func(m chromedp.ConsoleMessage) bool { return m.Source == "" && m.Text == mark })
		if i >= 0 {
			var out []chromedp.ConsoleMessage
			for _, m := range t.msgs[:i] {
				if m.Source != "" && (m.Type == chromedp.ConsoleDebug || m.Type == chromedp.ConsoleInfo) {
					continue
				}
				out = append(out, m)
			}
			t.msgs = slices.Clone(t.msgs[i+1:])
			t.mu.Unlock()
			return out, nil
		}
		t.mu.Unlock()
		if time.Now().After(deadline) {
			return nil, errors.New("consoletest: the console marker never came back")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// DisableCache makes every load hit the server (a test reads what the
// server serves now, never a cached copy).
func (t *Tab) DisableCache() error {
	_, err := chromedp.Call(t.ctx, network.SetCacheDisabled, network.SetCacheDisabledParams{CacheDisabled: true})
	return err
}
