package main

import (
	"context"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/cluster"
	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
	"github.com/fedledger/fedledger/coordinator"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// signStudy signs, as the admin holding cert and key, the study-created
// record of the study in a coordinator configuration. Only the file's
// study section is read: the admin needs neither the coordinator's
// certificate nor its key.
func signStudy(cfgFile, cert, key string, validFor time.Duration) (study string, admin *tlsutil.Identity, initial [32]byte, env *audit.Envelope, err error) {
	st, err := config.LoadStudy(cfgFile)
	if err != nil {
		return "", nil, initial, nil, err
	}
	if admin, err = tlsutil.LoadIdentity(cert, key); err != nil {
		return "", nil, initial, nil, fmt.Errorf("%w: %v", config.ErrConfig, err)
	}
	if admin.Role != tlsutil.RoleAdmin {
		return "", nil, initial, nil, fmt.Errorf("%w: %q has role %s; study records are signed by an admin", config.ErrConfig, admin.ID, admin.Role)
	}
	if _, _, initial, err = coordinator.InitialModel(st); err != nil {
		return "", nil, initial, nil, err
	}
	var expires time.Time
	if validFor > 0 {
		expires = time.Now().Add(validFor)
	}
	env, err = audit.Sign(admin, coordinator.StudyRecord(st, initial, admin.ID, expires))
	return st.ID, admin, initial, env, err
}

func newStudyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "study",
		Short: "Studies: create (admin-signed, on the audit log), list, start, status",
		Long: `Studies are created by a consortium admin: 'study create' signs the study
described by a coordinator configuration (sites, K, model, strategy, secure
parameters, purpose, expiry) and appends it to the audit log, where every
later round is checked against it ('study sign' writes the signed record to a
file instead, for the coordinator's audit.study_record). 'study list' reads
every study from the log: its rules (sites, K, rounds allowed), its mode
(HE parameters and t, or plaintext), its key holders, how many rounds
completed and failed, and its latest model. 'study status' asks the
coordinator for the phase, the round, who has reported, the metrics so far
and what it is waiting for; after the study (the coordinator keeps
answering for its linger time) the final model's path and each site's
accuracy of it. 'study start' starts a study configured with start: manual.`,
	}
	var cfgFile, cert, key, out string
	var validFor time.Duration
	sign := &cobra.Command{
		Use:   "sign --config coordinator.yaml --cert admin.pem --key admin-key.pem --out study.rec",
		Short: "Sign the study-created record for a coordinator configuration's study",
		Long: `Sign, as a consortium admin, the study-created record of the study in a
coordinator configuration: approved sites, K, the initial model's SHA-256, the
strategy and hyperparameters, the HE parameter set. The coordinator appends it
to the audit log (audit.study_record) before round 1; the log accepts it only
with an admin's signature, and every later round is checked against it.

Only the configuration's study section is read (and checked as the
coordinator checks it): the coordinator's certificate and key are not
needed, so sign a copy of coordinator.yaml wherever the admin key is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cert == "" || key == "" || out == "" {
				return fmt.Errorf("%w: study sign needs --cert, --key and --out", config.ErrConfig)
			}
			study, admin, initial, env, err := signStudy(cfgFile, cert, key, validFor)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, env.Marshal(), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "study %q signed by %s: initial model %s -> %s\n", study, admin.ID, hex.EncodeToString(initial[:8]), out)
			return nil
		},
	}
	sf := sign.Flags()
	sf.StringVar(&cfgFile, "config", "", "the coordinator's YAML configuration (only its study section is read)")
	sf.StringVar(&cert, "cert", "", "admin certificate")
	sf.StringVar(&key, "key", "", "admin key")
	sf.StringVar(&out, "out", "", "file to write the signed record to")
	sf.DurationVar(&validFor, "valid-for", 0, "study expiry from now (0: none)")

	var ca, coordAddr string
	var nodes []string
	var asJSON bool
	identity := func(c *cobra.Command) {
		c.Flags().StringVar(&cert, "cert", "", "your certificate (admin; observers may list and read status)")
		c.Flags().StringVar(&key, "key", "", "your key")
		c.Flags().StringVar(&ca, "ca", "", "consortium CA bundle")
	}
	dialTLS := func() (*tls.Config, error) {
		if cert == "" || key == "" || ca == "" {
			return nil, fmt.Errorf("%w: --cert, --key and --ca are required", config.ErrConfig)
		}
		id, err := tlsutil.LoadIdentity(cert, key)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", config.ErrConfig, err)
		}
		pool, err := tlsutil.LoadCAPool(ca)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", config.ErrConfig, err)
		}
		return tlsutil.ClientConfig(id, pool, ""), nil
	}
	// dialLog connects to the audit nodes of --audit as the --cert identity.
	dialLog := func(command string) (*cluster.Client, error) {
		if len(nodes) == 0 {
			return nil, fmt.Errorf("%w: %s needs --audit", config.ErrConfig, command)
		}
		tc, err := dialTLS()
		if err != nil {
			return nil, err
		}
		return cluster.Dial(nodes, tc)
	}
	create := &cobra.Command{
		Use:   "create --config coordinator.yaml --audit ADDR,... --cert admin.pem --key admin-key.pem --ca ca.pem",
		Short: "Sign a study as an admin and append it to the audit log",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := dialLog("study create")
			if err != nil {
				return err
			}
			defer cli.Close()
			study, admin, initial, env, err := signStudy(cfgFile, cert, key, validFor)
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			r, err := cli.Append(ctx, env.Marshal())
			if err != nil {
				return fmt.Errorf("appending the study record: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "study %q created by %s at log index %d (initial model %s)\n", study, admin.ID, r.Index, hex.EncodeToString(initial[:8]))
			return nil
		},
	}
	create.Flags().StringVar(&cfgFile, "config", "", "the coordinator's YAML configuration (only its study section is read)")
	create.Flags().StringSliceVar(&nodes, "audit", nil, "audit node addresses")
	create.Flags().DurationVar(&validFor, "valid-for", 0, "study expiry from now (0: none)")
	identity(create)

	list := &cobra.Command{
		Use:   "list --audit ADDR,... --cert C --key K --ca CA [--json]",
		Short: "List the studies on the audit log: rules, mode, key holders, rounds, latest model",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cli, err := dialLog("study list")
			if err != nil {
				return err
			}
			defer cli.Close()
			studies, err := cli.ListStudies(cmd.Context())
			if err != nil {
				return err
			}
			return printStudies(cmd.OutOrStdout(), studies, asJSON)
		},
	}
	list.Flags().StringSliceVar(&nodes, "audit", nil, "audit node addresses")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	identity(list)

	admin := func(cmd *cobra.Command) (pb.StudyAdminClient, func(), error) {
		if coordAddr == "" {
			return nil, nil, fmt.Errorf("%w: --coordinator is required", config.ErrConfig)
		}
		tc, err := dialTLS()
		if err != nil {
			return nil, nil, err
		}
		host, _, err := net.SplitHostPort(coordAddr)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: --coordinator %q: %v", config.ErrConfig, coordAddr, err)
		}
		tc.ServerName = host
		conn, err := grpc.NewClient(coordAddr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			return nil, nil, err
		}
		return pb.NewStudyAdminClient(conn), func() { conn.Close() }, nil
	}
	statusCmd := &cobra.Command{
		Use:   "status --coordinator ADDR --cert C --key K --ca CA [--json]",
		Short: "Show a study: phase, round, who has reported, what it waits for; at the end the final model and each site's accuracy",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			api, done, err := admin(cmd)
			if err != nil {
				return err
			}
			defer done()
			s, err := api.Status(cmd.Context(), &pb.StudyStatusRequest{})
			if err != nil {
				return err
			}
			return printStatus(cmd.OutOrStdout(), s, asJSON)
		},
	}
	statusCmd.Flags().StringVar(&coordAddr, "coordinator", "", "coordinator address")
	statusCmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	identity(statusCmd)
	start := &cobra.Command{
		Use:   "start STUDY_ID --coordinator ADDR --cert admin.pem --key admin-key.pem --ca ca.pem",
		Short: "Start a study whose coordinator waits for an admin (study.start: manual)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			api, done, err := admin(cmd)
			if err != nil {
				return err
			}
			defer done()
			s, err := api.Start(cmd.Context(), &pb.StartStudyRequest{StudyId: args[0]})
			if err != nil {
				return err
			}
			return printStatus(cmd.OutOrStdout(), s, asJSON)
		},
	}
	start.Flags().StringVar(&coordAddr, "coordinator", "", "coordinator address")
	identity(start)

	var reason string
	var readmit bool
	var fromRound uint64
	exclude := &cobra.Command{
		Use:   "exclude STUDY_ID SITE --reason TEXT [--from-round N] [--readmit] --coordinator ADDR --cert admin.pem --key admin-key.pem --ca ca.pem",
		Short: "Exclude a site from a study's later rounds (or readmit it), signed by an admin and recorded on the audit log",
		Long: `Exclude a hospital from a study's rounds, as a consortium admin: the admin
signs the exclusion (the site, the first round it applies to and the reason),
the coordinator relays it to the audit log and, once the log holds it, gives
the site no more training tasks. Every audit node then refuses a round that
aggregates the site's update, and 'fedledger verify' names the exclusion.
The anomaly detector and the norm check only flag a site ('study status'
shows the flags); excluding it is an admin's decision. --readmit readmits an
excluded site from the round given. The default round is the next one that
has not yet stopped collecting updates.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return fmt.Errorf("%w: study exclude needs --reason: the log records why", config.ErrConfig)
			}
			id, err := tlsutil.LoadIdentity(cert, key)
			if err != nil {
				return fmt.Errorf("%w: %v", config.ErrConfig, err)
			}
			if id.Role != tlsutil.RoleAdmin {
				return fmt.Errorf("%w: %q has role %s; exclusions are signed by an admin", config.ErrConfig, id.ID, id.Role)
			}
			api, done, err := admin(cmd)
			if err != nil {
				return err
			}
			defer done()
			from := fromRound
			if from == 0 {
				s, err := api.Status(cmd.Context(), &pb.StudyStatusRequest{})
				if err != nil {
					return err
				}
				from = s.Round
				switch s.Phase {
				case "bounding", "aggregating", "sketching", "decrypting", "combining", "countersigning", "recording":
					from++ // this round has its updates already
				}
			}
			env, err := audit.Sign(id, audit.ExclusionRecord(args[0], args[1], from, reason, id.ID, !readmit, time.Now().UnixNano()))
			if err != nil {
				return err
			}
			s, err := api.Exclude(cmd.Context(), &pb.ExcludeRequest{Envelope: env.Marshal()})
			if err != nil {
				return err
			}
			verb := "excluded"
			if readmit {
				verb = "readmitted"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s from round %d of study %q (signed by %s, on the audit log)\n", verb, args[1], from, args[0], id.ID)
			return printStatus(cmd.OutOrStdout(), s, asJSON)
		},
	}
	ef := exclude.Flags()
	ef.StringVar(&coordAddr, "coordinator", "", "coordinator address")
	ef.StringVar(&reason, "reason", "", "why (recorded on the audit log)")
	ef.BoolVar(&readmit, "readmit", false, "readmit an excluded site instead")
	ef.Uint64Var(&fromRound, "from-round", 0, "first round the exclusion applies to (default: the next round still collecting updates)")
	ef.BoolVar(&asJSON, "json", false, "print the study's status as JSON")
	identity(exclude)
	cmd.AddCommand(sign, create, list, statusCmd, start, exclude)
	return cmd
}
