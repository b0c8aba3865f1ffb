package audit

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

type testPKI struct {
	ca           *tlsutil.CA
	coord, admin *tlsutil.Identity
}

func newPKI(t testing.TB) *testPKI {
	t.Helper()
	ca, err := tlsutil.NewCA("consortium", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id string, role tlsutil.Role) *tlsutil.Identity {
		i, err := ca.Issue(id, role, nil, 24*time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	return &testPKI{ca: ca, coord: issue("coord", tlsutil.RoleCoordinator), admin: issue("admin", tlsutil.RoleAdmin)}
}

func nowRecord() *Record {
	r := sampleRecord()
	r.TimestampUnixNs = time.Now().UnixNano()
	return r
}

func TestSignVerify(t *testing.T) {
	p := newPKI(t)
	rec := nowRecord()
	env, err := Sign(p.coord, rec)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := UnmarshalEnvelope(env.Marshal())
	if err != nil {
		t.Fatalf("UnmarshalEnvelope: %v", err)
	}
	got, signer, err := dec.Verify(p.ca.Pool())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if signer.ID != "coord" || signer.Role != tlsutil.RoleCoordinator || got.Round != rec.Round {
		t.Fatalf("signer %+v record round %d", signer, got.Round)
	}
	if !bytes.Equal(dec.Body, rec.Marshal()) {
		t.Fatal("signed body is not the canonical encoding")
	}
}

func TestVerifyRejects(t *testing.T) {
	p := newPKI(t)
	other := newPKI(t)
	rec := nowRecord()

	if _, err := Sign(p.admin, rec); !errors.Is(err, ErrSignerMismatch) {
		t.Fatalf("Sign with wrong identity: %v", err)
	}
	env, _ := Sign(p.coord, rec)

	flipped := *env
	flipped.Signature = bytes.Clone(env.Signature)
	flipped.Signature[5] ^= 1
	if _, _, err := flipped.Verify(p.ca.Pool()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("flipped signature: %v", err)
	}
	if _, _, err := env.Verify(other.ca.Pool()); !errors.Is(err, ErrUntrustedCert) {
		t.Fatalf("foreign CA: %v", err)
	}
	// Body claims another submitter but is signed by coord.
	forged := *env
	r2 := *rec
	r2.SubmitterID = "admin"
	forged.Body = r2.Marshal()
	forged.Signature = Must(Sign(p.coord, rec)).Signature
	if _, _, err := forged.Verify(p.ca.Pool()); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("body swapped: %v", err)
	}
	// Certificate not yet valid at the record's own timestamp.
	old := *rec
	old.TimestampUnixNs = time.Now().Add(-72 * time.Hour).UnixNano()
	envOld, _ := Sign(p.coord, &old)
	if _, _, err := envOld.Verify(p.ca.Pool()); !errors.Is(err, ErrUntrustedCert) {
		t.Fatalf("record before cert validity: %v", err)
	}
}

// Must is a test helper for one-result constructors.
func Must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// Flipping any single byte of an envelope makes decoding or verifying fail.
func TestEnvelopeEveryByteFlipFails(t *testing.T) {
	p := newPKI(t)
	env, _ := Sign(p.coord, nowRecord())
	b := env.Marshal()
	pool := p.ca.Pool()
	for i := range b {
		m := bytes.Clone(b)
		m[i] ^= 0x01
		e, err := UnmarshalEnvelope(m)
		if err != nil {
			continue
		}
		if _, _, err := e.Verify(pool); err == nil {
			t.Fatalf("flip at byte %d of %d accepted", i, len(b))
		}
	}
}

func TestUnmarshalEnvelopeRejects(t *testing.T) {
	p := newPKI(t)
	good := Must(Sign(p.coord, nowRecord())).Marshal()
	if _, err := UnmarshalEnvelope(append(bytes.Clone(good), 0)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("trailing: %v", err)
	}
	bad := bytes.Clone(good)
	bad[0] = 7
	if _, err := UnmarshalEnvelope(bad); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: %v", err)
	}
	short := (&Envelope{Body: sampleRecord().Marshal(), Signature: make([]byte, 10)}).Marshal()
	if _, err := UnmarshalEnvelope(short); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short signature: %v", err)
	}
	badBody := (&Envelope{Body: []byte{2, 99}, Signature: make([]byte, 64)}).Marshal()
	if _, err := UnmarshalEnvelope(badBody); !errors.Is(err, ErrMalformed) {
		t.Fatalf("bad body: %v", err)
	}
}

func FuzzUnmarshalEnvelope(f *testing.F) {
	p := newPKI(f)
	f.Add(Must(Sign(p.coord, nowRecord())).Marshal())
	f.Add((&Envelope{Body: sampleRecord().Marshal(), Signature: make([]byte, 64)}).Marshal())
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := UnmarshalEnvelope(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatal("accepted a non-canonical envelope")
		}
		if _, err := UnmarshalRecord(e.Body); err != nil {
			t.Fatalf("accepted envelope with bad body: %v", err)
		}
	})
}
