package audit

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// TrustFile is what a regulator needs to verify a model offline, as JSON:
// the consortium CA (record signers), the checkpoint keys of the audit
// nodes and how many of them must have signed a checkpoint.
type TrustFile struct {
	Origin  string   `json:"origin"`
	CAPEM   string   `json:"ca_pem"`
	LogKeys []string `json:"log_keys"`
	Quorum  int      `json:"quorum"`
}

// ErrTrust marks an unusable trust file.
var ErrTrust = errors.New("audit: bad trust file")

// NewTrustFile builds a trust file from the CA certificate and the audit
// nodes' certificates (their checkpoint keys follow from them).
func NewTrustFile(origin string, caPEM []byte, nodes []*x509.Certificate, quorum int) (*TrustFile, error) {
	t := &TrustFile{Origin: origin, CAPEM: string(caPEM), Quorum: quorum}
	for _, c := range nodes {
		p := tlsutil.Peer{ID: c.Subject.CommonName, Cert: c}
		k, err := NoteVerifierKey(p.ID, p.PublicKey())
		if err != nil {
			return nil, err
		}
		t.LogKeys = append(t.LogKeys, k)
	}
	if _, err := t.Trust(); err != nil {
		return nil, err
	}
	return t, nil
}

// Trust turns the file into verifier inputs, checking every field.
func (t *TrustFile) Trust() (Trust, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(t.CAPEM)) {
		return Trust{}, fmt.Errorf("%w: ca_pem holds no certificate", ErrTrust)
	}
	var vs []note.Verifier
	seen := map[string]bool{}
	for _, k := range t.LogKeys {
		v, err := note.NewVerifier(k)
		if err != nil {
			return Trust{}, fmt.Errorf("%w: log key %q: %v", ErrTrust, k, err)
		}
		if seen[v.Name()] {
			return Trust{}, fmt.Errorf("%w: two log keys named %q", ErrTrust, v.Name())
		}
		seen[v.Name()] = true
		vs = append(vs, v)
	}
	if t.Quorum < 1 || t.Quorum > len(vs) {
		return Trust{}, fmt.Errorf("%w: quorum %d with %d log keys", ErrTrust, t.Quorum, len(vs))
	}
	if t.Origin == "" {
		return Trust{}, fmt.Errorf("%w: no origin", ErrTrust)
	}
	return Trust{Roots: pool, Keys: note.VerifierList(vs...), Quorum: t.Quorum, Origin: t.Origin}, nil
}

// LoadTrust reads a trust file.
func LoadTrust(path string) (Trust, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Trust{}, fmt.Errorf("%w: %v", ErrTrust, err)
	}
	var t TrustFile
	if err := json.Unmarshal(b, &t); err != nil {
		return Trust{}, fmt.Errorf("%w: %s: %v", ErrTrust, path, err)
	}
	return t.Trust()
}

// Write saves the trust file (world-readable: it holds no secret).
func (t *TrustFile) Write(path string) error {
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
