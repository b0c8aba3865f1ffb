package layout

import (
	"encoding/json"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/fedledger/fedledger"

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

// packages lists every package of the module with its direct imports and
// transitive dependencies (tests excluded).
func packages(t *testing.T) map[string]pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", mod+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	all := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		all[p.ImportPath] = p
	}
	if len(all) < 20 {
		t.Fatalf("go list found %d packages", len(all))
	}
	return all
}

func under(path string, dirs ...string) bool {
	for _, d := range dirs {
		if path == mod+"/"+d || strings.HasPrefix(path, mod+"/"+d+"/") {
			return true
		}
	}
	return false
}

func hasPrefix(list []string, prefixes ...string) string {
	for _, dep := range list {
		for _, p := range prefixes {
			if dep == p || strings.HasPrefix(dep, p+"/") {
				return dep
			}
		}
	}
	return ""
}

// TestImportRules keeps the layout:
//   - coordinator/ and client/ do not import Lattigo: the HE protocol is
//     aggregation/secure's two roles;
//   - the audit log's pure core depends on neither gRPC nor Raft (nor
//     bbolt): replication is audit/cluster's;
//   - the study machine depends on no protobuf, gRPC, Lattigo or
//     networking/disk packages: it is pure;
//   - only cmd/ imports viper and cobra: libraries take typed configs;
//   - the ground-floor internal packages import no domain package.
func TestImportRules(t *testing.T) {
	all := packages(t)
	const lattigo = "github.com/tuneinsight/lattigo"
	for path, p := range all {
		if under(path, "coordinator", "client") {
			if dep := hasPrefix(p.Imports, lattigo); dep != "" {
				t.Errorf("%s imports %s: coordinator/ and client/ use aggregation/secure's roles", path, dep)
			}
		}
		if !under(path, "cmd") {
			if dep := hasPrefix(p.Imports, "github.com/spf13/viper", "github.com/spf13/cobra"); dep != "" {
				t.Errorf("%s imports %s: only cmd/ reads flags and configuration files", path, dep)
			}
		}
		if under(path, "internal/chunk", "internal/fsutil", "internal/version", "internal/datasets", "internal/model", "internal/tlsutil", "internal/grpcauth", "internal/logtest") {
			if dep := hasPrefix(p.Imports, mod+"/coordinator", mod+"/client", mod+"/aggregation", mod+"/audit", mod+"/experiments", mod+"/cmd"); dep != "" {
				t.Errorf("%s imports %s: ground-floor internal packages import no domain package", path, dep)
			}
		}
	}
	core, ok := all[mod+"/audit"]
	if !ok {
		t.Fatal("no package audit")
	}
	if dep := hasPrefix(core.Deps, "google.golang.org/grpc", "github.com/hashicorp/raft", "go.etcd.io/bbolt"); dep != "" {
		t.Errorf("the audit log's pure core depends on %s", dep)
	}
	machine, ok := all[mod+"/coordinator/study"]
	if !ok {
		t.Fatal("no package coordinator/study")
	}
	if dep := hasPrefix(machine.Deps, "google.golang.org/protobuf", "google.golang.org/grpc", lattigo, mod+"/proto", "github.com/hashicorp/raft"); dep != "" {
		t.Errorf("the study machine depends on %s", dep)
	}
	for _, banned := range []string{"os", "net", "net/http", "time/tzdata"} {
		if slices.Contains(machine.Imports, banned) {
			t.Errorf("the study machine imports %s: it does no I/O", banned)
		}
	}
}
