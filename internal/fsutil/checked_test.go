package fsutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckedFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "witness.json")
	for _, content := range []string{"", `{"last": "x"}`, "line one\nline two\n"} {
		if err := WriteFileChecked(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFileChecked(path)
		if err != nil || string(got) != content {
			t.Fatalf("read back %q, %v; want %q", got, err, content)
		}
	}
	if _, err := ReadFileChecked(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want ErrNotExist", err)
	}
}

// TestCheckedFileDetectsEveryFlip flips each bit of a checked file in turn
// and truncates it at every length: each must fail with an error naming the
// file, never return data.
func TestCheckedFileDetectsEveryFlip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	if err := WriteFileChecked(path, []byte(`{"last_cosigned": "origin\n4\nAAAA\n"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	pristine, _ := os.ReadFile(path)
	check := func(what string, b []byte) {
		t.Helper()
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		data, err := ReadFileChecked(path)
		var ce *CorruptError
		if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) {
			t.Fatalf("%s: got %q, %v; want a *CorruptError naming %s", what, data, err, path)
		}
	}
	for i := range pristine {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), pristine...)
			b[i] ^= 1 << bit
			check("flip", b)
		}
	}
	for n := 0; n < len(pristine); n++ {
		check("truncation", pristine[:n])
	}
	check("appended byte", append(append([]byte(nil), pristine...), ' '))
	check("plain file", []byte(`{"last_cosigned": ""}`))
}
