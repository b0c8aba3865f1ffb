package audit

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Checkpoint keys. A node signs (and, as a witness, cosigns) checkpoints
// with the Ed25519 key of its audit-node certificate, under its node id as
// the note key name. The note format signs its own domain ("note text"),
// distinct from TLS 1.3 handshake signatures (context-prefixed transcripts)
// and record envelopes (domain-prefixed), so one key serves all three
// without a message of one kind being valid as another. It also means the
// verifier key of every node follows from its certificate: a trust file is
// the consortium CA plus the node certificates (or their verifier keys).

// NoteVerifierKey is the sumdb/note verifier key of an Ed25519 identity.
func NoteVerifierKey(name string, pub ed25519.PublicKey) (string, error) {
	return note.NewEd25519VerifierKey(name, pub)
}

// NoteSigner is the checkpoint signer of a node identity.
func NoteSigner(id *tlsutil.Identity) (note.Signer, error) {
	vkey, err := NoteVerifierKey(id.ID, id.Key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	// vkey is "<name>+<hash>+<base64(alg||pub)>"; the signer key shares the
	// name and hash and carries the seed.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, fmt.Errorf("audit: unexpected verifier key %q", vkey)
	}
	skey := "PRIVATE+KEY+" + parts[0] + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, id.Key.Seed()...))
	return note.NewSigner(skey)
}

// NoteVerifier is the checkpoint verifier of a peer's identity.
func NoteVerifier(p tlsutil.Peer) (note.Verifier, error) {
	vkey, err := NoteVerifierKey(p.ID, p.PublicKey())
	if err != nil {
		return nil, err
	}
	return note.NewVerifier(vkey)
}
