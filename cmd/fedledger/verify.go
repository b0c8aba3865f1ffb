package main

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"

	"github.com/fedledger/fedledger/internal/model"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// errVerify marks a model that failed verification (exit status 1, the
// reason printed).
var errVerify = errors.New("verification FAILED")

func newVerifyCmd() *cobra.Command {
	var bundleFile, trustFile, study, cert, key, ca, saveBundle string
	var nodes []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify MODEL_FILE --trust trust.json (--bundle BUNDLE | --audit ADDR,...)",
		Short: "Verify offline where a model file came from",
		Long: `Verify a model's provenance against the audit log. It checks the checkpoint
against the trusted node keys (a quorum of them must have signed it),
recomputes the Merkle tree from every entry and matches the checkpoint's root,
replays every record through the audit nodes' rules (the submitter's signature
and role, the study's rules, and the hospitals' own signatures: key holders on
the key setup, contributors, decryptors and countersigners on every round),
and walks the model back round by round to the study's initial model, failing
on a gap or a fork. It prints the lineage: the study's mode (HE parameters, t
of n key holders, or plaintext), its rules, and per round the contributors
with sample counts and data manifests, decryptors, countersigners and
optimizer state hashes.

With --bundle it needs nothing but the files. With --audit it first exports a
bundle from live nodes, using an observer's certificate (--cert, --key, --ca).
Exit status 0: verified; 1: not verified, with the reason; 2: bad usage.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if trustFile == "" || (bundleFile == "") == (len(nodes) == 0) {
				return fmt.Errorf("%w: verify needs --trust and exactly one of --bundle or --audit", config.ErrConfig)
			}
			modelFile, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("%w: model file: %v", config.ErrConfig, err)
			}
			if _, _, err := model.Decode(modelFile); err != nil {
				return fmt.Errorf("%w: %s is not a fedledger model file: %v", errVerify, args[0], err)
			}
			sum := audit.Hash(sha256.Sum256(modelFile))
			trust, err := audit.LoadTrust(trustFile)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			var b *audit.Bundle
			if bundleFile != "" {
				data, err := os.ReadFile(bundleFile)
				if err != nil {
					return fmt.Errorf("%w: bundle: %v", config.ErrConfig, err)
				}
				if b, err = audit.UnmarshalBundle(data); err != nil {
					return fmt.Errorf("%w: bundle %s: %v", errVerify, bundleFile, err)
				}
			} else {
				if cert == "" || key == "" || ca == "" {
					return fmt.Errorf("%w: --audit needs --cert, --key and --ca (an observer identity)", config.ErrConfig)
				}
				id, err := tlsutil.LoadIdentity(cert, key)
				if err != nil {
					return fmt.Errorf("%w: %v", config.ErrConfig, err)
				}
				pool, err := tlsutil.LoadCAPool(ca)
				if err != nil {
					return fmt.Errorf("%w: %v", config.ErrConfig, err)
				}
				cli, err := cluster.Dial(nodes, tlsutil.ClientConfig(id, pool, ""))
				if err != nil {
					return fmt.Errorf("%w: %v", config.ErrConfig, err)
				}
				defer cli.Close()
				if b, err = cli.Export(cmd.Context(), study, 1<<32); err != nil {
					return fmt.Errorf("exporting from the audit log: %w", err)
				}
				if saveBundle != "" {
					if err := os.WriteFile(saveBundle, b.Marshal(), 0o644); err != nil {
						return err
					}
				}
			}
			if study == "" {
				if study, err = audit.FindStudy(b, sum); err != nil {
					return fmt.Errorf("%w: %v", errVerify, err)
				}
			}
			lin, err := audit.VerifyBundle(b, trust, study, sum)
			if err != nil {
				return fmt.Errorf("%w: %v", errVerify, err)
			}
			rep := audit.NewReport(lin, sum)
			if asJSON {
				return rep.WriteJSON(cmd.OutOrStdout())
			}
			return rep.WriteText(cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVar(&bundleFile, "bundle", "", "offline bundle exported from the audit log")
	f.StringVar(&trustFile, "trust", "", "trust file: consortium CA, audit node keys, quorum")
	f.StringSliceVar(&nodes, "audit", nil, "audit node addresses to export a bundle from")
	f.StringVar(&study, "study", "", "study id (default: the study the model belongs to)")
	f.StringVar(&cert, "cert", "", "observer certificate for --audit")
	f.StringVar(&key, "key", "", "observer key for --audit")
	f.StringVar(&ca, "ca", "", "consortium CA bundle for --audit")
	f.StringVar(&saveBundle, "save-bundle", "", "with --audit: also write the exported bundle here, for offline re-verification")
	f.BoolVar(&asJSON, "json", false, "print the lineage report as JSON")
	return cmd
}
