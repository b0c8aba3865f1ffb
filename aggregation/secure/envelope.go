package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
)

// Envelope kinds.
const (
	KindContribution    byte = 1 // one client's encrypted update chunk (c0)
	KindAggregate       byte = 2 // the coordinator's sum
	KindDecryptionShare byte = 3 // one client's key-switch share of an aggregate chunk
	KindPublicKeyShare  byte = 4 // one party's collective-public-key (CKG) share, round 0, one chunk
)

// ErrEnvelope marks a malformed envelope; ErrRound and ErrStudy a
// well-formed one that belongs elsewhere.
var (
	ErrEnvelope = errors.New("secure: malformed envelope")
	ErrStudy    = errors.New("secure: envelope for another study")
	ErrRound    = errors.New("secure: envelope for another round")
)

// Envelope wraps one ciphertext (or decryption share) with everything a
// receiver checks before touching it:
//
//	"FLCT"  magic
//	u8      version (1)
//	u8      kind
//	u8+n    parameter-set id
//	u8+n    study id
//	u64 BE  round
//	u32 BE  chunk index
//	u32 BE  chunk count
//	u32 BE  body length, then the body: one polynomial's residues, u64
//	        little endian, or (public-key share) Lattigo's encoding
type Envelope struct {
	Kind   byte
	Preset string
	Study  string
	Round  uint64
	Index  uint32
	Count  uint32
	Body   []byte
}

const envMagic = "FLCT"

// Marshal encodes the envelope.
func (e Envelope) Marshal() ([]byte, error) {
	if len(e.Preset) > 255 || len(e.Study) > 255 {
		return nil, fmt.Errorf("%w: id too long", ErrEnvelope)
	}
	var b bytes.Buffer
	b.WriteString(envMagic)
	b.WriteByte(1)
	b.WriteByte(e.Kind)
	b.WriteByte(byte(len(e.Preset)))
	b.WriteString(e.Preset)
	b.WriteByte(byte(len(e.Study)))
	b.WriteString(e.Study)
	binary.Write(&b, binary.BigEndian, e.Round)
	binary.Write(&b, binary.BigEndian, e.Index)
	binary.Write(&b, binary.BigEndian, e.Count)
	binary.Write(&b, binary.BigEndian, uint32(len(e.Body)))
	b.Write(e.Body)
	return b.Bytes(), nil
}

// Expect is what a receiver requires of an envelope.
type Expect struct {
	Kind   byte
	Preset Preset
	Study  string
	Round  uint64
	// Count is the exact number of chunks the payload must have.
	Count uint32
}

// OpenEnvelope parses b strictly against want. The body is checked to have
// exactly the size of one ciphertext (or share) of the preset, so a
// malicious length never causes a large allocation, and only then decoded.
func OpenEnvelope(b []byte, want Expect) (Envelope, error) {
	var e Envelope
	r := bytes.NewReader(b)
	magic := make([]byte, 4)
	if _, err := r.Read(magic); err != nil || string(magic) != envMagic {
		return e, fmt.Errorf("%w: bad magic", ErrEnvelope)
	}
	var ver byte
	var err error
	if ver, err = r.ReadByte(); err != nil || ver != 1 {
		return e, fmt.Errorf("%w: version %d, want 1", ErrEnvelope, ver)
	}
	if e.Kind, err = r.ReadByte(); err != nil || e.Kind != want.Kind {
		return e, fmt.Errorf("%w: kind %d, want %d", ErrEnvelope, e.Kind, want.Kind)
	}
	readStr := func(what string) (string, error) {
		n, err := r.ReadByte()
		if err != nil || int(n) > r.Len() {
			return "", fmt.Errorf("%w: truncated %s", ErrEnvelope, what)
		}
		s := make([]byte, n)
		r.Read(s)
		return string(s), nil
	}
	if e.Preset, err = readStr("parameter-set id"); err != nil {
		return e, err
	}
	if e.Preset != want.Preset.ID {
		return e, fmt.Errorf("%w: parameter set %q, this study uses %q", ErrParams, e.Preset, want.Preset.ID)
	}
	if e.Study, err = readStr("study id"); err != nil {
		return e, err
	}
	if e.Study != want.Study {
		return e, fmt.Errorf("%w: %q, want %q", ErrStudy, e.Study, want.Study)
	}
	var hdr struct {
		Round        uint64
		Index, Count uint32
		Len          uint32
	}
	if err := binary.Read(r, binary.BigEndian, &hdr); err != nil {
		return e, fmt.Errorf("%w: truncated header", ErrEnvelope)
	}
	e.Round, e.Index, e.Count = hdr.Round, hdr.Index, hdr.Count
	switch {
	case e.Round != want.Round:
		return e, fmt.Errorf("%w: round %d, want %d", ErrRound, e.Round, want.Round)
	case e.Count != want.Count:
		return e, fmt.Errorf("%w: %d chunks, want %d", ErrEnvelope, e.Count, want.Count)
	case e.Index >= e.Count:
		return e, fmt.Errorf("%w: chunk %d of %d", ErrEnvelope, e.Index, e.Count)
	case int(hdr.Len) != r.Len():
		return e, fmt.Errorf("%w: body of %d bytes announced, %d present", ErrEnvelope, hdr.Len, r.Len())
	}
	size, err := bodySize(want.Preset, e.Kind)
	if err != nil {
		return e, err
	}
	if int(hdr.Len) != size {
		return e, fmt.Errorf("%w: body of %d bytes, a %s one is %d", ErrParams, hdr.Len, want.Preset.ID, size)
	}
	e.Body = b[len(b)-r.Len():]
	return e, nil
}

// bodySize is the exact encoded size of one envelope body of kind under the
// preset: one polynomial for a contribution, an aggregate or a decryption
// share; Lattigo's encoding of a CKG share for a public-key share.
func bodySize(preset Preset, kind byte) (int, error) {
	if kind == KindPublicKeyShare {
		params, err := preset.Params()
		if err != nil {
			return 0, err
		}
		return pkShareSize(params), nil
	}
	k, err := preset.kit()
	if err != nil {
		return 0, err
	}
	return k.polyBytes(), nil
}

// pkShareSizes memoises the CKG share size per preset (finding it means
// allocating a share).
var pkShareSizes sync.Map // log N, levels -> int

func pkShareSize(params hefloat.Parameters) int {
	key := [3]int{params.LogN(), params.MaxLevelQ(), params.MaxLevelP()}
	if n, ok := pkShareSizes.Load(key); ok {
		return n.(int)
	}
	n := mhe.NewPublicKeyGenProtocol(params).AllocateShare().BinarySize()
	pkShareSizes.Store(key, n)
	return n
}

// Poly decodes an opened contribution, aggregate or decryption-share
// envelope: one polynomial of the preset, every residue below its modulus.
func (e Envelope) Poly(preset Preset) (ring.Poly, error) {
	if e.Kind == KindPublicKeyShare {
		return ring.Poly{}, fmt.Errorf("%w: kind %d does not carry a polynomial", ErrEnvelope, e.Kind)
	}
	k, err := preset.kit()
	if err != nil {
		return ring.Poly{}, err
	}
	return k.readPoly(e.Body)
}

// SealPolys wraps a payload's polynomials (a contribution, an aggregate or
// a party's decryption shares) in envelopes of kind.
func SealPolys(kind byte, preset Preset, study string, round uint64, polys []ring.Poly) ([][]byte, error) {
	k, err := preset.kit()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(polys))
	for i, p := range polys {
		if err := k.checkPoly(p); err != nil {
			return nil, fmt.Errorf("chunk %d: %w", i, err)
		}
		if out[i], err = (Envelope{Kind: kind, Preset: preset.ID, Study: study, Round: round, Index: uint32(i), Count: uint32(len(polys)), Body: k.appendPoly(make([]byte, 0, k.polyBytes()), p)}).Marshal(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
