package secure

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"sync"

	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"
)

// The ring-level fast paths of the scheme. Lattigo provides the rings, the
// NTT, the samplers, the FFT, the threshold and key-generation protocols;
// this file does the four things a sum-only protocol needs in the shape it
// needs them:
//
//   - encoding in float64 at the working scale: the scale is a power of two,
//     so x·2^58 is exact in float64 and rounding it to an integer is the
//     only approximation (Lattigo's encoder switches to math/big above 53
//     bits of scale, 20× slower for the same result);
//   - decoding through an exact two-prime CRT in 128-bit integers instead of
//     math/big;
//   - the per-chunk public polynomial a, drawn from AES-256-CTR keyed by a
//     hash of (collective key, study, round, chunk), which every party can
//     regenerate, so it never travels;
//   - the wire form of one polynomial: its residues, u64 little endian,
//     each checked to be below its modulus.

// kit is a preset's instantiated parameters with what the fast paths
// precompute. Immutable once built; one per preset ID, shared by all
// goroutines (encoders are copied per use).
type kit struct {
	preset Preset
	params hefloat.Parameters
	ringQ  *ring.Ring
	q      []uint64
	ecd    *hefloat.Encoder // float64 precision; ShallowCopy before use
	scale  float64          // 2^LogDefaultScale
	// Two-prime CRT: Q = q0·q1, qInv = q0^-1 mod q1.
	qHi, qLo uint64
	qInv     uint64
}

var kits sync.Map // preset ID -> *kit

func (p Preset) kit() (*kit, error) {
	if k, ok := kits.Load(p.ID); ok && equalLiteral(k.(*kit).preset.Literal, p.Literal) {
		return k.(*kit), nil
	}
	params, err := p.Params()
	if err != nil {
		return nil, err
	}
	if params.PCount() != 0 || params.QCount() > 2 || params.MaxLevel() < 0 {
		return nil, fmt.Errorf("%w: %s: the sum-only scheme needs one or two Q primes and no P", ErrParams, p.ID)
	}
	k := &kit{preset: p, params: params, ringQ: params.RingQ(), q: params.RingQ().ModuliChain(),
		ecd: hefloat.NewEncoder(params, 53), scale: math.Exp2(float64(params.LogDefaultScale()))}
	if len(k.q) == 2 {
		k.qHi, k.qLo = bits.Mul64(k.q[0], k.q[1])
		k.qInv = ring.ModExp(k.q[0]%k.q[1], k.q[1]-2, k.q[1])
	}
	kits.Store(p.ID, k)
	return k, nil
}

// Slots is how many reals one chunk carries: N, two per complex slot.
func (k *kit) slots() int { return 2 * k.params.MaxSlots() }

// polyBytes is the wire size of one polynomial.
func (k *kit) polyBytes() int { return 8 * len(k.q) * k.params.N() }

// aesPRNG is AES-256 in counter mode as a sampling.PRNG: keyed by a public
// seed it draws the common polynomial a; keyed from crypto/rand it draws
// secret noise. It is ten times faster than the BLAKE2b PRNG Lattigo
// defaults to.
type aesPRNG struct{ s cipher.Stream }

func newPRNG(key [32]byte) sampling.PRNG {
	blk, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	return &aesPRNG{cipher.NewCTR(blk, make([]byte, aes.BlockSize))}
}

func (p *aesPRNG) Read(b []byte) (int, error) {
	clear(b)
	p.s.XORKeyStream(b, b)
	return len(b), nil
}

// secretPRNG is a PRNG keyed from the operating system's randomness.
func secretPRNG() sampling.PRNG {
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return newPRNG(key)
}

// secretSampler samples dist (the error or the flooding distribution of
// the preset) from a fresh secret PRNG.
func (k *kit) secretSampler(dist ring.DistributionParameters) ring.Sampler {
	s, err := ring.NewSampler(secretPRNG(), k.ringQ, dist, false)
	if err != nil {
		panic(err) // the preset's distributions are valid
	}
	return s
}

// Nonce names the chunks of one round's contributions: with the chunk
// index it fixes the public polynomial a of every ciphertext of the round.
// A hospital must never encrypt two different updates under one nonce
// (Participant keeps the one it sent and resends it).
type Nonce struct {
	KeyHash [32]byte
	Study   string
	Round   uint64
}

// seed is the AES key of chunk i's public polynomial.
func (n Nonce) seed(chunk int) [32]byte {
	h := sha256.New()
	h.Write([]byte("fedledger/secure/crp/v2\x00"))
	h.Write(n.KeyHash[:])
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(n.Study))))
	h.Write([]byte(n.Study))
	h.Write(binary.BigEndian.AppendUint64(nil, n.Round))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(chunk)))
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// crp writes chunk i's public polynomial a (uniform, NTT domain) into a.
func (k *kit) crp(n Nonce, chunk int, a ring.Poly) {
	ring.NewUniformSampler(newPRNG(n.seed(chunk)), k.ringQ).Read(a)
}

// encoder is one goroutine's encoding state.
type encoder struct {
	k     *kit
	ecd   *hefloat.Encoder
	buf   []complex128
	logSl int
}

func (k *kit) encoder() *encoder {
	return &encoder{k: k, ecd: k.ecd.ShallowCopy(), buf: make([]complex128, k.params.MaxSlots()), logSl: k.params.LogMaxSlots()}
}

// encode writes vals (at most slots() reals, two per complex slot) at the
// preset's scale into out, in the coefficient domain.
func (e *encoder) encode(vals []float64, out ring.Poly) error {
	clear(e.buf)
	for i := 0; i < len(vals); i += 2 {
		im := 0.0
		if i+1 < len(vals) {
			im = vals[i+1]
		}
		e.buf[i/2] = complex(vals[i], im)
	}
	if err := e.ecd.IFFT(e.buf, e.logSl); err != nil {
		return err
	}
	half := len(e.buf)
	for i, c := range e.buf {
		if err := e.k.fixed(real(c), i, out); err != nil {
			return err
		}
		if err := e.k.fixed(imag(c), i+half, out); err != nil {
			return err
		}
	}
	return nil
}

// fixed writes round(x·scale) into coefficient i of out. The product is
// exact (the scale is a power of two), so rounding to an integer is the
// only approximation. Beyond 2^63 a float64 is already an integer,
// m·2^e, reduced exactly as (m mod q)·(2^e mod q).
func (k *kit) fixed(x float64, i int, out ring.Poly) error {
	v := math.Round(x * k.scale)
	if math.Abs(v) < 1<<63 {
		n := int64(v)
		for j, q := range k.q {
			out.Coeffs[j][i] = modSigned(n < 0, uint64(max(n, -n)), q)
		}
		return nil
	}
	if math.IsInf(v, 0) || math.IsNaN(v) {
		return fmt.Errorf("%w: value %v cannot be encoded", ErrInput, x)
	}
	frac, exp := math.Frexp(math.Abs(v)) // |v| = frac·2^exp, frac in [0.5, 1)
	m, e := uint64(frac*(1<<53)), uint64(exp-53)
	for j, q := range k.q {
		hi, lo := bits.Mul64(m%q, ring.ModExp(2, e, q))
		_, r := bits.Div64(hi, lo, q)
		out.Coeffs[j][i] = modSigned(v < 0, r, q)
	}
	return nil
}

// modSigned is ±a mod q.
func modSigned(neg bool, a, q uint64) uint64 {
	a %= q
	if neg && a != 0 {
		return q - a
	}
	return a
}

// decode reads a decrypted polynomial (coefficient domain) back into
// slots() reals, rounded to logPrec bits after the point (which also
// removes the low bits an attacker could use against the key: Lattigo's
// DecodePublic does the same).
func (e *encoder) decode(p ring.Poly, logPrec float64, out []float64) error {
	half := len(e.buf)
	s := 1 / e.k.scale
	for i := range e.buf {
		e.buf[i] = complex(e.k.center(p, i)*s, e.k.center(p, i+half)*s)
	}
	if err := e.ecd.FFT(e.buf, e.logSl); err != nil {
		return err
	}
	r := math.Exp2(logPrec)
	for i, c := range e.buf {
		out[2*i] = math.Round(real(c)*r) / r
		out[2*i+1] = math.Round(imag(c)*r) / r
	}
	return nil
}

// center is coefficient i of p as a signed value in (-Q/2, Q/2], through an
// exact CRT in 128 bits.
func (k *kit) center(p ring.Poly, i int) float64 {
	if len(k.q) == 1 {
		q, c := k.q[0], p.Coeffs[0][i]
		if c > q/2 {
			return -float64(q - c)
		}
		return float64(c)
	}
	q0, q1 := k.q[0], k.q[1]
	r0, r1 := p.Coeffs[0][i], p.Coeffs[1][i]
	// t = (r1 - r0)·q0^-1 mod q1; x = r0 + q0·t, 0 <= x < Q.
	d := r1 + q1 - r0%q1
	if d >= q1 {
		d -= q1
	}
	hi, lo := bits.Mul64(d, k.qInv)
	_, t := bits.Div64(hi%q1, lo, q1)
	hi, lo = bits.Mul64(q0, t)
	var c uint64
	lo, c = bits.Add64(lo, r0, 0)
	hi += c
	// x > Q/2 ⟺ 2x > Q: then the value is x - Q.
	h2, l2 := hi<<1|lo>>63, lo<<1
	if h2 > k.qHi || (h2 == k.qHi && l2 > k.qLo) {
		l, b := bits.Sub64(k.qLo, lo, 0)
		h, _ := bits.Sub64(k.qHi, hi, b)
		return -(float64(h)*0x1p64 + float64(l))
	}
	return float64(hi)*0x1p64 + float64(lo)
}

// appendPoly appends p's wire form: every residue, u64 little endian,
// modulus by modulus.
func (k *kit) appendPoly(b []byte, p ring.Poly) []byte {
	for j := range k.q {
		for _, c := range p.Coeffs[j] {
			b = binary.LittleEndian.AppendUint64(b, c)
		}
	}
	return b
}

// readPoly decodes a wire polynomial of exactly polyBytes() bytes into a
// fresh polynomial, refusing any residue not below its modulus.
func (k *kit) readPoly(b []byte) (ring.Poly, error) {
	if len(b) != k.polyBytes() {
		return ring.Poly{}, fmt.Errorf("%w: polynomial of %d bytes, want %d", ErrEnvelope, len(b), k.polyBytes())
	}
	p := k.ringQ.NewPoly()
	off := 0
	for j, q := range k.q {
		row := p.Coeffs[j]
		for i := range row {
			c := binary.LittleEndian.Uint64(b[off:])
			if c >= q {
				return ring.Poly{}, fmt.Errorf("%w: coefficient %d of residue %d is not below its modulus", ErrEnvelope, i, j)
			}
			row[i] = c
			off += 8
		}
	}
	return p, nil
}
