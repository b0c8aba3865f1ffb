package secure

import (
	"fmt"
	"math"
	"reflect"
	"sync"

	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/ring"
)

// Preset is a named, reviewed parameter set. Every party of a study must use
// the same one; its ID travels with every ciphertext.
type Preset struct {
	ID string
	// Literal is the CKKS parameter set.
	Literal hefloat.ParametersLiteral
	// FloodingSigma is the standard deviation of the noise each party adds
	// to its decryption share (smudging), hiding its secret share.
	FloodingSigma float64
	// LogPrec is the precision, in bits after the point, DecodePublic keeps
	// of a decrypted sum.
	LogPrec float64
	// Doc states the security level and expected precision.
	Doc string
}

// Default is the preset studies use unless configured otherwise.
//
// Security: ring degree N = 2^14, standard (power-of-two cyclotomic) ring,
// ternary secret, error sigma 3.2, log2(Q) = 60+60 = 120 bits and no
// auxiliary modulus P (only additions and one key switch to the zero key
// happen, neither needs it). The Homomorphic Encryption Standard (Albrecht
// et al., 2018, Table 1) allows log2(QP) <= 438 at N = 2^14 for 128-bit
// classical security; 120 is far inside it.
//
// Capacity: 2^13 complex slots = 16,384 reals per chunk, scale 2^58, so a
// decrypted sum may reach ±2^61 before it wraps.
//
// Contributions are secret-key encryptions under each hospital's own key
// share with the public polynomial a drawn from a seed (see Nonce): only
// c0 travels, 16 bytes per parameter.
//
// Flooding: sigma = 2^30 per party. With t parties the decryption noise is
// about 2^30·sqrt(t)·sqrt(N) ≈ 2^40.6 for t = 100 at scale 2^58, an error of
// about 2^-17 on the decrypted sum and, after dividing by the total weight
// (>= 100 for 100 clients), better than 1e-6 on the average. The tests check
// this bound.
var Default = Preset{
	ID:            "ckks-n14-q2x60-seeded/v2",
	Literal:       hefloat.ParametersLiteral{LogN: 14, LogQ: []int{60, 60}, LogDefaultScale: 58},
	FloodingSigma: 1 << 30,
	LogPrec:       40,
	Doc:           "N=2^14, log2 Q=120 (<= 438 for 128-bit, HE Standard), seeded secret-key contributions (c0 only), flooding sigma 2^30, ~1e-6 on an average of 100",
}

var presets = map[string]Preset{Default.ID: Default}

// retired names the presets earlier versions used, so a study or a file
// that names one gets an answer rather than "unknown".
var retired = map[string]string{
	"ckks-n14-q120-flood30/v1": "public-key contributions of 32 bytes per parameter, replaced by " + Default.ID + "; finish or re-key studies that used it with the release that created them",
}

// LookupPreset returns the preset with the given ID.
func LookupPreset(id string) (Preset, error) {
	p, ok := presets[id]
	if why, old := retired[id]; old {
		return Preset{}, fmt.Errorf("%w: parameter set %q is retired (%s)", ErrParams, id, why)
	}
	if !ok {
		return Preset{}, fmt.Errorf("%w: unknown parameter set %q", ErrParams, id)
	}
	return p, nil
}

// paramsCache memoises instantiated parameters by preset ID. Building them
// (prime generation, ring tables) costs ~5 ms and ~87k allocations, and
// every entry point of the package needs them, once per envelope on the
// coordinator's hot path. Lattigo Parameters are immutable values, so one
// instance serves all callers.
var paramsCache sync.Map // preset ID -> cachedParams

type cachedParams struct {
	lit    hefloat.ParametersLiteral
	params hefloat.Parameters
}

// Params instantiates the preset (memoised per ID; a preset whose literal
// differs from the cached one for its ID is instantiated afresh).
func (p Preset) Params() (hefloat.Parameters, error) {
	if c, ok := paramsCache.Load(p.ID); ok && equalLiteral(c.(cachedParams).lit, p.Literal) {
		return c.(cachedParams).params, nil
	}
	params, err := hefloat.NewParametersFromLiteral(p.Literal)
	if err != nil {
		return params, fmt.Errorf("%w: %s: %v", ErrParams, p.ID, err)
	}
	paramsCache.LoadOrStore(p.ID, cachedParams{lit: p.Literal, params: params})
	return params, nil
}

func equalLiteral(a, b hefloat.ParametersLiteral) bool { return reflect.DeepEqual(a, b) }

// flooding is the smudging distribution of the preset.
func (p Preset) flooding() ring.DiscreteGaussian {
	return ring.DiscreteGaussian{Sigma: p.FloodingSigma, Bound: math.Floor(6 * p.FloodingSigma)}
}
