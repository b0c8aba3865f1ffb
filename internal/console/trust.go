package console

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// ErrTrust: the audit nodes' checkpoint keys could not be learnt.
var ErrTrust = errors.New("console: the audit nodes' checkpoint keys")

// TrustFile is the trust of a trust file (what `fedledger verify --trust`
// reads).
func TrustFile(t *audit.TrustFile) TrustFunc {
	return func(context.Context) (audit.Trust, error) { return t.Trust() }
}

// HandshakeTrust learns the audit nodes' checkpoint keys from the nodes
// themselves, for a process that has no trust file but is a member of the
// consortium (the coordinator, an audit node): it opens a mutual-TLS
// connection to each address addrs gives, with tlsCfg (this process's
// identity and the consortium CA, whose RootCAs is also the trust's CA),
// and takes as a checkpoint key the key of the certificate the node
// presents, which must chain to the CA and carry the audit-node role,
// named by its id as `fedledger trust` names it. quorum is how many
// signatures a checkpoint needs (0: a majority of the addresses); origin,
// when set, is the log's name. Keys are learnt again when the addresses
// change, or after an hour; a node that does not answer is left out, and
// a trust with fewer keys than the quorum is an error.
//
// What it trusts is the consortium CA: any audit-node certificate it
// issued signs for the log. A regulator's trust file pins the nodes'
// keys instead; `fedledger verify --trust` remains the independent check.
func HandshakeTrust(addrs func() []string, tlsCfg *tls.Config, origin string, quorum int) TrustFunc {
	h := &handshakeTrust{addrs: addrs, tls: tlsCfg, origin: origin, quorum: quorum}
	return h.get
}

type handshakeTrust struct {
	addrs  func() []string
	tls    *tls.Config
	origin string
	quorum int

	mu    sync.Mutex
	key   string // the sorted addresses the cached trust was learnt from
	at    time.Time
	trust audit.Trust
}

// trustTTL is how long learnt keys are kept.
const trustTTL = time.Hour

func (h *handshakeTrust) get(ctx context.Context) (audit.Trust, error) {
	addrs := slices.Clone(h.addrs())
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	key := strings.Join(addrs, ",")
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.key == key && time.Since(h.at) < trustTTL {
		return h.trust, nil
	}
	if len(addrs) == 0 {
		return audit.Trust{}, fmt.Errorf("%w: no audit node addresses", ErrTrust)
	}
	quorum := h.quorum
	if quorum == 0 {
		quorum = len(addrs)/2 + 1
	}
	var vs []note.Verifier
	var errs []error
	seen := map[string]bool{}
	for _, a := range addrs {
		p, err := nodePeer(ctx, a, h.tls)
		if err == nil && seen[p.ID] {
			err = fmt.Errorf("%s: node %q answers at two addresses", a, p.ID)
		}
		var v note.Verifier
		if err == nil {
			v, err = audit.NoteVerifier(p)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		seen[p.ID] = true
		vs = append(vs, v)
	}
	if len(vs) < quorum {
		return audit.Trust{}, fmt.Errorf("%w: %d of %d nodes answered, a checkpoint needs %d signatures: %w", ErrTrust, len(vs), len(addrs), quorum, errors.Join(errs...))
	}
	t := audit.Trust{Roots: h.tls.RootCAs, Keys: note.VerifierList(vs...), Quorum: quorum, Origin: h.origin}
	if len(errs) == 0 { // keep only a complete set of keys
		h.key, h.at, h.trust = key, time.Now(), t
	}
	return t, nil
}

// nodePeer is the verified identity an audit node presents at addr.
func nodePeer(ctx context.Context, addr string, base *tls.Config) (tlsutil.Peer, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return tlsutil.Peer{}, fmt.Errorf("%s: %w", addr, err)
	}
	cfg := base.Clone()
	cfg.ServerName = host
	cfg.NextProtos = []string{"h2"} // the node's gRPC side, never its Raft side
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return tlsutil.Peer{}, fmt.Errorf("%s: %w", addr, err)
	}
	defer conn.Close()
	p, err := tlsutil.PeerFromTLS(conn.(*tls.Conn).ConnectionState())
	if err != nil {
		return tlsutil.Peer{}, fmt.Errorf("%s: %w", addr, err)
	}
	if p.Role != tlsutil.RoleAuditNode {
		return tlsutil.Peer{}, fmt.Errorf("%s: %q has the %s role, not %s", addr, p.ID, p.Role, tlsutil.RoleAuditNode)
	}
	return p, nil
}
