package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/internal/demo"
)

func newDemoCmd() *cobra.Command {
	d := demo.DefaultConfig()
	var dev = true
	var tune, serve bool
	personal := d.Personal.Method
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole federation on this machine with four real hospitals' data",
		Long: `Run a complete study on loopback: a development CA, the coordinator and four
hospital clients (Cleveland, Hungary, Switzerland, VA Long Beach, from the UCI
heart-disease data shipped in the binary), each training only on its own
records, connected by gRPC with mutual TLS. By default the study runs in
secure mode: the hospitals generate a collective key, send their updates
encrypted, and any t of them decrypt only the aggregate. The hospitals scale
their inputs with the consortium's pooled statistics (from each one's row
count, sums and sums of squares), and each keeps a personal model beside the
global one. Prints a line per round and, at the end, each hospital's test
accuracy for the federated (global) model, for its personal model, for the
hospital training alone, and for pooled training on everyone's data.

The demo is the only place fedledger makes its own certificates (--dev).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dev {
				return fmt.Errorf("%w: the demo always runs with a development CA; use provisioned kits for anything else", config.ErrConfig)
			}
			lf := config.LogFile{Format: cmd.Flag("log-format").Value.String(), Level: cmd.Flag("log-level").Value.String()}
			if !cmd.Flag("log-level").Changed {
				lf.Level = "warn" // the progress display speaks for the demo
			}
			logger, err := config.NewLogger(cmd.ErrOrStderr(), lf)
			if err != nil {
				return err
			}
			if d.DataDir == "" {
				if d.DataDir, err = os.MkdirTemp("", "fedledger-demo-"); err != nil {
					return err
				}
			}
			d.Out = cmd.OutOrStdout()
			switch personal {
			case "none":
				d.Personal = nil
			case d.Personal.Method:
			default:
				d.Personal = demo.PersonalConfig(personal)
			}
			if tune {
				d.Tune = demo.TunePlan(d.Rounds)
			}
			if serve {
				d.Serve = serveDemoConsoles(d.Out)
			}
			_, err = demo.Run(cmd.Context(), d, logger)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&d.DataDir, "data-dir", "", "directory for the demo's state (default: a new temporary directory)")
	f.IntVar(&d.Rounds, "rounds", d.Rounds, "number of federated rounds")
	f.IntVar(&d.MinClients, "min-clients", d.MinClients, "K: minimum updates for a round to be aggregated")
	f.StringVar(&d.Strategy, "strategy", d.Strategy, "server strategy: fedavg, fedadam, fedyogi or fedadagrad")
	f.Float64Var(&d.ServerLR, "server-lr", 0, "server learning rate (default: the strategy's)")
	f.StringVar(&d.Model.Kind, "model", d.Model.Kind, "model: logreg or mlp")
	f.IntSliceVar(&d.Model.Hidden, "hidden", nil, "MLP hidden layer sizes, e.g. 16,8")
	f.IntVar(&d.Training.LocalSteps, "local-steps", d.Training.LocalSteps, "local mini-batch steps per round")
	f.Float64Var(&d.Training.ProxMu, "prox-mu", 0, "FedProx proximal coefficient (0: off)")
	f.StringVar(&d.Data, "data", demo.DataHeart, "where the hospitals read their data: heart (the shipped CSV files) or fhir (each exported first as a FHIR R4 Bulk Data export)")
	f.IntVar(&d.FHIRDenyEvery, "fhir-deny-every", 0, "with --data fhir: deny research use for every N-th patient (their hospitals leave them out)")
	f.StringVar(&d.Mode, "mode", d.Mode, "secure (updates encrypted, threshold decryption) or plaintext (baseline; coordinator reads updates)")
	f.IntVar(&d.Threshold, "threshold", d.Threshold, "t: hospitals needed to decrypt an aggregate (secure mode)")
	f.StringVar(&d.Standardization, "standardization", d.Standardization, "consortium (pooled statistics) or site (each hospital its own)")
	f.StringVar(&personal, "personal", personal, "each hospital's personal model: intercept, ditto, finetune or none")
	f.Float64Var(&d.DPEpsilon, "dp-epsilon", 0, "run a record-level differentially private study: each hospital's epsilon budget (delta 1e-5), every audit node enforcing it")
	f.StringVar(&d.DPLevel, "dp-level", "record", "with --dp-epsilon: record (DP-SGD at each hospital) or client (DP-FedAvg over the hospitals' clipped updates)")
	f.BoolVar(&tune, "tune", false, "first tune the learning rate, local steps and rounds by successive halving on the hospitals' validation data, every trial a study on the log")
	f.BoolVar(&serve, "serve", false, "after the study, keep the audit log up and serve the coordinator's and an audit node's read-only web consoles on loopback until Ctrl-C")
	f.BoolVar(&dev, "dev", true, "use an on-the-fly development CA (always on for the demo)")
	return cmd
}
