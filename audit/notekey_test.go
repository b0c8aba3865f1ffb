package audit

import (
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

func TestNoteKeysFromIdentity(t *testing.T) {
	ca, _ := tlsutil.NewCA("c", time.Hour)
	// Many keys, so some have a '+' in their base64 form.
	for i := 0; i < 50; i++ {
		id, _ := ca.Issue("audit-1", tlsutil.RoleAuditNode, nil, time.Hour)
		if _, err := NoteSigner(id); err != nil {
			t.Fatalf("key %d: %v", i, err)
		}
	}
	id, _ := ca.Issue("audit-1", tlsutil.RoleAuditNode, nil, time.Hour)
	other, _ := ca.Issue("audit-2", tlsutil.RoleAuditNode, nil, time.Hour)
	s, err := NoteSigner(id)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := note.Sign(&note.Note{Text: "hello\n"}, s)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := NoteVerifier(tlsutil.Peer{ID: id.ID, Role: id.Role, Cert: id.Cert})
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Fatalf("signature by the identity key does not verify with the certificate's key: %v", err)
	}
	w, _ := NoteVerifier(tlsutil.Peer{ID: id.ID, Role: id.Role, Cert: other.Cert})
	if _, err := note.Open(msg, note.VerifierList(w)); err == nil {
		t.Fatal("verified with another node's key under the same name")
	}
}
