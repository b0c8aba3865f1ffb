package demo

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/fedledger/fedledger/coordinator"
)

// TestDemoFromFHIR: the demo's study run from FHIR Bulk Data exports of the
// hospitals gives the same model and the same accuracies as from the
// shipped CSV files (plaintext, so no encryption noise either); with
// research-use denials, the hospitals leave those patients out and the
// model differs.
func TestDemoFromFHIR(t *testing.T) {
	run := func(data string, deny int) *Report {
		t.Helper()
		cfg := DefaultConfig()
		cfg.Mode, cfg.Rounds, cfg.Personal = coordinator.ModePlaintext, 2, nil
		cfg.Data, cfg.FHIRDenyEvery = data, deny
		cfg.DataDir, cfg.Out = t.TempDir(), io.Discard
		rep, err := Run(context.Background(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	csv, fhir := run(DataHeart, 0), run(DataFHIR, 0)
	if csv.FinalModel != fhir.FinalModel {
		t.Fatalf("final models differ: %x from the CSV files, %x from FHIR", csv.FinalModel[:8], fhir.FinalModel[:8])
	}
	for i, r := range csv.Rows {
		if f := fhir.Rows[i]; f.Federated != r.Federated || f.Train != r.Train || f.Test != r.Test {
			t.Fatalf("%s: %+v from the CSV files, %+v from FHIR", r.Hospital, r, f)
		}
	}
	denied := run(DataFHIR, 10)
	if denied.FinalModel == csv.FinalModel {
		t.Fatal("with research-use denials the model is the same")
	}
	// Each hospital trains on fewer records: the samples its signed
	// contributions state.
	samples := func(rep *Report) map[string]uint64 {
		out := map[string]uint64{}
		for _, c := range rep.Rounds[0].Contributions {
			out[c.Site] = c.Samples
		}
		return out
	}
	all, fewer := samples(csv), samples(denied)
	for site, n := range all {
		if fewer[site] >= n {
			t.Fatalf("%s: %d training records with denials, %d without", site, fewer[site], n)
		}
	}
}
