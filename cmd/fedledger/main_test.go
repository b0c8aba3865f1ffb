package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, "version")
	if err != nil || !strings.HasPrefix(out, "fedledger ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestHelpIsUsefulToANewcomer(t *testing.T) {
	for cmd, want := range map[string][]string{
		"coordinator": {"min_clients", "FEDLEDGER_", "--config", "mutual TLS"},
		"client":      {"label_column", "dials out", "--heart"},
		"demo":        {"Cleveland", "--rounds", "--strategy"},
	} {
		out, err := run(t, cmd, "--help")
		if err != nil {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("%s --help does not mention %q", cmd, w)
			}
		}
	}
}

// TestClientHelpDescribesEveryDataOption: every data.csv key of the file
// schema is explained in `fedledger client --help`.
func TestClientHelpDescribesEveryDataOption(t *testing.T) {
	out, err := run(t, "client", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range csvKeys() {
		if !strings.Contains(out, "\n  "+key+" ") {
			t.Errorf("client --help does not describe data.csv.%s", key)
		}
	}
	for _, w := range []string{"client init", "--check", "model.inputs", "numeric: all"} {
		if !strings.Contains(out, w) {
			t.Errorf("client --help does not mention %q", w)
		}
	}
}

// csvKeys are the keys of the data.csv section, from the file schema.
func csvKeys() []string {
	var keys []string
	t := reflect.TypeOf(config.CSVFile{})
	for i := range t.NumField() {
		keys = append(keys, t.Field(i).Tag.Get("mapstructure"))
	}
	return keys
}

func TestBadConfigIsAConfigError(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "coordinator.yaml")
	os.WriteFile(bad, []byte("study:\n  id: x\n"), 0o600)
	_, err := run(t, "coordinator", "--config", bad)
	if !errors.Is(err, config.ErrConfig) || !strings.Contains(err.Error(), "tls.cert") {
		t.Fatalf("coordinator with no TLS: %v", err)
	}
	_, err = run(t, "client", "--config", filepath.Join(dir, "absent.yaml"))
	if !errors.Is(err, config.ErrConfig) || !strings.Contains(err.Error(), "absent.yaml") {
		t.Fatalf("client with a missing file: %v", err)
	}
	_, err = run(t, "demo", "--log-format", "xml")
	if !errors.Is(err, config.ErrConfig) {
		t.Fatalf("demo with a bad log format: %v", err)
	}
}
