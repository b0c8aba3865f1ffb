package secure

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/mhe"
)

// Envelope kinds.
const (
	KindContribution    byte = 1 // one client's encrypted update chunk
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
//	u32 BE  body length, then the body (Lattigo binary encoding)
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
	params, err := want.Preset.Params()
	if err != nil {
		return e, err
	}
	if size := bodySize(want.Preset, params, e.Kind); int(hdr.Len) != size {
		return e, fmt.Errorf("%w: body of %d bytes, a %s one is %d", ErrParams, hdr.Len, want.Preset.ID, size)
	}
	e.Body = b[len(b)-r.Len():]
	return e, nil
}

// bodySizes memoises the encoded size of one body: it is fixed by the ring
// degree, the levels and the kind, and finding it means allocating a whole
// ciphertext or share.
var bodySizes sync.Map // bodySizeKey -> int

type bodySizeKey struct {
	logN, levelQ, levelP int
	kind                 byte
}

// bodySize is the exact encoded size of one envelope body of kind under the
// preset's parameters.
func bodySize(preset Preset, params hefloat.Parameters, kind byte) int {
	key := bodySizeKey{params.LogN(), params.MaxLevelQ(), params.MaxLevelP(), kind}
	if n, ok := bodySizes.Load(key); ok {
		return n.(int)
	}
	var n int
	switch kind {
	case KindDecryptionShare:
		cks, _ := mhe.NewKeySwitchProtocol(params, preset.flooding())
		n = cks.AllocateShare(params.MaxLevel()).BinarySize()
	case KindPublicKeyShare:
		n = mhe.NewPublicKeyGenProtocol(params).AllocateShare().BinarySize()
	default:
		n = hefloat.NewCiphertext(params, 1, params.MaxLevel()).BinarySize()
	}
	bodySizes.Store(key, n)
	return n
}

// Ciphertext decodes an opened ciphertext envelope and checks its degree,
// level and ring degree.
func (e Envelope) Ciphertext(preset Preset) (ct *rlwe.Ciphertext, err error) {
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil { // third-party decoder on untrusted bytes
			ct, err = nil, fmt.Errorf("%w: ciphertext body: %v", ErrEnvelope, r)
		}
	}()
	ct = new(rlwe.Ciphertext)
	if err := ct.UnmarshalBinary(e.Body); err != nil {
		return nil, fmt.Errorf("%w: ciphertext body: %v", ErrEnvelope, err)
	}
	if err := checkCiphertext(params, ct); err != nil {
		return nil, err
	}
	return ct, nil
}

// SealCiphertexts wraps a payload's ciphertexts in envelopes.
func SealCiphertexts(kind byte, preset Preset, study string, round uint64, cts []*rlwe.Ciphertext) ([][]byte, error) {
	out := make([][]byte, len(cts))
	for i, ct := range cts {
		body, err := ct.MarshalBinary()
		if err != nil {
			return nil, err
		}
		if out[i], err = (Envelope{Kind: kind, Preset: preset.ID, Study: study, Round: round, Index: uint32(i), Count: uint32(len(cts)), Body: body}).Marshal(); err != nil {
			return nil, err
		}
	}
	return out, nil
}
