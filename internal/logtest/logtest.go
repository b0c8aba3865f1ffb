// Package logtest captures what a component logs, for tests that assert a
// refusal or a recovery was logged. It is ground floor: it imports no
// domain package.
package logtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
)

// Buffer is a log destination that server goroutines may write to while a
// test reads it.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Lines decodes every line written so far as a JSON log record; a line
// that is not one is an error naming it.
func (b *Buffer) Lines() ([]map[string]any, error) {
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace([]byte(b.String())), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			return nil, fmt.Errorf("log line %q: %w", l, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// Find returns the JSON log records whose msg is msg, skipping lines that
// are not JSON (another component's text output).
func (b *Buffer) Find(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range bytes.Split([]byte(b.String()), []byte("\n")) {
		var m map[string]any
		if json.Unmarshal(l, &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}
