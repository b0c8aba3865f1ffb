package secure

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
)

// Encoding names of secure payloads on the wire (UpdateHeader.encoding).
const (
	// EncodingContribution is a client's encrypted weighted update: a
	// payload of KindContribution envelopes.
	EncodingContribution = "ckks-contribution/v2"
)

// A payload is what crosses the network as one blob (an update, an
// aggregate, a party's decryption shares): the envelopes of one object in
// index order, each framed by its length,
//
//	repeat count times:  u32 BE envelope length | envelope
//
// Every envelope of a given kind, preset and study has the same size, so a
// receiver knows the exact payload size before it reads a byte
// ([PayloadSize]) and rejects anything else.

// EncodePayload frames envelopes into one payload.
func EncodePayload(envs [][]byte) []byte {
	n := 0
	for _, e := range envs {
		n += 4 + len(e)
	}
	out := make([]byte, 0, n)
	for _, e := range envs {
		out = binary.BigEndian.AppendUint32(out, uint32(len(e)))
		out = append(out, e...)
	}
	return out
}

// envelopeSize is the exact encoded size of one envelope.
func envelopeSize(kind byte, preset Preset, study string) (int, error) {
	body, err := bodySize(preset, kind)
	if err != nil {
		return 0, err
	}
	// magic, version, kind, preset, study, round, index, count, body length.
	return 4 + 1 + 1 + 1 + len(preset.ID) + 1 + len(study) + 8 + 4 + 4 + 4 + body, nil
}

// PayloadSize is the exact size of a payload of count envelopes.
func PayloadSize(kind byte, preset Preset, study string, count int) (int64, error) {
	n, err := envelopeSize(kind, preset, study)
	if err != nil {
		return 0, err
	}
	return int64(count) * int64(4+n), nil
}

// CiphertextCount is how many ciphertexts carry a vector of dim values plus
// its weight.
func CiphertextCount(preset Preset, dim int) (int, error) {
	k, err := preset.kit()
	if err != nil {
		return 0, err
	}
	return (dim + 1 + k.slots() - 1) / k.slots(), nil
}

// OpenPayload splits a payload and opens every envelope strictly against
// want, in index order: exactly want.Count envelopes, each of the exact
// size, the i-th with index i. Nothing is decoded until the framing of the
// whole payload has checked out.
func OpenPayload(b []byte, want Expect) ([]Envelope, error) {
	size, err := envelopeSize(want.Kind, want.Preset, want.Study)
	if err != nil {
		return nil, err
	}
	if want.Count == 0 {
		return nil, fmt.Errorf("%w: a payload has at least one envelope", ErrEnvelope)
	}
	if total := int64(want.Count) * int64(4+size); int64(len(b)) != total {
		return nil, fmt.Errorf("%w: payload of %d bytes, %d envelopes of this kind make %d", ErrEnvelope, len(b), want.Count, total)
	}
	out := make([]Envelope, want.Count)
	for i := range out {
		if n := binary.BigEndian.Uint32(b); int(n) != size {
			return nil, fmt.Errorf("%w: envelope %d framed as %d bytes, want %d", ErrEnvelope, i, n, size)
		}
		e, err := OpenEnvelope(b[4:4+size], want)
		if err != nil {
			return nil, fmt.Errorf("envelope %d: %w", i, err)
		}
		if e.Index != uint32(i) {
			return nil, fmt.Errorf("%w: envelope %d has index %d", ErrEnvelope, i, e.Index)
		}
		out[i] = e
		b = b[4+size:]
	}
	return out, nil
}

// SealPayload seals polynomials (a contribution, an aggregate or a party's
// decryption shares) into one payload.
func SealPayload(kind byte, preset Preset, study string, round uint64, polys []ring.Poly) ([]byte, error) {
	envs, err := SealPolys(kind, preset, study, round, polys)
	if err != nil {
		return nil, err
	}
	return EncodePayload(envs), nil
}

// OpenPolys opens a payload of contribution, aggregate or decryption-share
// envelopes and decodes every polynomial.
func OpenPolys(b []byte, want Expect) ([]ring.Poly, error) {
	if want.Kind != KindContribution && want.Kind != KindAggregate && want.Kind != KindDecryptionShare {
		return nil, fmt.Errorf("%w: kind %d does not carry polynomials", ErrEnvelope, want.Kind)
	}
	envs, err := OpenPayload(b, want)
	if err != nil {
		return nil, err
	}
	out := make([]ring.Poly, len(envs))
	for i, e := range envs {
		if out[i], err = e.Poly(want.Preset); err != nil {
			return nil, fmt.Errorf("envelope %d: %w", i, err)
		}
	}
	return out, nil
}

// PublicKeyHash is the SHA-256 of a collective public key's binary
// encoding: what every party reports at the end of key setup, so that all
// of them (and the audit log) agree on one key.
func PublicKeyHash(pk *rlwe.PublicKey) ([32]byte, error) {
	b, err := pk.MarshalBinary()
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}
