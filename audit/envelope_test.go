package audit_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

func nowRecord() *audit.Record {
	r := sampleRecord()
	r.TimestampUnixNs = time.Now().UnixNano()
	return r
}

func TestSignVerify(t *testing.T) {
	p := audittest.NewPKI(t)
	rec := nowRecord()
	env, err := audit.Sign(p.Coord, rec)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := audit.UnmarshalEnvelope(env.Marshal())
	if err != nil {
		t.Fatalf("UnmarshalEnvelope: %v", err)
	}
	got, signer, err := dec.Verify(p.CA.Pool())
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
	p := audittest.NewPKI(t)
	other := audittest.NewPKI(t)
	rec := nowRecord()

	if _, err := audit.Sign(p.Admin, rec); !errors.Is(err, audit.ErrSignerMismatch) {
		t.Fatalf("Sign with wrong identity: %v", err)
	}
	env, _ := audit.Sign(p.Coord, rec)

	flipped := *env
	flipped.Signature = bytes.Clone(env.Signature)
	flipped.Signature[5] ^= 1
	if _, _, err := flipped.Verify(p.CA.Pool()); !errors.Is(err, audit.ErrBadSignature) {
		t.Fatalf("flipped signature: %v", err)
	}
	if _, _, err := env.Verify(other.CA.Pool()); !errors.Is(err, audit.ErrUntrustedCert) {
		t.Fatalf("foreign CA: %v", err)
	}
	// Body claims another submitter but is signed by coord.
	forged := *env
	r2 := *rec
	r2.SubmitterID = "admin"
	forged.Body = r2.Marshal()
	forged.Signature = audittest.Must(audit.Sign(p.Coord, rec)).Signature
	if _, _, err := forged.Verify(p.CA.Pool()); !errors.Is(err, audit.ErrBadSignature) {
		t.Fatalf("body swapped: %v", err)
	}
	// Certificate not yet valid at the record's own timestamp.
	old := *rec
	old.TimestampUnixNs = time.Now().Add(-72 * time.Hour).UnixNano()
	envOld, _ := audit.Sign(p.Coord, &old)
	if _, _, err := envOld.Verify(p.CA.Pool()); !errors.Is(err, audit.ErrUntrustedCert) {
		t.Fatalf("record before cert validity: %v", err)
	}
}

// Flipping any single byte of an envelope makes decoding or verifying fail.
func TestEnvelopeEveryByteFlipFails(t *testing.T) {
	p := audittest.NewPKI(t)
	env, _ := audit.Sign(p.Coord, nowRecord())
	b := env.Marshal()
	pool := p.CA.Pool()
	for i := range b {
		m := bytes.Clone(b)
		m[i] ^= 0x01
		e, err := audit.UnmarshalEnvelope(m)
		if err != nil {
			continue
		}
		if _, _, err := e.Verify(pool); err == nil {
			t.Fatalf("flip at byte %d of %d accepted", i, len(b))
		}
	}
}

func TestUnmarshalEnvelopeRejects(t *testing.T) {
	p := audittest.NewPKI(t)
	good := audittest.Must(audit.Sign(p.Coord, nowRecord())).Marshal()
	if _, err := audit.UnmarshalEnvelope(append(bytes.Clone(good), 0)); !errors.Is(err, audit.ErrMalformed) {
		t.Fatalf("trailing: %v", err)
	}
	bad := bytes.Clone(good)
	bad[0] = 7
	if _, err := audit.UnmarshalEnvelope(bad); !errors.Is(err, audit.ErrVersion) {
		t.Fatalf("version: %v", err)
	}
	short := (&audit.Envelope{Body: sampleRecord().Marshal(), Signature: make([]byte, 10)}).Marshal()
	if _, err := audit.UnmarshalEnvelope(short); !errors.Is(err, audit.ErrMalformed) {
		t.Fatalf("short signature: %v", err)
	}
	badBody := (&audit.Envelope{Body: []byte{2, 99}, Signature: make([]byte, 64)}).Marshal()
	if _, err := audit.UnmarshalEnvelope(badBody); !errors.Is(err, audit.ErrMalformed) {
		t.Fatalf("bad body: %v", err)
	}
}

func FuzzUnmarshalEnvelope(f *testing.F) {
	p := audittest.NewPKI(f)
	f.Add(audittest.Must(audit.Sign(p.Coord, nowRecord())).Marshal())
	f.Add((&audit.Envelope{Body: sampleRecord().Marshal(), Signature: make([]byte, 64)}).Marshal())
	for _, r := range validRecords(f) {
		id := p.Coord
		if r.Kind == audit.KindStudyCreated {
			id = p.Admin
		}
		r.SubmitterID = id.ID
		f.Add(audittest.Leaf(id, r))
	}
	f.Add([]byte{1})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := audit.UnmarshalEnvelope(b)
		if err != nil {
			return
		}
		if !bytes.Equal(e.Marshal(), b) {
			t.Fatal("accepted a non-canonical envelope")
		}
		if _, err := audit.UnmarshalRecord(e.Body); err != nil {
			t.Fatalf("accepted envelope with bad body: %v", err)
		}
	})
}
