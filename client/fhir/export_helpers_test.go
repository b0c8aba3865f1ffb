package fhir

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeExport writes a Bulk Data export of the given NDJSON contents (type
// -> file body) into a new temporary directory and returns its manifest.
func writeExport(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	man := Manifest{TransactionTime: "2024-01-02T03:04:05Z", Request: "https://example.invalid/$export", Error: []ManifestEntry{}}
	for _, typ := range []string{"Patient", "Observation", "Condition", "Consent", "Encounter"} {
		body, ok := files[typ]
		if !ok {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, typ+".ndjson"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		man.Output = append(man.Output, ManifestEntry{Type: typ, URL: typ + ".ndjson"})
	}
	path := filepath.Join(dir, "manifest.json")
	b, _ := json.Marshal(man)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// lines joins resources into an NDJSON body.
func lines(rs ...string) string { return strings.Join(rs, "\n") + "\n" }
