package client

import (
	"errors"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedledger/fedledger/audit"
	pb "github.com/fedledger/fedledger/proto"
)

// dpSpec is the fixture's secure study made record-level DP at q = 0.1,
// σ = 1, C = 1 (4 local steps a round), with a budget that allows exactly
// two trainings; it also returns ε after one, two and three trainings.
func dpSpec(t *testing.T) (*pb.StudySpec, [3]float64) {
	f := secureFixture(t)
	s := proto.Clone(f.spec).(*pb.StudySpec)
	s.Dp = &pb.DPParams{Epsilon: 100, Delta: 1e-5, NoiseMultiplier: 1, ClipNorm: 1, SampleRate: 0.1}
	b, err := dpBudget(s)
	if err != nil {
		t.Fatal(err)
	}
	var eps [3]float64
	for i := range eps {
		if eps[i], err = epsilonAfter(b, 4*(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	s.Dp.Epsilon = (eps[1] + eps[2]) / 2
	return s, eps
}

// TestDPClientNeverTrainsPastItsCap: a site trains with DP-SGD only while
// its own account stays within the study's budget, or its policy's cap if
// lower (a lower cap refuses the study outright: TestDPPolicy); the
// account survives a restart, and no update leaves once the budget is
// spent.
func TestDPClientNeverTrainsPastItsCap(t *testing.T) {
	spec, eps := dpSpec(t)
	f := secureFixture(t)
	task := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	for _, tc := range []struct {
		name   string
		cap    float64
		trains int
	}{
		{"no cap of its own", 0, 2},
		// A cap at the budget accepts the study; the cap binds.
		{"a cap at the budget", spec.Dp.Epsilon, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := f.clone(t, "site-a")
			e.spec = spec
			e.edit = func(c *Config) { c.Policy.MaxDPEpsilon = tc.cap }
			e.c = e.restart(t)
			for i := 0; i < tc.trains; i++ {
				if i == 1 {
					e.c = e.restart(t) // the account is on disk
				}
				if err := e.c.trainRound(t.Context(), e.coord, task); err != nil {
					t.Fatalf("training %d: %v", i+1, err)
				}
				if got := e.coord.updates[i].header.Train; got.Loss != 0 || got.Accuracy != 0 {
					t.Fatalf("a DP update reports training figures: %v", got)
				}
			}
			err := e.c.trainRound(t.Context(), e.coord, task)
			if !errors.Is(err, ErrPrivacyCap) {
				t.Fatalf("training past the cap: err = %v, want ErrPrivacyCap", err)
			}
			t.Log(err)
			if len(e.coord.updates) != tc.trains {
				t.Fatalf("%d updates sent, want %d", len(e.coord.updates), tc.trains)
			}
			_, spent, err := e.c.dpSpent(mustBudget(t, spec))
			if err != nil || spent != eps[tc.trains-1] {
				t.Fatalf("account says ε = %v (%v), want %v", spent, err, eps[tc.trains-1])
			}
			// A damaged account is not a fresh one: the site refuses to train.
			if err := os.WriteFile(e.c.dpFile(), []byte(`{"study":"heart-study","steps":0}`), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := e.c.trainRound(t.Context(), e.coord, task); err == nil || !strings.Contains(err.Error(), "privacy account") {
				t.Fatalf("with a rewritten account: err = %v", err)
			}
		})
	}
}

func mustBudget(t *testing.T, s *pb.StudySpec) *audit.DPBudget {
	b, err := dpBudget(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDPPolicy: a site with a privacy cap joins only DP studies whose
// budget is within it.
func TestDPPolicy(t *testing.T) {
	spec, _ := dpSpec(t)
	f := secureFixture(t)
	for _, tc := range []struct {
		name string
		cap  float64
		spec *pb.StudySpec
		want string
	}{
		{"no cap, DP study", 0, spec, ""},
		{"cap above the budget", spec.Dp.Epsilon + 1, spec, ""},
		{"cap below the budget", spec.Dp.Epsilon / 2, spec, "exceeds this site's cap"},
		{"cap, study without DP", 3, f.spec, "not differentially private"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := siteConfig(f.pki, "site-a", t.TempDir())
			cfg.Policy.MaxDPEpsilon = tc.cap
			c, err := newClient(cfg, &fakeLog{})
			if err != nil {
				t.Fatal(err)
			}
			reason := c.checkStudy(t.Context(), tc.spec)
			if (tc.want == "") != (reason == "") || !strings.Contains(reason, tc.want) {
				t.Fatalf("reason %q, want %q", reason, tc.want)
			}
		})
	}
	bad := proto.Clone(spec).(*pb.StudySpec)
	bad.Dp.SampleRate = 2
	c, err := newClient(siteConfig(f.pki, "site-a", t.TempDir()), &fakeLog{})
	if err != nil {
		t.Fatal(err)
	}
	if reason := c.checkStudy(t.Context(), bad); !strings.Contains(reason, "dp_sample_rate = 2") {
		t.Fatalf("a study with q = 2: %q", reason)
	}
}
