package secure

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/tuneinsight/lattigo/v5/ring"
)

// The projection check bounds one hospital's update without decrypting
// it: t key holders open only ⟨Δ, u⟩, the projection of the hospital's
// encrypted vector Δ onto a public unit direction u, one scalar. For an
// honest hospital that clipped Δ to norm B, |⟨Δ, u⟩| ≤ ‖Δ‖ ≤ B whatever u is
// (Cauchy–Schwarz), so the check never refuses it; an update scaled ×10,
// or sign-flipped and scaled, along u is refused.
//
// How one scalar is opened. An encoded chunk m is a polynomial whose
// coefficients are scale·E(v), E the preset's (scaled-orthogonal)
// slots-to-coefficients map. A Direction holds integer weights w on the
// coefficients with Σ_k w_k·E(v)_k proportional to ⟨v, u⟩, so the linear
// form L(p) = Σ_k w_k·p_k (mod each prime) gives L(m) = factor·⟨v, u⟩. L
// is linear, so from the contribution c0 = −a·s + e + m and each active
// key holder's L(a·s'_j + e_flood), the sum is L(m) + L(e + Σ e_flood):
// the projection, with noise, and nothing else of m. A holder's answer is
// L of a flooded decryption share, which is safe to publish whole; L of it
// reveals less.

// ErrDirection: a projection direction is unusable.
var ErrDirection = errors.New("secure: invalid projection direction")

// wBits bounds the direction's integer weights (|w_k| < 2^wBits), so a
// projection of an honest update stays far below Q/2 (no wrap-around).
const wBits = 30

// Direction is a public unit direction u in the update space, prepared for
// the projection check.
type Direction struct {
	preset Preset
	dim    int
	// w are the integer weights per chunk, per prime (residues), on the
	// coefficient-domain polynomial.
	w [][][]uint64
	// factor: L(m) = factor·⟨v, u⟩ for the encoding m of v.
	factor float64
}

// NewDirection prepares u (any non-zero finite vector of the study's
// dimension; it is normalised) for preset.
func NewDirection(preset Preset, u []float64) (*Direction, error) {
	k, err := preset.kit()
	if err != nil {
		return nil, err
	}
	var norm float64
	for i, x := range u {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, fmt.Errorf("%w: value %d is %v", ErrDirection, i, x)
		}
		norm += x * x
	}
	if norm == 0 || len(u) == 0 {
		return nil, fmt.Errorf("%w: the zero vector has no direction", ErrDirection)
	}
	norm = math.Sqrt(norm)
	per := k.slots()
	count := (len(u) + 1 + per - 1) / per // the encrypted weight takes one more slot
	e := k.encoder()
	n := k.params.N()
	encoded := make([][]float64, count)
	maxAbs := 0.0
	for c := range count {
		clear(e.buf)
		lo, hi := c*per, min((c+1)*per, len(u))
		for i := lo; i < hi; i += 2 {
			im := 0.0
			if i+1 < hi {
				im = u[i+1] / norm
			}
			e.buf[(i-lo)/2] = complex(u[i]/norm, im)
		}
		if err := e.ecd.IFFT(e.buf, e.logSl); err != nil {
			return nil, err
		}
		coeffs := make([]float64, n)
		half := len(e.buf)
		for i, z := range e.buf {
			coeffs[i], coeffs[i+half] = real(z), imag(z)
		}
		for _, x := range coeffs {
			maxAbs = max(maxAbs, math.Abs(x))
		}
		encoded[c] = coeffs
	}
	sw := math.Exp2(wBits) / maxAbs
	d := &Direction{preset: preset, dim: len(u), w: make([][][]uint64, count)}
	var dot float64 // Σ_k w_k·E(u)_k over every chunk: L of u's own encoding
	for c, coeffs := range encoded {
		d.w[c] = make([][]uint64, len(k.q))
		for j := range k.q {
			d.w[c][j] = make([]uint64, n)
		}
		for i, x := range coeffs {
			w := int64(math.Round(x * sw))
			dot += float64(w) * x
			for j, q := range k.q {
				d.w[c][j][i] = modSigned(w < 0, uint64(max(w, -w)), q)
			}
		}
	}
	// ⟨u, u⟩ = 1: L(encode(u)) = scale·dot is the factor.
	d.factor = k.scale * dot
	return d, nil
}

// linear is L(p) mod each prime for chunk c of a coefficient-domain
// polynomial, added to acc.
func (d *Direction) linear(k *kit, c int, p ring.Poly, acc []uint64) {
	for j, q := range k.q {
		var s uint64
		w, coeffs := d.w[c][j], p.Coeffs[j]
		for i, x := range coeffs {
			hi, lo := bits.Mul64(w[i], x)
			_, r := bits.Div64(hi%q, lo, q)
			if s += r; s >= q {
				s -= q
			}
		}
		if acc[j] += s; acc[j] >= q {
			acc[j] -= q
		}
	}
}

// ProjectionShare is this party's share, for the active set, of the
// projection onto dir of the contribution of the party at point
// contributor, for round nonce: L(a·s'_j + e_flood) summed over the
// chunks, one residue per prime. Like a decryption share it is flooded,
// and it opens nothing unless t holders give theirs for the same
// contribution and direction; unlike one, it opens a single scalar.
func (p *Party) ProjectionShare(nonce Nonce, contributor uint64, active []uint64, dir *Direction) ([]uint64, error) {
	k, err := p.preset.kit()
	if err != nil {
		return nil, err
	}
	if dir == nil || dir.preset.ID != p.preset.ID {
		return nil, fmt.Errorf("%w: a direction for another preset", ErrDirection)
	}
	shares, err := p.DecryptionShares(nonce, []uint64{contributor}, active, len(dir.w))
	if err != nil {
		return nil, err
	}
	acc := make([]uint64, len(k.q))
	for c, sh := range shares {
		k.ringQ.INTT(sh, sh)
		dir.linear(k, c, sh, acc)
	}
	return acc, nil
}

// Project opens the projection of one contribution (its chunks, as it
// was uploaded) onto dir from t holders' projection shares: ⟨v, u⟩ for
// the vector v the hospital encrypted, u normalised, to within the
// flooding noise: about 6e-7·√chunks at the default preset (σ 2^30 on
// each coefficient, scale 2^58), so a check against a bound B allows a
// slack far above it, such as 1e-4·B (TestNormCheck).
func Project(preset Preset, contribution []ring.Poly, shares [][]uint64, threshold int, dir *Direction) (float64, error) {
	k, err := preset.kit()
	if err != nil {
		return 0, err
	}
	switch {
	case dir == nil || dir.preset.ID != preset.ID:
		return 0, fmt.Errorf("%w: a direction for another preset", ErrDirection)
	case len(contribution) != len(dir.w):
		return 0, fmt.Errorf("%w: %d chunks, the direction covers %d", ErrParams, len(contribution), len(dir.w))
	case len(shares) != threshold:
		return 0, fmt.Errorf("%w: %d projection shares, threshold %d", ErrThreshold, len(shares), threshold)
	}
	acc := make([]uint64, len(k.q))
	for i, s := range shares {
		if len(s) != len(k.q) {
			return 0, fmt.Errorf("%w: projection share %d has %d residues, want %d", ErrParams, i, len(s), len(k.q))
		}
		for j, q := range k.q {
			if s[j] >= q {
				return 0, fmt.Errorf("%w: projection share %d, residue %d is not reduced", ErrParams, i, j)
			}
			if acc[j] += s[j]; acc[j] >= q {
				acc[j] -= q
			}
		}
	}
	for c, poly := range contribution {
		if err := k.checkPoly(poly); err != nil {
			return 0, fmt.Errorf("contribution chunk %d: %w", c, err)
		}
		m := *poly.CopyNew()
		k.ringQ.INTT(m, m)
		dir.linear(k, c, m, acc)
	}
	one := ring.Poly{Coeffs: make([][]uint64, len(k.q))}
	for j := range k.q {
		one.Coeffs[j] = []uint64{acc[j]}
	}
	return k.center(one, 0) / dir.factor, nil
}

// RoundDirection is the public direction of a round's projection check: a
// uniformly random unit vector of dim values drawn (AES-256-CTR, as the
// sketches' coefficients) from seed, the digest of the round's manifest.
// Nobody can aim an update away from it: it is fixed only once every
// contribution of the round is, and no party chooses it.
func RoundDirection(seed [32]byte, dim int) []float64 {
	prng := newPRNG(sha256.Sum256(append([]byte("fedledger projection direction v1\x00"), seed[:]...)))
	u := make([]float64, dim)
	var buf [16]byte
	for i := range u {
		// Box–Muller from two 53-bit uniforms in (0, 1].
		prng.Read(buf[:])
		a := float64(binary.LittleEndian.Uint64(buf[:8])>>11+1) / (1 << 53)
		b := float64(binary.LittleEndian.Uint64(buf[8:])>>11) / (1 << 53)
		u[i] = math.Sqrt(-2*math.Log(a)) * math.Cos(2*math.Pi*b)
	}
	return u
}

// RoundDirectionAlong blends the round's random direction with drift, the
// public movement of the global model so far (the parent model minus the
// initial one): u = drift/‖drift‖ + r/‖r‖, r = RoundDirection(seed). An
// update scaled or sign-flipped along the way the model is going projects
// far onto it, and its random half keeps it unpredictable before the
// contributions are fixed. With no drift yet (round 1) it is r alone.
func RoundDirectionAlong(seed [32]byte, drift []float64) []float64 {
	r := RoundDirection(seed, len(drift))
	var nd, nr float64
	for i := range drift {
		nd, nr = nd+drift[i]*drift[i], nr+r[i]*r[i]
	}
	nd, nr = math.Sqrt(nd), math.Sqrt(nr)
	if nd == 0 || math.IsNaN(nd) || math.IsInf(nd, 0) {
		return r
	}
	u := make([]float64, len(r))
	for i := range u {
		u[i] = drift[i]/nd + r[i]/nr
	}
	return u
}
