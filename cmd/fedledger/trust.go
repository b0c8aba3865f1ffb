package main

import (
	"crypto/x509"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

func newTrustCmd() *cobra.Command {
	var ca, origin, out string
	var quorum int
	cmd := &cobra.Command{
		Use:   "trust --ca ca.pem --origin NAME --quorum K --out trust.json NODE_CERT...",
		Short: "Write the trust file a verifier needs: CA, audit node keys, quorum",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			caPEM, err := os.ReadFile(ca)
			if err != nil {
				return fmt.Errorf("%w: --ca: %v", config.ErrConfig, err)
			}
			var certs []*x509.Certificate
			for _, f := range args {
				id, err := tlsutil.LoadCertificate(f)
				if err != nil {
					return fmt.Errorf("%w: %v", config.ErrConfig, err)
				}
				if id.Role != tlsutil.RoleAuditNode {
					return fmt.Errorf("%w: %s is %q (%s), not an audit node", config.ErrConfig, f, id.ID, id.Role)
				}
				certs = append(certs, id.Cert)
			}
			t, err := audit.NewTrustFile(origin, caPEM, certs, quorum)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			return t.Write(out)
		},
	}
	f := cmd.Flags()
	f.StringVar(&ca, "ca", "", "consortium CA certificate")
	f.StringVar(&origin, "origin", "fedledger/audit-log", "the audit log's origin (its name in checkpoints)")
	f.IntVar(&quorum, "quorum", 2, "node signatures a checkpoint needs")
	f.StringVar(&out, "out", "trust.json", "file to write")
	return cmd
}
