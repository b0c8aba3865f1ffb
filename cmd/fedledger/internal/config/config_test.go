package config

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/fedledger/fedledger/client"
	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// kit builds a directory like a provisioning kit: certificates, the test CSV
// exports, and a copy of the given config file, and returns the file's path.
func kit(t *testing.T, cfgFile string) string {
	t.Helper()
	dir := t.TempDir()
	certs := filepath.Join(dir, "certs")
	if err := os.Mkdir(certs, 0o700); err != nil {
		t.Fatal(err)
	}
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.WriteFiles(filepath.Join(certs, "ca.pem"), ""); err != nil {
		t.Fatal(err)
	}
	for id, role := range map[string]tlsutil.Role{"coordinator": tlsutil.RoleCoordinator, "cleveland": tlsutil.RoleClient} {
		ident, err := ca.Issue(id, role, []string{"127.0.0.1"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if err := ident.WriteFiles(filepath.Join(certs, id+".pem"), filepath.Join(certs, id+"-key.pem")); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(certs, "garbage.pem"), []byte("-----BEGIN NONSENSE-----\n"), 0o644)
	csvs, _ := filepath.Glob(filepath.Join("testdata", "*.csv"))
	for _, f := range csvs {
		copyFile(t, f, filepath.Join(dir, filepath.Base(f)))
	}
	dst := filepath.Join(dir, filepath.Base(cfgFile))
	copyFile(t, cfgFile, dst)
	return dst
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantError reads the "# error: ..." first line of a bad-config file.
func wantError(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadString('\n')
	want, ok := strings.CutPrefix(strings.TrimSpace(line), "# error: ")
	if !ok {
		t.Fatalf("%s: first line must be '# error: <substring>'", file)
	}
	return want
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestBadCoordinatorConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/coordinator/*.yaml")
	if len(files) == 0 {
		t.Fatal("no bad coordinator configs")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want := wantError(t, file)
			_, err := LoadCoordinator(kit(t, file), nil)
			if err == nil {
				t.Fatalf("loaded without error, want one containing %q", want)
			}
			if !errors.Is(err, ErrConfig) {
				t.Errorf("error %v is not a configuration error", err)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
		})
	}
}

func TestBadClientConfigs(t *testing.T) {
	files, _ := filepath.Glob("testdata/bad/client/*.yaml")
	if len(files) == 0 {
		t.Fatal("no bad client configs")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want := wantError(t, file)
			c, err := LoadClient(kit(t, file), nil)
			if err == nil {
				// Some problems (a label column the file lacks) are only
				// visible once the data is read, which client.New does at
				// start.
				_, err = client.New(c.Config, discard())
			}
			if err == nil {
				t.Fatalf("started without error, want one containing %q", want)
			}
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not contain %q", err, want)
			}
		})
	}
}

func TestGoodCoordinatorConfig(t *testing.T) {
	path := kit(t, "testdata/good/coordinator.yaml")
	c, err := LoadCoordinator(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Config.Study
	if s.ID != "heart-2026" || s.Rounds != 7 || s.MinClients != 3 || len(s.Clients) != 4 {
		t.Fatalf("study = %+v", s)
	}
	if s.Model.Kind != "mlp" || len(s.Model.Hidden) != 2 || s.Model.Hidden[0] != 16 {
		t.Fatalf("model = %+v", s.Model)
	}
	if s.RoundDeadline != 90*time.Second {
		t.Fatalf("round deadline = %v", s.RoundDeadline)
	}
	if s.Strategy.Name != "fedyogi" || s.Strategy.ServerLR != 0.02 || s.Strategy.Beta1 == 0 {
		t.Fatalf("strategy = %+v (unset fields must take fedyogi's defaults)", s.Strategy)
	}
	if s.Training.Optimizer != "sgd" || s.Training.BatchSize != 8 || s.Training.ProxMu != 0.01 {
		t.Fatalf("training = %+v", s.Training)
	}
	if want := filepath.Join(filepath.Dir(path), "state"); c.Config.DataDir != want {
		t.Fatalf("data dir %q, want %q (relative to the config file)", c.Config.DataDir, want)
	}
	if c.Identity.ID != "coordinator" || c.Config.TLS == nil {
		t.Fatal("identity or TLS not loaded")
	}
	if c.File.Log.Format != "json" || c.File.Log.Level != "debug" {
		t.Fatalf("log = %+v", c.File.Log)
	}
}

// TestCoordinatorDataDirIsAbsolute: a relative data_dir in a file named by
// a relative path (a coordinator started in its kit directory) becomes an
// absolute path, so what the coordinator reports under it (the final
// model's path in study status) means something to a reader elsewhere.
func TestCoordinatorDataDirIsAbsolute(t *testing.T) {
	path := kit(t, "testdata/good/coordinator.yaml")
	t.Chdir(filepath.Dir(path))
	c, err := LoadCoordinator(filepath.Base(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(filepath.Dir(path), "state"); c.Config.DataDir != want {
		t.Fatalf("data dir %q, want %q", c.Config.DataDir, want)
	}
}

// TestLoadStudyNeedsNoIdentity: the study section loads as the
// coordinator's does, from the file alone (an admin has no coordinator
// key), and a bad study is still a configuration error.
func TestLoadStudyNeedsNoIdentity(t *testing.T) {
	path := kit(t, "testdata/good/coordinator.yaml")
	full, err := LoadCoordinator(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.RemoveAll(filepath.Join(filepath.Dir(path), "certs"))
	if _, err := LoadCoordinator(path, nil); err == nil {
		t.Fatal("the coordinator loaded without its certificate")
	}
	study, err := LoadStudy(path)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("%+v", study) != fmt.Sprintf("%+v", full.Config.Study) {
		t.Fatalf("study %+v\nwant  %+v", study, full.Config.Study)
	}
	_, err = LoadStudy(kit(t, "testdata/bad/coordinator/k-exceeds-clients.yaml"))
	if !errors.Is(err, ErrConfig) {
		t.Fatalf("bad study: %v", err)
	}
}

// TestPrecedence checks flags > environment > file > defaults.
func TestPrecedence(t *testing.T) {
	path := kit(t, "testdata/good/coordinator.yaml")
	flags := pflag.NewFlagSet("t", pflag.ContinueOnError)
	flags.Int("rounds", 0, "")
	flags.String("strategy", "", "")
	flags.String("listen", "", "")

	// File only.
	c, err := LoadCoordinator(path, flags)
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.Study.Rounds != 7 || c.Config.Study.Strategy.Name != "fedyogi" {
		t.Fatalf("file values not used: rounds %d strategy %s", c.Config.Study.Rounds, c.Config.Study.Strategy.Name)
	}
	// Environment beats the file.
	t.Setenv("FEDLEDGER_STUDY_ROUNDS", "11")
	t.Setenv("FEDLEDGER_STUDY_STRATEGY_NAME", "fedadam")
	t.Setenv("FEDLEDGER_STUDY_CLIENTS", "a,b,c")
	if c, err = LoadCoordinator(path, flags); err != nil {
		t.Fatal(err)
	}
	if c.Config.Study.Rounds != 11 || c.Config.Study.Strategy.Name != "fedadam" || len(c.Config.Study.Clients) != 3 {
		t.Fatalf("environment not applied: %+v", c.Config.Study)
	}
	// Flags beat the environment.
	if err := flags.Parse([]string{"--rounds", "13"}); err != nil {
		t.Fatal(err)
	}
	if c, err = LoadCoordinator(path, flags); err != nil {
		t.Fatal(err)
	}
	if c.Config.Study.Rounds != 13 || c.Config.Study.Strategy.Name != "fedadam" {
		t.Fatalf("flag not applied: rounds %d", c.Config.Study.Rounds)
	}
	// Defaults fill what nobody set.
	if c.Config.Study.StartTimeout != DefaultCoordinatorFile().Study.StartTimeout {
		t.Fatalf("start timeout %v, want the default", c.Config.Study.StartTimeout)
	}
}

func TestGoodClientConfigLoadsCSV(t *testing.T) {
	c, err := LoadClient(kit(t, "testdata/good/client.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Config.Data.CSV == nil || !filepath.IsAbs(c.Config.Data.CSV.Path) {
		t.Fatalf("csv path not resolved: %+v", c.Config.Data.CSV)
	}
	if _, err := client.New(c.Config, discard()); err != nil {
		t.Fatalf("client.New on a good CSV config: %v", err)
	}
}

// TestGoodClientConfigNumericAll: numeric: all with exclude, and every
// other data key, reach the loader.
func TestGoodClientConfigNumericAll(t *testing.T) {
	c, err := LoadClient(kit(t, "testdata/good/client-numeric-all.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := c.Config.Data.CSV
	if d.Missing != "impute" || d.TestFraction != 0.25 || d.Seed != 7 || d.Standardize || len(d.MissingTokens) != 4 || len(d.Exclude) != 1 {
		t.Fatalf("csv config %+v", d)
	}
	tr, te, err := train.LoadCSV(*d)
	if err != nil {
		t.Fatal(err)
	}
	// age and chol numeric (smoker excluded), sex 2 levels, cp 4 levels; the
	// missing chol is imputed, so every row is kept.
	want := []string{"age", "chol", "sex=M", "cp=atypical", "cp=none", "cp=typical"}
	if strings.Join(tr.Features, ",") != strings.Join(want, ",") || tr.Len()+te.Len() != 60 {
		t.Fatalf("features %v, %d rows", tr.Features, tr.Len()+te.Len())
	}
	if chol := tr.Preprocessing.Columns[1]; chol.Name != "chol" || chol.Imputed != 1 || tr.Preprocessing.Mean != nil {
		t.Fatalf("chol %+v, means %v (standardize is off)", chol, tr.Preprocessing.Mean)
	}
}

func TestNewLogger(t *testing.T) {
	var sb strings.Builder
	l, err := NewLogger(&sb, LogFile{Format: "json", Level: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	l.Info("hidden")
	l.Warn("shown", "k", 1)
	if strings.Contains(sb.String(), "hidden") || !strings.Contains(sb.String(), `"msg":"shown"`) {
		t.Fatalf("json logger wrote %q", sb.String())
	}
	if _, err := NewLogger(&sb, LogFile{Format: "xml", Level: "info"}); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad format: %v", err)
	}
	if _, err := NewLogger(&sb, LogFile{Format: "text", Level: "loud"}); !errors.Is(err, ErrConfig) {
		t.Fatalf("bad level: %v", err)
	}
}
