package secure

import (
	"errors"
	"fmt"
	"math"
	"sort"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"
)

// Errors callers can test with errors.Is.
var (
	ErrParams    = errors.New("secure: parameter mismatch")
	ErrThreshold = errors.New("secure: threshold not met")
	ErrInput     = errors.New("secure: bad input")
)

// Party is one hospital's side of the protocol. Its secret-key share and
// Shamir share never leave it.
type Party struct {
	preset    Preset
	params    hefloat.Parameters
	point     mhe.ShamirPublicPoint
	sk        *rlwe.SecretKey
	shamir    *mhe.ShamirSecretShare
	threshold int
}

// NewParty creates a party with a fresh secret-key share. point is its
// non-zero Shamir public point, unique in the study.
func NewParty(preset Preset, point uint64) (*Party, error) {
	if point == 0 {
		return nil, fmt.Errorf("%w: Shamir point must be non-zero", ErrInput)
	}
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	sk := rlwe.NewKeyGenerator(params).GenSecretKeyNew()
	return &Party{preset: preset, params: params, point: mhe.ShamirPublicPoint(point), sk: sk}, nil
}

func crs(seed []byte) (mhe.CRS, error) {
	if len(seed) < 16 {
		return nil, fmt.Errorf("%w: CRS seed of %d bytes, want >= 16", ErrInput, len(seed))
	}
	prng, err := sampling.NewKeyedPRNG(seed)
	if err != nil {
		return nil, err
	}
	return prng, nil
}

// PublicKeyShare is the party's share of the collective public key for the
// common reference string seed.
func (p *Party) PublicKeyShare(seed []byte) (mhe.PublicKeyGenShare, error) {
	c, err := crs(seed)
	if err != nil {
		return mhe.PublicKeyGenShare{}, err
	}
	ckg := mhe.NewPublicKeyGenProtocol(p.params)
	share := ckg.AllocateShare()
	ckg.GenShare(p.sk, ckg.SampleCRP(c), &share)
	return share, nil
}

// CollectivePublicKey sums every party's public-key share.
func CollectivePublicKey(preset Preset, seed []byte, shares []mhe.PublicKeyGenShare) (*rlwe.PublicKey, error) {
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	if len(shares) == 0 {
		return nil, fmt.Errorf("%w: no public-key shares", ErrInput)
	}
	c, err := crs(seed)
	if err != nil {
		return nil, err
	}
	ckg := mhe.NewPublicKeyGenProtocol(params)
	agg := ckg.AllocateShare()
	for i, s := range shares {
		if s.Value.Q.N() != params.N() {
			return nil, fmt.Errorf("%w: public-key share %d has degree %d, want %d", ErrParams, i, s.Value.Q.N(), params.N())
		}
		ckg.AggregateShares(agg, s, &agg)
	}
	pk := rlwe.NewPublicKey(params)
	ckg.GenPublicKey(agg, ckg.SampleCRP(c), pk)
	return pk, nil
}

// ThresholdShares splits the party's secret share t-of-N: one Shamir share
// per recipient point (including its own). Each must reach its recipient
// end-to-end encrypted.
func (p *Party) ThresholdShares(t int, recipients []uint64) (map[uint64]mhe.ShamirSecretShare, error) {
	if t < 1 || t > len(recipients) {
		return nil, fmt.Errorf("%w: threshold %d for %d parties", ErrInput, t, len(recipients))
	}
	thr := mhe.NewThresholdizer(p.params)
	poly, err := thr.GenShamirPolynomial(t, p.sk)
	if err != nil {
		return nil, err
	}
	out := map[uint64]mhe.ShamirSecretShare{}
	for _, r := range recipients {
		if r == 0 {
			return nil, fmt.Errorf("%w: Shamir point 0", ErrInput)
		}
		s := thr.AllocateThresholdSecretShare()
		thr.GenShamirSecretShare(mhe.ShamirPublicPoint(r), poly, &s)
		out[r] = s
	}
	return out, nil
}

// SetThresholdShares sums the Shamir shares addressed to this party, one
// from every party, into its t-of-N share of the collective secret key.
func (p *Party) SetThresholdShares(t int, received []mhe.ShamirSecretShare) error {
	if len(received) < t {
		return fmt.Errorf("%w: %d shares received, threshold %d", ErrThreshold, len(received), t)
	}
	thr := mhe.NewThresholdizer(p.params)
	agg := thr.AllocateThresholdSecretShare()
	for _, s := range received {
		if err := thr.AggregateShares(agg, s, &agg); err != nil {
			return fmt.Errorf("%w: %v", ErrParams, err)
		}
	}
	p.shamir, p.threshold = &agg, t
	return nil
}

// Slots is how many reals one ciphertext carries.
func Slots(params hefloat.Parameters) int { return 2 * params.MaxSlots() }

// Encrypt encrypts weight·Δ... as given: vector (already multiplied by the
// weight) followed by the weight itself, packed two reals per complex slot,
// into as many ciphertexts as needed.
func Encrypt(preset Preset, pk *rlwe.PublicKey, vector []float64, weight float64) ([]*rlwe.Ciphertext, error) {
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	if !(weight > 0) || math.IsInf(weight, 0) {
		return nil, fmt.Errorf("%w: weight %v", ErrInput, weight)
	}
	vals := append(append(make([]float64, 0, len(vector)+1), vector...), weight)
	for i, v := range vals {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("%w: value %d is %v", ErrInput, i, v)
		}
	}
	enc := rlwe.NewEncryptor(params, pk)
	ecd := hefloat.NewEncoder(params)
	per := Slots(params)
	var out []*rlwe.Ciphertext
	slots := make([]complex128, params.MaxSlots())
	for lo := 0; lo < len(vals); lo += per {
		clear(slots)
		chunk := vals[lo:min(lo+per, len(vals))]
		for i := 0; i < len(chunk); i += 2 {
			re, im := chunk[i], 0.0
			if i+1 < len(chunk) {
				im = chunk[i+1]
			}
			slots[i/2] = complex(re, im)
		}
		pt := hefloat.NewPlaintext(params, params.MaxLevel())
		if err := ecd.Encode(slots, pt); err != nil {
			return nil, err
		}
		ct, err := enc.EncryptNew(pt)
		if err != nil {
			return nil, err
		}
		out = append(out, ct)
	}
	return out, nil
}

// Sum adds contributions ciphertext-wise. Every contribution must have the
// same number of ciphertexts, at the preset's degree and level.
func Sum(preset Preset, contributions [][]*rlwe.Ciphertext) ([]*rlwe.Ciphertext, error) {
	if len(contributions) == 0 {
		return nil, fmt.Errorf("%w: nothing to sum", ErrInput)
	}
	acc, err := NewAccumulator(preset, len(contributions[0]))
	if err != nil {
		return nil, err
	}
	for i, c := range contributions {
		if err := acc.Add(c); err != nil {
			return nil, fmt.Errorf("contribution %d: %w", i, err)
		}
	}
	return acc.Sum(), nil
}

// Accumulator adds contributions one at a time, so a running sum needs
// the memory of one contribution whatever their number (a decryptor
// re-summing 32 hospitals' 10^6-parameter updates holds 2 of them, not 32).
type Accumulator struct {
	params hefloat.Parameters
	eval   *hefloat.Evaluator
	count  int
	sum    []*rlwe.Ciphertext
}

// NewAccumulator starts an empty sum of contributions of count ciphertexts.
func NewAccumulator(preset Preset, count int) (*Accumulator, error) {
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	if count < 1 {
		return nil, fmt.Errorf("%w: a contribution has at least one ciphertext, not %d", ErrInput, count)
	}
	return &Accumulator{params: params, eval: hefloat.NewEvaluator(params, nil), count: count}, nil
}

// Add checks a contribution's shape (count ciphertexts of the preset's
// degree and level) and adds it to the sum. A rejected contribution leaves
// the sum unchanged. The first contribution is copied, not aliased.
func (a *Accumulator) Add(contribution []*rlwe.Ciphertext) error {
	if len(contribution) != a.count {
		return fmt.Errorf("%w: %d ciphertexts, want %d", ErrParams, len(contribution), a.count)
	}
	for j, ct := range contribution {
		if err := checkCiphertext(a.params, ct); err != nil {
			return fmt.Errorf("ciphertext %d: %w", j, err)
		}
	}
	if a.sum == nil {
		a.sum = make([]*rlwe.Ciphertext, a.count)
		for j, ct := range contribution {
			a.sum[j] = ct.CopyNew()
		}
		return nil
	}
	for j, ct := range contribution {
		if err := a.eval.Add(a.sum[j], ct, a.sum[j]); err != nil {
			return err
		}
	}
	return nil
}

// Sum is the running sum (nil before the first Add). It is the
// accumulator's own storage: later Adds change it.
func (a *Accumulator) Sum() []*rlwe.Ciphertext { return a.sum }

func checkCiphertext(params hefloat.Parameters, ct *rlwe.Ciphertext) error {
	switch {
	case ct == nil:
		return fmt.Errorf("%w: nil ciphertext", ErrInput)
	case ct.Degree() != 1:
		return fmt.Errorf("%w: degree %d, want 1", ErrParams, ct.Degree())
	case ct.Level() != params.MaxLevel():
		return fmt.Errorf("%w: level %d, want %d", ErrParams, ct.Level(), params.MaxLevel())
	case ct.Value[0].N() != params.N():
		return fmt.Errorf("%w: ring degree %d, want %d", ErrParams, ct.Value[0].N(), params.N())
	}
	return nil
}

// DecryptionShares produces the party's key-switch shares of the aggregate
// towards the zero key, with noise flooding, for the given active set of
// exactly t parties (including this one).
func (p *Party) DecryptionShares(active []uint64, aggregate []*rlwe.Ciphertext) ([]mhe.KeySwitchShare, error) {
	if p.shamir == nil {
		return nil, fmt.Errorf("%w: key setup not finished", ErrInput)
	}
	if len(active) != p.threshold {
		return nil, fmt.Errorf("%w: active set of %d, threshold %d", ErrThreshold, len(active), p.threshold)
	}
	points := make([]mhe.ShamirPublicPoint, 0, len(active))
	self := false
	seen := map[uint64]bool{}
	for _, a := range active {
		if seen[a] || a == 0 {
			return nil, fmt.Errorf("%w: active set %v has a repeated or zero point", ErrInput, active)
		}
		seen[a] = true
		points = append(points, mhe.ShamirPublicPoint(a))
		self = self || mhe.ShamirPublicPoint(a) == p.point
	}
	if !self {
		return nil, fmt.Errorf("%w: party %d is not in the active set", ErrInput, p.point)
	}
	sort.Slice(points, func(i, j int) bool { return points[i] < points[j] })
	others := make([]mhe.ShamirPublicPoint, 0, len(points)-1)
	for _, q := range points {
		if q != p.point {
			others = append(others, q)
		}
	}
	cmb := mhe.NewCombiner(*p.params.GetRLWEParameters(), p.point, others, p.threshold)
	tsk := rlwe.NewSecretKey(p.params)
	if err := cmb.GenAdditiveShare(points, p.point, *p.shamir, tsk); err != nil {
		return nil, err
	}
	cks, err := mhe.NewKeySwitchProtocol(p.params, p.preset.flooding())
	if err != nil {
		return nil, err
	}
	zero := rlwe.NewSecretKey(p.params)
	out := make([]mhe.KeySwitchShare, len(aggregate))
	for i, ct := range aggregate {
		if err := checkCiphertext(p.params, ct); err != nil {
			return nil, fmt.Errorf("aggregate ciphertext %d: %w", i, err)
		}
		out[i] = cks.AllocateShare(ct.Level())
		cks.GenShare(tsk, zero, ct, &out[i])
	}
	return out, nil
}

// Decrypt combines exactly t parties' decryption shares of the aggregate
// and returns the decoded sum vector and the total weight (the last
// encrypted value). dim is the length of the clients' vectors.
func Decrypt(preset Preset, aggregate []*rlwe.Ciphertext, shares [][]mhe.KeySwitchShare, threshold, dim int) (sum []float64, weight float64, err error) {
	params, err := preset.Params()
	if err != nil {
		return nil, 0, err
	}
	if len(shares) < threshold {
		return nil, 0, fmt.Errorf("%w: %d decryption shares, threshold %d", ErrThreshold, len(shares), threshold)
	}
	if want := (dim + 1 + Slots(params) - 1) / Slots(params); len(aggregate) != want {
		return nil, 0, fmt.Errorf("%w: %d ciphertexts for %d values, want %d", ErrParams, len(aggregate), dim, want)
	}
	cks, err := mhe.NewKeySwitchProtocol(params, preset.flooding())
	if err != nil {
		return nil, 0, err
	}
	ecd := hefloat.NewEncoder(params)
	dec := rlwe.NewDecryptor(params, rlwe.NewSecretKey(params))
	vals := make([]float64, 0, dim+1)
	slots := make([]complex128, params.MaxSlots())
	for i, ct := range aggregate {
		combined := cks.AllocateShare(ct.Level())
		for j, s := range shares {
			if len(s) != len(aggregate) {
				return nil, 0, fmt.Errorf("%w: decryption share %d covers %d ciphertexts, want %d", ErrParams, j, len(s), len(aggregate))
			}
			if err := cks.AggregateShares(combined, s[i], &combined); err != nil {
				return nil, 0, fmt.Errorf("%w: %v", ErrParams, err)
			}
		}
		out := hefloat.NewCiphertext(params, 1, ct.Level())
		cks.KeySwitch(ct, combined, out)
		if err := ecd.DecodePublic(dec.DecryptNew(out), slots, preset.LogPrec); err != nil {
			return nil, 0, err
		}
		for _, s := range slots {
			vals = append(vals, real(s), imag(s))
		}
	}
	vals = vals[:dim+1]
	return vals[:dim], vals[dim], nil
}
