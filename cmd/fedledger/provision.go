package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/provision"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

func newProvisionCmd() *cobra.Command {
	var out string
	var rotate []string
	cmd := &cobra.Command{
		Use:   "provision consortium.yaml [--out DIR] [--rotate ID,...]",
		Short: "Make the consortium CA and one kit per participant",
		Long: `Make, from one consortium file, a consortium CA (DIR/ca; keep ca-key.pem
offline) and one kit per participant in DIR/kits/<id>: its certificate and
key, the CA bundle, the trust file verifiers use, and a ready configuration
for its role (coordinator.yaml, audit.yaml, client.yaml, or a README for
admins and observers). Send each participant its kit only.

Re-running with participants added keeps the CA and every existing kit valid
and issues only the new ones; configuration files are written once and never
overwritten. --rotate reissues the named participants' certificates and keys
(before they expire, or after a key is lost). A site that keeps its own key
runs 'fedledger provision csr' and the consortium answers with
'fedledger provision sign'.

Example consortium.yaml:

  name: example-consortium
  validity: 8760h                       # certificates; the CA gets ca_validity (5 years)
  coordinator: {id: coordinator, address: fl.example.org:7443}
  audit_nodes:
    - {id: audit-1, address: audit-1.example.org:7600}
    - {id: audit-2, address: audit-2.example.org:7600}
    - {id: audit-3, address: audit-3.example.org:7600}
  hospitals: [{id: cleveland}, {id: hungary}, {id: switzerland}, {id: va}]
  admins: [consortium-admin]
  observers: [regulator]`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := provision.Load(args[0])
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			if out == "" {
				out = filepath.Join(filepath.Dir(args[0]), c.Name)
			}
			res, err := provision.Run(c, provision.Options{Out: out, Rotate: rotate})
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if res.NewCA {
				fmt.Fprintf(w, "new consortium CA in %s (keep ca-key.pem offline)\n", filepath.Join(out, "ca"))
			}
			if len(res.Issued) > 0 {
				fmt.Fprintf(w, "issued: %s\n", strings.Join(res.Issued, ", "))
			}
			if len(res.Kept) > 0 {
				fmt.Fprintf(w, "kept:   %s\n", strings.Join(res.Kept, ", "))
			}
			fmt.Fprintf(w, "kits in %s: send each participant its own directory\n", res.KitsDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "consortium directory (default: next to the file, named after the consortium)")
	cmd.Flags().StringSliceVar(&rotate, "rotate", nil, "participants whose certificate and key to reissue")

	var id, role, keyOut, csrOut string
	var hosts []string
	csr := &cobra.Command{
		Use:   "csr --id ID --role ROLE [--host H] --key KEY_FILE --out CSR_FILE",
		Short: "Make a key (kept here) and a signing request to send to the consortium",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyOut == "" || csrOut == "" {
				return fmt.Errorf("%w: csr needs --key and --out", config.ErrConfig)
			}
			req, key, err := tlsutil.NewCSR(id, tlsutil.Role(role), hosts)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			if err := os.WriteFile(keyOut, key, 0o600); err != nil {
				return err
			}
			return os.WriteFile(csrOut, req, 0o644)
		},
	}
	csr.Flags().StringVar(&id, "id", "", "participant id (certificate CommonName)")
	csr.Flags().StringVar(&role, "role", "client", "role: client, coordinator, audit-node, admin or observer")
	csr.Flags().StringSliceVar(&hosts, "host", nil, "DNS names or IPs this participant serves on")
	csr.Flags().StringVar(&keyOut, "key", "", "file for the new private key (0600)")
	csr.Flags().StringVar(&csrOut, "out", "", "file for the signing request")

	var dir, reqFile, certOut string
	sign := &cobra.Command{
		Use:   "sign consortium.yaml --dir DIR --csr REQUEST --out CERT_FILE",
		Short: "Sign a participant's request with the consortium CA",
		Long: `Sign a participant's certificate request with the consortium CA in DIR/ca.
The requested id must be in the consortium file, with the role the file gives
it; the certificate gets the file's hosts and validity.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := provision.Load(args[0])
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			ca, err := tlsutil.LoadCA(filepath.Join(dir, "ca", "ca.pem"), filepath.Join(dir, "ca", "ca-key.pem"))
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			req, err := os.ReadFile(reqFile)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			cert, err := provision.SignRequest(c, ca, req)
			if err != nil {
				return err
			}
			return os.WriteFile(certOut, cert, 0o644)
		},
	}
	sign.Flags().StringVar(&dir, "dir", "", "consortium directory (holds ca/)")
	sign.Flags().StringVar(&reqFile, "csr", "", "the participant's signing request")
	sign.Flags().StringVar(&certOut, "out", "", "file for the signed certificate")
	cmd.AddCommand(csr, sign)
	return cmd
}
