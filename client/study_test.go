package client

import (
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/model"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// TestCheckStudy: the site accepts a study only within its capabilities
// and policy, and (with policy admins) only when the admin-signed study
// record on the audit log says what the coordinator announced; every
// refusal names its reason.
func TestCheckStudy(t *testing.T) {
	pki := audittest.NewPKI(t)
	initial := sha256.Sum256([]byte("initial model"))
	otherCA, err := tlsutil.NewCA("another consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreignAdmin := audittest.Issue(t, otherCA, "admin", tlsutil.RoleAdmin)
	rogueAdmin := audittest.Issue(t, pki.CA, "rogue-admin", tlsutil.RoleAdmin)
	features := func(t *testing.T) []string {
		c, err := newClient(siteConfig(pki, "site-a", t.TempDir()), nil)
		if err != nil {
			t.Fatal(err)
		}
		return c.train.Features
	}(t)

	// record signs the study record of s (edited) as admin.
	record := func(admin *tlsutil.Identity, s *pb.StudySpec, edit func(*pb.StudySpec), approved ...string) []byte {
		s = proto.Clone(s).(*pb.StudySpec)
		if edit != nil {
			edit(s)
		}
		if approved == nil {
			approved = sites
		}
		b, err := studyRecord(admin, s, initial, approved...)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	admins := func(c *Config) { c.Policy.Admins = []string{"admin"} }

	cases := []struct {
		name   string
		spec   func() *pb.StudySpec
		config func(*Config)
		// log is the study record on the audit log (nil: none).
		log  func(s *pb.StudySpec) []byte
		want string // "" accepted
	}{
		{name: "secure study accepted", spec: secureSpec},
		{name: "plaintext study accepted with allow_plaintext", spec: plaintextSpec, config: func(c *Config) { c.AllowPlaintext = true }},
		{name: "plaintext study without allow_plaintext", spec: plaintextSpec,
			want: "plaintext mode (the coordinator could read this site's updates) and this site does not set allow_plaintext"},
		{name: "secure study without audit nodes", spec: secureSpec, config: func(c *Config) { c.AuditNodes = nil },
			want: "secure study, but this site has no audit_nodes"},
		{name: "secure study without data_dir", spec: secureSpec, config: func(c *Config) { c.DataDir = "" },
			want: "secure study, but this site has no data_dir"},
		{name: "secure study with t=1", spec: func() *pb.StudySpec { s := secureSpec(); s.Threshold = 1; return s },
			want: "decryption threshold t=1: this site requires t >= 2"},
		{name: "unknown HE parameters", spec: func() *pb.StudySpec { s := secureSpec(); s.HePreset = "ckks-toy/v0"; return s },
			want: "ckks-toy/v0"},
		{name: "unknown mode", spec: func() *pb.StudySpec { s := secureSpec(); s.Mode = "hybrid"; return s },
			want: `unknown study mode "hybrid"`},
		{name: "study not configured here", spec: secureSpec, config: func(c *Config) { c.Studies = []string{"other-study"} },
			want: `study "heart-study" is not in this site's configured studies [other-study]`},
		{name: "model inputs do not match the data", spec: func() *pb.StudySpec { s := secureSpec(); s.Model.Inputs = 12; return s },
			want: "takes 12 inputs, local data has 13 features"},
		{name: "invalid model", spec: func() *pb.StudySpec { s := secureSpec(); s.Model.Hidden = []uint32{4}; return s },
			want: "logreg takes no hidden layers"},
		{name: "invalid training parameters", spec: func() *pb.StudySpec { s := secureSpec(); s.Training.Optimizer = "lbfgs"; return s },
			want: `optimizer "lbfgs"`},
		{name: "server optimiser not stated", spec: func() *pb.StudySpec { s := secureSpec(); s.ServerOptimizer = nil; return s },
			want: `does not state its server optimiser "fedadam"`},
		{name: "feature columns differ", spec: func() *pb.StudySpec {
			s := secureSpec()
			s.Features = slices.Clone(features)
			slices.Reverse(s.Features)
			return s
		}, want: "policy: study expects features"},

		// This site's policy.
		{name: "policy: model kind", spec: secureSpec, config: func(c *Config) { c.Policy.ModelKinds = []string{model.KindMLP} },
			want: `policy: model kind "logreg" is not allowed here (allowed: [mlp])`},
		{name: "policy: model kind allowed", spec: secureSpec, config: func(c *Config) { c.Policy.ModelKinds = []string{model.KindMLP, model.KindLogReg} }},
		{name: "policy: max parameters", spec: secureSpec, config: func(c *Config) { c.Policy.MaxParameters = 13 },
			want: "policy: model of 14 parameters exceeds this site's limit of 13"},
		{name: "policy: max parameters met", spec: secureSpec, config: func(c *Config) { c.Policy.MaxParameters = 14 }},
		{name: "policy: min K", spec: secureSpec, config: func(c *Config) { c.Policy.MinK = 3 },
			want: "policy: study K=2 is below this site's minimum of 3 contributors per round"},
		{name: "policy: min threshold", spec: secureSpec, config: func(c *Config) { c.Policy.MinThreshold = 3 },
			want: "policy: decryption threshold t=2 is below this site's minimum of 3"},
		{name: "policy: max rounds", spec: secureSpec, config: func(c *Config) { c.Policy.MaxRounds = 2 },
			want: "policy: study asks for 3 rounds, this site allows at most 2"},
		{name: "policy: allowed columns", spec: secureSpec, config: func(c *Config) { c.Policy.AllowedColumns = features[:len(features)-1] },
			want: `policy: column "` + features[len(features)-1] + `" is not among this site's allowed columns`},
		{name: "policy: all columns allowed", spec: secureSpec, config: func(c *Config) { c.Policy.AllowedColumns = features }},

		// Policy admins: the signed study record.
		{name: "admins: record accepted", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte { return record(pki.Admin, s, nil) }},
		{name: "admins: plaintext record accepted", spec: plaintextSpec, config: func(c *Config) { admins(c); c.AllowPlaintext = true },
			log: func(s *pb.StudySpec) []byte { return record(pki.Admin, s, nil) }},
		{name: "admins: no record on the log", spec: secureSpec, config: admins,
			want: `policy: cannot read study "heart-study" from the audit log: audit: unknown study`},
		{name: "admins: record is not an envelope", spec: secureSpec, config: admins,
			log: func(*pb.StudySpec) []byte { return []byte("not a record") }, want: "policy: study record:"},
		{name: "admins: signed by an unknown admin", spec: secureSpec, config: admins,
			log:  func(s *pb.StudySpec) []byte { return record(rogueAdmin, s, nil) },
			want: `policy: study "heart-study" was created by "rogue-admin", not one of this site's accepted admins [admin]`},
		{name: "admins: signed by another consortium's admin", spec: secureSpec, config: admins,
			log:  func(s *pb.StudySpec) []byte { return record(foreignAdmin, s, nil) },
			want: "not issued by the consortium CA"},
		{name: "admins: record of another study", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.StudyId = "other-study" })
			},
			want: `the record is for study "other-study", not "heart-study"`},
		{name: "admins: K differs", spec: secureSpec, config: admins,
			log:  func(s *pb.StudySpec) []byte { return record(pki.Admin, s, func(s *pb.StudySpec) { s.MinClients = 3 }) },
			want: "it says K=3, announced 2"},
		{name: "admins: rounds differ", spec: secureSpec, config: admins,
			log:  func(s *pb.StudySpec) []byte { return record(pki.Admin, s, func(s *pb.StudySpec) { s.Rounds = 5 }) },
			want: "it allows 5 rounds, announced 3"},
		{name: "admins: HE parameters differ", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.HePreset = "ckks-n15/v1" })
			},
			want: `its HE parameters are "ckks-n15/v1", announced "ckks-n14-q2x60-seeded/v2"`},
		{name: "admins: secure study announced as plaintext", spec: plaintextSpec, config: func(c *Config) { admins(c); c.AllowPlaintext = true },
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(r *pb.StudySpec) { r.Mode, r.HePreset, r.Threshold = modeSecure, secureSpec().HePreset, 2 })
			},
			want: "it is a secure study (ckks-n14-q2x60-seeded/v2), announced as plaintext"},
		{name: "admins: threshold differs", spec: secureSpec, config: admins,
			log:  func(s *pb.StudySpec) []byte { return record(pki.Admin, s, func(s *pb.StudySpec) { s.Threshold = 3 }) },
			want: "its decryption threshold is t=3, announced 2"},
		{name: "admins: strategy differs", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.Strategy = "fedavg" })
			},
			want: `its strategy is "fedavg", announced "fedadam"`},
		{name: "admins: learning rate differs", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.Training.LearningRate *= 10 })
			},
			want: `its learning_rate is "0.1", announced "0.01"`},
		{name: "admins: local steps differ", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.Training.LocalSteps, s.Training.Epochs = 7, 0 })
			},
			want: `its local_steps is "7"`},
		{name: "admins: server learning rate differs", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.ServerOptimizer.ServerLr = 3 })
			},
			want: `its server_lr is "3"`},
		{name: "admins: a validation split the record does not have", spec: func() *pb.StudySpec {
			s := secureSpec()
			s.ValidationFraction = 0.25
			return s
		}, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.ValidationFraction = 0 })
			},
			want: `its validation_fraction is "", announced "0.25"`},
		{name: "admins: the record's validation split not announced", spec: secureSpec, config: admins,
			log: func(s *pb.StudySpec) []byte {
				return record(pki.Admin, s, func(s *pb.StudySpec) { s.ValidationFraction = 0.25 })
			},
			want: `its validation_fraction is "0.25", announced ""`},
		{name: "admins: a trial's record accepted", spec: func() *pb.StudySpec {
			s := secureSpec()
			s.ValidationFraction = 0.25
			return s
		}, config: admins, log: func(s *pb.StudySpec) []byte { return record(pki.Admin, s, nil) }},
		{name: "admins: this site not approved", spec: secureSpec, config: admins,
			log:  func(s *pb.StudySpec) []byte { return record(pki.Admin, s, nil, "site-b", "site-c") },
			want: `site "site-a" is not among its approved sites [site-b site-c]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := siteConfig(pki, "site-a", t.TempDir())
			if tc.config != nil {
				tc.config(&cfg)
			}
			log := &fakeLog{}
			spec := tc.spec()
			if tc.log != nil {
				log.record = tc.log(spec)
			}
			c, err := newClient(cfg, log)
			if err != nil {
				t.Fatal(err)
			}
			reason := c.checkStudy(t.Context(), spec)
			switch {
			case tc.want == "" && reason != "":
				t.Fatalf("refused: %s", reason)
			case tc.want != "" && !strings.Contains(reason, tc.want):
				t.Fatalf("reason %q, want it to contain %q", reason, tc.want)
			}
			if tc.want != "" && (tc.log != nil || strings.HasPrefix(tc.name, "admins:")) && !strings.HasPrefix(reason, "policy: ") {
				t.Fatalf("reason %q: a study record refusal is a policy refusal", reason)
			}
		})
	}

	t.Run("audit log unreachable", func(t *testing.T) {
		cfg := siteConfig(pki, "site-a", t.TempDir())
		admins(&cfg)
		c, err := newClient(cfg, &fakeLog{err: errors.New("no audit node answers")})
		if err != nil {
			t.Fatal(err)
		}
		if reason := c.checkStudy(t.Context(), secureSpec()); !strings.Contains(reason, "no audit node answers") {
			t.Fatalf("reason %q", reason)
		}
	})
}
