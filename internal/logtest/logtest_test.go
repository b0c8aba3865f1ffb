package logtest

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
)

func TestBuffer(t *testing.T) {
	var b Buffer
	log := slog.New(slog.NewJSONHandler(&b, nil))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { log.Info("refused", "n", i) })
	}
	wg.Wait()
	log.Info("recovered")
	if got := len(b.Find("refused")); got != 8 {
		t.Fatalf("Find(refused) = %d records, want 8", got)
	}
	lines, err := b.Lines()
	if err != nil || len(lines) != 9 {
		t.Fatalf("Lines() = %d, %v; want 9 records", len(lines), err)
	}
	b.Write([]byte("not json\n"))
	if _, err := b.Lines(); err == nil || !strings.Contains(err.Error(), `"not json"`) {
		t.Fatalf("Lines() over a text line: %v", err)
	}
	if got := len(b.Find("recovered")); got != 1 {
		t.Fatalf("Find skips text lines: got %d records, want 1", got)
	}
}
