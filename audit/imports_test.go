package audit_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImportsNeitherGRPCNorRaft keeps the package pure, as its doc says:
// replication and serving are audit/cluster's. gRPC may come in only
// through internal/tlsutil (its peer-from-context helpers); Raft and bbolt
// not at all.
func TestImportsNeitherGRPCNorRaft(t *testing.T) {
	list := func(format string) []string {
		out, err := exec.Command("go", "list", "-f", format, "github.com/fedledger/fedledger/audit").Output()
		if err != nil {
			t.Skipf("go list: %v", err)
		}
		return strings.Fields(strings.Trim(strings.TrimSpace(string(out)), "[]"))
	}
	for _, dep := range list("{{.Imports}}") {
		if strings.HasPrefix(dep, "google.golang.org/grpc") || strings.Contains(dep, "raft") || strings.Contains(dep, "bbolt") {
			t.Errorf("package audit imports %s", dep)
		}
	}
	for _, dep := range list("{{.Deps}}") {
		if strings.Contains(dep, "hashicorp/raft") || strings.Contains(dep, "bbolt") {
			t.Errorf("package audit depends on %s", dep)
		}
	}
}
