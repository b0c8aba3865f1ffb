package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Envelope is a record body signed by its submitter. Its encoding (Marshal)
// is exactly what the Merkle log stores as a leaf.
type Envelope struct {
	Body      []byte // canonical Record encoding, signed as-is
	CertDER   []byte // submitter's identity certificate
	Signature []byte // Ed25519 over RecordMessage(Body)
}

// Errors returned when verifying an envelope.
var (
	ErrBadSignature   = errors.New("audit: bad record signature")
	ErrUntrustedCert  = errors.New("audit: signer certificate not issued by the consortium CA")
	ErrSignerMismatch = errors.New("audit: record submitter does not match signer certificate")
)

const (
	envelopeVersion = 1
	maxBody         = 1 << 20
	maxCert         = 1 << 13
)

// Sign encodes rec and signs it with id. rec.SubmitterID must equal id.ID.
func Sign(id *tlsutil.Identity, rec *Record) (*Envelope, error) {
	if id == nil || id.Cert == nil {
		return nil, errors.New("audit: Sign: nil identity")
	}
	if rec.SubmitterID != id.ID {
		return nil, fmt.Errorf("submitter %q, identity %q: %w", rec.SubmitterID, id.ID, ErrSignerMismatch)
	}
	body := rec.Marshal()
	return &Envelope{
		Body:      body,
		CertDER:   bytes.Clone(id.Cert.Raw),
		Signature: ed25519.Sign(id.Key, RecordMessage(body)),
	}, nil
}

// Marshal returns the canonical envelope encoding.
func (e *Envelope) Marshal() []byte {
	enc := &encoder{b: make([]byte, 0, 1+len(e.Body)+len(e.CertDER)+len(e.Signature)+12)}
	enc.b = append(enc.b, envelopeVersion)
	enc.bytes(e.Body)
	enc.bytes(e.CertDER)
	enc.bytes(e.Signature)
	return enc.b
}

// UnmarshalEnvelope strictly decodes an envelope: version, lengths,
// signature size, trailing bytes and canonical form are all checked, and the
// body must itself be a canonical record. It does not check the signature.
func UnmarshalEnvelope(b []byte) (*Envelope, error) {
	d := &decoder{b: b}
	v := d.take("envelope.version", 1)
	if d.err != nil {
		return nil, d.err
	}
	if v[0] != envelopeVersion {
		return nil, &DecodeError{Field: "envelope.version", Err: fmt.Errorf("version %d: %w", v[0], ErrVersion)}
	}
	e := &Envelope{}
	e.Body = bytes.Clone(d.take("envelope.body", d.count("envelope.body", maxBody)))
	e.CertDER = bytes.Clone(d.take("envelope.cert", d.count("envelope.cert", maxCert)))
	e.Signature = bytes.Clone(d.take("envelope.signature", d.count("envelope.signature", ed25519.SignatureSize)))
	if d.err != nil {
		return nil, d.err
	}
	if len(e.Signature) != ed25519.SignatureSize {
		return nil, &DecodeError{Field: "envelope.signature", Offset: d.off,
			Err: fmt.Errorf("signature is %d bytes, want %d: %w", len(e.Signature), ed25519.SignatureSize, ErrMalformed)}
	}
	if d.off != len(b) {
		return nil, &DecodeError{Field: "envelope.trailer", Offset: d.off, Err: fmt.Errorf("%d trailing bytes: %w", len(b)-d.off, ErrMalformed)}
	}
	if !bytes.Equal(e.Marshal(), b) {
		return nil, &DecodeError{Field: "envelope", Err: ErrNonCanonical}
	}
	if _, err := UnmarshalRecord(e.Body); err != nil {
		return nil, fmt.Errorf("audit: envelope body: %w", err)
	}
	return e, nil
}

// Verify checks that the envelope's certificate chains to roots at the
// record's own timestamp (never the wall clock, so every node agrees), that
// the signature is valid over the exact body bytes, and that the record's
// SubmitterID is the certificate's CN. It returns the decoded record and the
// signer's identity (ID and role).
func (e *Envelope) Verify(roots *x509.CertPool) (*Record, tlsutil.Peer, error) {
	rec, err := UnmarshalRecord(e.Body)
	if err != nil {
		return nil, tlsutil.Peer{}, err
	}
	cert, err := x509.ParseCertificate(e.CertDER)
	if err != nil {
		return nil, tlsutil.Peer{}, fmt.Errorf("audit: signer certificate: %w", err)
	}
	chains, err := cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: time.Unix(0, rec.TimestampUnixNs),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, tlsutil.Peer{}, fmt.Errorf("%w: %q: %w", ErrUntrustedCert, cert.Subject.CommonName, err)
	}
	signer, err := tlsutil.PeerFromTLS(tls.ConnectionState{VerifiedChains: chains})
	if err != nil {
		return nil, tlsutil.Peer{}, fmt.Errorf("audit: signer identity: %w", err)
	}
	if !ed25519.Verify(signer.PublicKey(), RecordMessage(e.Body), e.Signature) {
		return nil, tlsutil.Peer{}, fmt.Errorf("signer %q: %w", signer.ID, ErrBadSignature)
	}
	if rec.SubmitterID != signer.ID {
		return nil, tlsutil.Peer{}, fmt.Errorf("submitter %q, signer %q: %w", rec.SubmitterID, signer.ID, ErrSignerMismatch)
	}
	return rec, signer, nil
}
