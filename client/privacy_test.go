package client

import (
	"errors"
	"math"
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/privacy"
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
		if eps[i], err = b.SpentSteps(4 * (i + 1)); err != nil {
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

type zeroNoise struct{}

func (zeroNoise) Normal() float64 { return 0 }

// TestClientLevelUpdate: DP-FedAvg's update is the local change clipped to
// the clip norm, plus noise of σ·S/√K per coordinate.
func TestClientLevelUpdate(t *testing.T) {
	b := &audit.DPBudget{NoiseMultiplier: 2, ClipNorm: 0.5, Level: audit.DPClient}
	parent := []float64{1, 1, 1}
	// A change of norm 5 is scaled to 0.5, keeping its direction.
	got := clientLevelUpdate(parent, []float64{4, 5, 1}, b, 4, zeroNoise{})
	if d := []float64{got[0] - 1, got[1] - 1, got[2] - 1}; math.Abs(d[0]-0.3) > 1e-12 || math.Abs(d[1]-0.4) > 1e-12 || d[2] != 0 {
		t.Fatalf("clipped change %v, want [0.3 0.4 0]", d)
	}
	// A change within the norm is kept.
	if got := clientLevelUpdate(parent, []float64{1.1, 1, 1}, b, 4, zeroNoise{}); math.Abs(got[0]-1.1) > 1e-15 {
		t.Fatalf("a small change was altered: %v", got)
	}
	// The noise: σ·S/√K = 2·0.5/2 = 0.5.
	n := 200000
	parent, local := make([]float64, n), make([]float64, n)
	got = clientLevelUpdate(parent, local, b, 4, privacy.NewGaussian())
	var sum, sq float64
	for _, v := range got {
		sum, sq = sum+v, sq+v*v
	}
	mean := sum / float64(n)
	std := math.Sqrt(sq/float64(n) - mean*mean)
	if math.Abs(std-0.5) > 0.005 || math.Abs(mean) > 0.005 {
		t.Fatalf("noise mean %v std %v, want 0 and 0.5", mean, std)
	}
}

// TestClientLevelRound: in a client-level DP study the site's update weighs
// 1, carries no training figures, and each round spends one mechanism of
// its account.
func TestClientLevelRound(t *testing.T) {
	f := secureFixture(t)
	spec := proto.Clone(f.spec).(*pb.StudySpec)
	spec.Dp = &pb.DPParams{Epsilon: 50, Delta: 1e-5, NoiseMultiplier: 1, ClipNorm: 1, SampleRate: 1, Level: audit.DPClient}
	e := f.clone(t, "site-a")
	e.spec = spec
	e.c = e.restart(t)
	task := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	if err := e.c.trainRound(t.Context(), e.coord, task); err != nil {
		t.Fatal(err)
	}
	hdr := e.coord.updates[0].header
	if hdr.NumSamples != 1 || hdr.Train.GetLoss() != 0 {
		t.Fatalf("client-level update: %d samples, training figures %v", hdr.NumSamples, hdr.Train)
	}
	b := mustBudget(t, spec)
	steps, spent, err := e.c.dpSpent(b)
	want, _ := b.Spent(1)
	if err != nil || steps != 1 || spent != want {
		t.Fatalf("account: %d mechanisms, ε %v (%v), want 1 and %v", steps, spent, err, want)
	}
}
