package demo

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// devPKI is the demo's throw-away development CA and identities.
type devPKI struct {
	dir         string
	ca          *tlsutil.CA
	coordinator *tlsutil.Identity
	clients     map[string]*tlsutil.Identity
	admin       *tlsutil.Identity   // signs the study record
	regulator   *tlsutil.Identity   // observer: reads the log, verifies
	auditNodes  []*tlsutil.Identity // three audit-log nodes
}

// newDevPKI makes a fresh CA and one identity per participant, valid for a
// day, and writes them under dir for inspection. The CA key is not written.
func newDevPKI(dir string) (*devPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("demo: pki directory: %w", err)
	}
	ca, err := tlsutil.NewCA("fedledger demo development CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := ca.WriteFiles(filepath.Join(dir, "ca.pem"), ""); err != nil {
		return nil, err
	}
	p := &devPKI{dir: dir, ca: ca, clients: map[string]*tlsutil.Identity{}}
	issue := func(id string, role tlsutil.Role, hosts []string) (*tlsutil.Identity, error) {
		ident, err := ca.Issue(id, role, hosts, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		return ident, ident.WriteFiles(filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem"))
	}
	if p.coordinator, err = issue("coordinator", tlsutil.RoleCoordinator, []string{"127.0.0.1", "localhost"}); err != nil {
		return nil, err
	}
	for _, h := range train.Hospitals {
		if p.clients[h], err = issue(h, tlsutil.RoleClient, nil); err != nil {
			return nil, err
		}
	}
	if p.admin, err = issue("consortium-admin", tlsutil.RoleAdmin, nil); err != nil {
		return nil, err
	}
	if p.regulator, err = issue("regulator", tlsutil.RoleObserver, nil); err != nil {
		return nil, err
	}
	for i := 1; i <= 3; i++ {
		id, err := issue(fmt.Sprintf("audit-%d", i), tlsutil.RoleAuditNode, []string{"127.0.0.1", "localhost"})
		if err != nil {
			return nil, err
		}
		p.auditNodes = append(p.auditNodes, id)
	}
	return p, nil
}
