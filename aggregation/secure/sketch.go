package secure

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/tuneinsight/lattigo/v5/ring"
)

// Checking the aggregate with sketches.
//
// A decryptor must know that the aggregate it helps decrypt is the sum of
// exactly the listed contributions. Re-adding them costs it N−1
// contributions of download. Instead, once the coordinator has committed
// to the aggregate (its hash, and the manifest), every contributor sends a
// signed sketch of its own contribution: SketchRows random linear
// combinations, per modulus q_i, of all its coefficients,
//
//	S_j[r][i] = Σ_{c,x} R[r][c][i][x] · c_j[c][i][x]  mod q_i,
//
// with R uniform mod q_i, drawn from SketchChallenge (the manifest's
// digest and the aggregate's hash). The decryptor computes the same
// combinations of the aggregate and checks they equal Σ_j S_j. If the
// aggregate A differs from Σ_j c_j by D ≠ 0, D has a non-zero residue
// mod some q_i at some coefficient, and each row's combination of D
// vanishes mod q_i with probability exactly 1/q_i over R; the rows are
// independent, so a wrong aggregate passes with probability at most
// q_min^-SketchRows < 2^-118 for the default preset (two 60-bit primes).
// R is fixed only after the aggregate is, so a coordinator that tries
// aggregates until one passes needs about 2^118 attempts, each a SHA-256
// and a full sketch; after 2^78 of them its chance is still below 2^-40.
//
// A sketch is a linear function of a contribution the coordinator already
// holds; it tells the coordinator nothing new. A contributor that signs a
// false sketch makes the check fail (the decryptor then re-adds every
// contribution, which settles who lied; see Verification) or, colluding
// with the coordinator, makes a wrong aggregate pass; but that is no more
// than it could do by sending a different contribution in the first place,
// and the false sketch is signed evidence against it.

// SketchRows is the number of independent linear combinations per modulus.
const SketchRows = 2

// sketchDomain separates the sketch coefficients' seed from every other
// hash in fedledger.
const sketchDomain = "fedledger/secure/sketch/v1\x00"

// SketchChallenge is the seed of a round's sketch coefficients: the
// manifest's digest (study, round, parent, the signed contributions) and
// the aggregate's hash. Anyone holding the manifest computes it; nobody
// can choose it after the aggregate is fixed.
func SketchChallenge(m Manifest) [32]byte {
	d := m.Digest()
	h := sha256.New()
	h.Write([]byte(sketchDomain))
	h.Write(d[:])
	h.Write(m.AggregateHash[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// SketchSize is the size in bytes of a sketch of the preset.
func SketchSize(preset Preset) (int, error) {
	k, err := preset.kit()
	if err != nil {
		return 0, err
	}
	return 8 * SketchRows * len(k.q), nil
}

// coefficientSeed is the key of chunk c's coefficients.
func coefficientSeed(challenge [32]byte, chunk int) [32]byte {
	h := sha256.New()
	h.Write([]byte(sketchDomain))
	h.Write(challenge[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(chunk)))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// uniformMod draws values uniform mod q from an AES-CTR stream by
// rejection (q ≥ 2^(bits−1), so at most half the draws are rejected).
type uniformMod struct {
	prng interface{ Read([]byte) (int, error) }
	buf  []byte
	off  int
}

func (u *uniformMod) next(q uint64) uint64 {
	mask := uint64(1)<<bits.Len64(q) - 1
	for {
		if u.off == len(u.buf) {
			u.prng.Read(u.buf)
			u.off = 0
		}
		v := binary.LittleEndian.Uint64(u.buf[u.off:]) & mask
		u.off += 8
		if v < q {
			return v
		}
	}
}

// sketch computes the SketchRows combinations per modulus of polys (one
// per chunk) under challenge, row-major: value [r·L + i] is row r mod q_i.
func (k *kit) sketch(challenge [32]byte, polys []ring.Poly) ([]uint64, error) {
	L := len(k.q)
	parts := make([][]uint64, len(polys))
	err := forChunks(len(polys), func() *uniformMod { return &uniformMod{buf: make([]byte, 8<<10)} }, func(u *uniformMod, c int) error {
		p := polys[c]
		if err := k.checkPoly(p); err != nil {
			return fmt.Errorf("chunk %d: %w", c, err)
		}
		u.prng, u.off = newPRNG(coefficientSeed(challenge, c)), len(u.buf)
		out := make([]uint64, SketchRows*L)
		for i, q := range k.q {
			// 128-bit accumulators, reduced every 32 products: a product
			// of two values below 2^61 is below 2^122, so 32 of them and
			// a remainder fit in 2^128.
			var hi, lo [SketchRows]uint64
			for x, v := range p.Coeffs[i] {
				if v >= q {
					return fmt.Errorf("%w: chunk %d, coefficient %d is not reduced mod q_%d", ErrParams, c, x, i)
				}
				for r := 0; r < SketchRows; r++ {
					ph, pl := bits.Mul64(u.next(q), v)
					var carry uint64
					lo[r], carry = bits.Add64(lo[r], pl, 0)
					hi[r] += ph + carry
				}
				if x&31 == 31 {
					for r := range hi {
						lo[r], hi[r] = bits.Rem64(hi[r], lo[r], q), 0
					}
				}
			}
			for r := range hi {
				out[r*L+i] = bits.Rem64(hi[r], lo[r], q)
			}
		}
		parts[c] = out
		return nil
	})
	if err != nil {
		return nil, err
	}
	total := make([]uint64, SketchRows*L)
	for _, part := range parts {
		k.addSketch(total, part)
	}
	return total, nil
}

// addSketch adds b into a, mod each row's modulus.
func (k *kit) addSketch(a, b []uint64) {
	L := len(k.q)
	for j := range a {
		q := k.q[j%L]
		s := a[j] + b[j]
		if s >= q {
			s -= q
		}
		a[j] = s
	}
}

// encodeSketch and decodeSketch frame a sketch: little-endian u64 values,
// each below its modulus.
func encodeSketch(v []uint64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

func (k *kit) decodeSketch(b []byte) ([]uint64, error) {
	L := len(k.q)
	if len(b) != 8*SketchRows*L {
		return nil, fmt.Errorf("%w: a sketch of preset %s is %d bytes, not %d", ErrEnvelope, k.preset.ID, 8*SketchRows*L, len(b))
	}
	v := make([]uint64, SketchRows*L)
	for j := range v {
		v[j] = binary.LittleEndian.Uint64(b[8*j:])
		if v[j] >= k.q[j%L] {
			return nil, fmt.Errorf("%w: sketch value %d is not reduced mod q_%d", ErrEnvelope, j, j%L)
		}
	}
	return v, nil
}

// SketchPayload is the sketch, under challenge, of a contribution or
// aggregate payload of the given kind for the study's round.
func SketchPayload(payload []byte, want Expect, challenge [32]byte) ([]byte, error) {
	k, err := want.Preset.kit()
	if err != nil {
		return nil, err
	}
	polys, err := OpenPolys(payload, want)
	if err != nil {
		return nil, err
	}
	v, err := k.sketch(challenge, polys)
	if err != nil {
		return nil, err
	}
	return encodeSketch(v), nil
}
