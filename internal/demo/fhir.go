package demo

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/fedledger/fedledger/client/fhir"
	"github.com/fedledger/fedledger/client/train"
)

// Where the demo's hospitals read their data (Config.Data).
const (
	DataHeart = "heart"
	DataFHIR  = "fhir"
)

// exportFHIR writes each hospital's data as a FHIR R4 Bulk Data export
// under DataDir/fhir/<hospital>, as `fedledger fhir export` does.
func exportFHIR(cfg Config, out io.Writer) error {
	if cfg.DataDir == "" {
		return fmt.Errorf("demo: --data %s needs a data directory to export to", DataFHIR)
	}
	for _, h := range train.Hospitals {
		dir := filepath.Join(cfg.DataDir, "fhir", h)
		if err := fhir.Export(h, dir, fhir.ExportOptions{DenyEvery: cfg.FHIRDenyEvery}); err != nil {
			return fmt.Errorf("demo: exporting %s as FHIR: %w", h, err)
		}
	}
	deny := ""
	if cfg.FHIRDenyEvery > 0 {
		deny = fmt.Sprintf(", research use denied for every %d-th patient", cfg.FHIRDenyEvery)
	}
	fmt.Fprintf(out, "  hospital data: FHIR R4 Bulk Data exports (Patient, Observation, Condition, Consent%s) in %s\n", deny, filepath.Join(cfg.DataDir, "fhir"))
	return nil
}
