package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/client/fhir"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
)

func newFHIRCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fhir",
		Short: "FHIR R4 Bulk Data: export the shipped heart data as one, or check an export",
		Long: `A hospital's client can train on a FHIR R4 Bulk Data export (data.fhir in
client.yaml): the $export manifest and NDJSON files per resource type
(Patient, Observation, Condition, Consent). A mapping file names which codes
become which columns and the label; without one, the heart-disease mapping
is used. A patient whose research-use Consent denies it is left out, and
the data manifest every contribution carries counts them.`,
	}
	var hospital, out string
	var denyEvery int
	var denyFraction float64
	var seed int64
	export := &cobra.Command{
		Use:   "export --hospital H --out DIR [--deny-every N | --deny-fraction F --seed S]",
		Short: "Write one shipped heart-disease hospital as a synthetic FHIR Bulk Data export",
		Long: `Write one hospital of the shipped UCI heart-disease data as a FHIR R4 Bulk
Data export in DIR: manifest.json, Patient.ndjson, Observation.ndjson (LOINC
and SNOMED CT codes, UCUM units), Condition.ndjson (the label: coronary
artery disease) and Consent.ndjson (research use permitted for every
patient, or denied for every N-th with --deny-every, or a seeded fraction
with --deny-fraction). The same bytes every time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains(train.Hospitals, hospital) {
				return fmt.Errorf("%w: --hospital %q: want one of %s", config.ErrConfig, hospital, strings.Join(train.Hospitals, ", "))
			}
			if out == "" {
				return fmt.Errorf("%w: --out is required", config.ErrConfig)
			}
			if err := fhir.Export(hospital, out, fhir.ExportOptions{DenyEvery: denyEvery, DenyFraction: denyFraction, Seed: seed}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s exported to %s (manifest.json and NDJSON per resource type)\n", train.HospitalName(hospital), out)
			return nil
		},
	}
	ef := export.Flags()
	ef.StringVar(&hospital, "hospital", "", "hospital: "+strings.Join(train.Hospitals, ", "))
	ef.StringVar(&out, "out", "", "directory to write the export to")
	ef.IntVar(&denyEvery, "deny-every", 0, "deny research use for every N-th patient (0: none)")
	ef.Float64Var(&denyFraction, "deny-fraction", 0, "deny research use for this fraction of the patients, chosen with --seed")
	ef.Int64Var(&seed, "seed", 1, "seed of --deny-fraction's choice")

	var manifest, mapping string
	var asJSON bool
	check := &cobra.Command{
		Use:   "check --manifest manifest.json [--mapping mapping.yaml] [--json]",
		Short: "Load an export as the client would and print what it read and left out",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := fhir.LoadMappingOrHeart(mapping)
			if err != nil {
				return err
			}
			tr, te, rep, err := fhir.LoadDatasets(manifest, m)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				e := json.NewEncoder(w)
				e.SetIndent("", "  ")
				return e.Encode(rep)
			}
			fmt.Fprintf(w, "export %s (transaction time %s), mapping %s\n", manifest, rep.TransactionTime, rep.Mapping)
			fmt.Fprintf(w, "  patients %d: %d left out by a research-use consent denial, %d for a missing value\n", rep.Patients, rep.ExcludedByConsent, rep.DroppedMissing)
			fmt.Fprintf(w, "  rows %d (%d positive): %d for training, %d for testing; %d features\n", rep.Rows, rep.Positive, tr.Len(), te.Len(), len(tr.Features))
			for _, f := range rep.Files {
				fmt.Fprintf(w, "  %s: %d resources, %d bytes, sha256 %s\n", f.URL, f.Resources, f.Bytes, f.SHA256[:16])
			}
			fmt.Fprintf(w, "  export sha256 %s\n", rep.SHA256)
			return nil
		},
	}
	cf := check.Flags()
	cf.StringVar(&manifest, "manifest", "", "the export's manifest (the $export output)")
	cf.StringVar(&mapping, "mapping", "", "mapping file (default: the heart-disease mapping)")
	cf.BoolVar(&asJSON, "json", false, "print the load report as JSON")
	cmd.AddCommand(export, check)
	return cmd
}
