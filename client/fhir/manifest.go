package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Manifest is a FHIR Bulk Data export's completion manifest (the body of
// the $export status response): the files of the export, one or more per
// resource type. See https://hl7.org/fhir/uv/bulkdata/export.html.
type Manifest struct {
	TransactionTime     string          `json:"transactionTime"`
	Request             string          `json:"request"`
	RequiresAccessToken bool            `json:"requiresAccessToken"`
	Output              []ManifestEntry `json:"output"`
	// Error lists files of OperationOutcomes the server wrote for
	// resources it could not export; Report.ExportErrors counts them.
	Error []ManifestEntry `json:"error"`
}

// ManifestEntry is one NDJSON file. URL is relative to the manifest's
// directory, an absolute path, or a file: URL; Load reads local files
// only.
type ManifestEntry struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count *int   `json:"count,omitempty"`
}

// ErrManifest marks an unusable Bulk Data manifest.
var ErrManifest = errors.New("fhir: manifest")

// ReadManifest reads and checks a manifest file, and returns its bytes too
// (Load hashes them).
func ReadManifest(path string) (*Manifest, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrManifest, err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, nil, fmt.Errorf("%w %s: %v", ErrManifest, path, describeJSON(err))
	}
	if m.TransactionTime == "" {
		return nil, nil, fmt.Errorf("%w %s: no transactionTime (required: the time the export's data is as of)", ErrManifest, path)
	}
	if _, err := time.Parse(time.RFC3339, m.TransactionTime); err != nil {
		return nil, nil, fmt.Errorf("%w %s: transactionTime %q is not a FHIR instant", ErrManifest, path, m.TransactionTime)
	}
	for i, e := range m.Output {
		if e.Type == "" || e.URL == "" {
			return nil, nil, fmt.Errorf("%w %s: output[%d]: type and url are required", ErrManifest, path, i)
		}
		if e.Count != nil && *e.Count < 0 {
			return nil, nil, fmt.Errorf("%w %s: output[%d] (%s): count %d", ErrManifest, path, i, e.URL, *e.Count)
		}
	}
	return &m, b, nil
}

// resolve turns an output URL into a local path.
func resolve(manifestPath string, e ManifestEntry) (string, error) {
	u, err := url.Parse(e.URL)
	if err != nil {
		return "", fmt.Errorf("%w %s: %s url %q: %v", ErrManifest, manifestPath, e.Type, e.URL, err)
	}
	switch u.Scheme {
	case "":
		if filepath.IsAbs(e.URL) {
			return e.URL, nil
		}
		return filepath.Join(filepath.Dir(manifestPath), filepath.FromSlash(u.Path)), nil
	case "file":
		return filepath.FromSlash(u.Path), nil
	default:
		return "", fmt.Errorf("%w %s: %s url %q is remote: download the export's files next to the manifest first (Load reads local files)", ErrManifest, manifestPath, e.Type, e.URL)
	}
}
