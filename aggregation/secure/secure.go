package secure

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sort"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"
)

// Errors callers can test with errors.Is.
var (
	ErrParams    = errors.New("secure: parameter mismatch")
	ErrThreshold = errors.New("secure: threshold not met")
	ErrInput     = errors.New("secure: bad input")
)

// Party is one hospital's side of the protocol. Its secret-key share and
// the Shamir shares it received never leave it.
type Party struct {
	preset Preset
	params hefloat.Parameters
	point  mhe.ShamirPublicPoint
	sk     *rlwe.SecretKey
	// shares holds the Shamir share of every participant's secret-key
	// share that this party received, by sender point (its own included):
	// summing those of a round's contributors gives its share of exactly
	// the key that round's sum is encrypted under.
	shares    map[uint64]mhe.ShamirSecretShare
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

// SetThresholdShares keeps the Shamir shares addressed to this party, one
// from every participant by sender point (its own included).
func (p *Party) SetThresholdShares(t int, received map[uint64]mhe.ShamirSecretShare) error {
	if len(received) < t {
		return fmt.Errorf("%w: %d shares received, threshold %d", ErrThreshold, len(received), t)
	}
	if _, ok := received[uint64(p.point)]; !ok {
		return fmt.Errorf("%w: no share of this party's own key among those received", ErrInput)
	}
	want := p.params.RingQP().NewPoly()
	for from, s := range received {
		if from == 0 || s.LevelQ() != want.LevelQ() || s.LevelP() != want.LevelP() || s.Q.N() != want.Q.N() {
			return fmt.Errorf("%w: Shamir share from point %d does not fit the preset", ErrParams, from)
		}
	}
	p.shares, p.threshold = received, t
	return nil
}

// workers bounds how many goroutines one call spreads its chunks over:
// every core the process may use, and no more goroutines than chunks.
func workers(chunks int) int { return max(1, min(runtime.GOMAXPROCS(0), chunks)) }

// forChunks runs do(worker, chunk) for every chunk, spread over workers
// goroutines, each with its own state from newState; the first error wins.
func forChunks[S any](chunks int, newState func() S, do func(s S, chunk int) error) error {
	n := workers(chunks)
	next := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := 0; w < n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st := newState()
			for c := range next {
				if err := do(st, c); err != nil {
					errs <- err
					for range next { // drain
					}
					return
				}
			}
		}()
	}
	for c := 0; c < chunks; c++ {
		next <- c
	}
	close(next)
	wg.Wait()
	close(errs)
	return <-errs
}

// Encrypt encrypts vector (already multiplied by the weight) followed by
// the weight itself, two reals per complex slot, into as many chunks as
// needed: chunk i is c0 = -a_i·s + e + m_i under this party's key share s,
// with a_i regenerated from nonce by whoever needs it. Only c0 is
// returned; it is all that travels.
//
// The caller must never encrypt two different vectors under one nonce
// (Participant.Contribute enforces this).
func (p *Party) Encrypt(nonce Nonce, vector []float64, weight float64) ([]ring.Poly, error) {
	k, err := p.preset.kit()
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
	per := k.slots()
	count := (len(vals) + per - 1) / per
	out := make([]ring.Poly, count)
	type state struct {
		ecd *encoder
		xe  ring.Sampler
		a   ring.Poly
	}
	err = forChunks(count, func() *state {
		return &state{ecd: k.encoder(), xe: k.secretSampler(k.params.Xe()), a: k.ringQ.NewPoly()}
	}, func(st *state, c int) error {
		m := k.ringQ.NewPoly()
		if err := st.ecd.encode(vals[c*per:min((c+1)*per, len(vals))], m); err != nil {
			return err
		}
		st.xe.ReadAndAdd(m)
		k.ringQ.NTT(m, m)
		k.crp(nonce, c, st.a)
		k.ringQ.MulCoeffsMontgomeryThenSub(st.a, p.sk.Value.Q, m)
		out[c] = m
		return nil
	})
	return out, err
}

// Sum adds contributions chunk-wise. Every contribution must have the
// same number of chunks, each a polynomial of the preset.
func Sum(preset Preset, contributions [][]ring.Poly) ([]ring.Poly, error) {
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
	k     *kit
	count int
	sum   []ring.Poly
}

// NewAccumulator starts an empty sum of contributions of count chunks.
func NewAccumulator(preset Preset, count int) (*Accumulator, error) {
	k, err := preset.kit()
	if err != nil {
		return nil, err
	}
	if count < 1 {
		return nil, fmt.Errorf("%w: a contribution has at least one chunk, not %d", ErrInput, count)
	}
	return &Accumulator{k: k, count: count}, nil
}

// Add checks a contribution's shape (count chunks of the preset's ring)
// and adds it to the sum. A rejected contribution leaves the sum
// unchanged. The first contribution is copied, not aliased.
func (a *Accumulator) Add(contribution []ring.Poly) error {
	if len(contribution) != a.count {
		return fmt.Errorf("%w: %d chunks, want %d", ErrParams, len(contribution), a.count)
	}
	for j, p := range contribution {
		if err := a.k.checkPoly(p); err != nil {
			return fmt.Errorf("chunk %d: %w", j, err)
		}
	}
	if a.sum == nil {
		a.sum = make([]ring.Poly, a.count)
		for j, p := range contribution {
			a.sum[j] = *p.CopyNew()
		}
		return nil
	}
	for j, p := range contribution {
		a.k.ringQ.Add(a.sum[j], p, a.sum[j])
	}
	return nil
}

// Sum is the running sum (nil before the first Add). It is the
// accumulator's own storage: later Adds change it.
func (a *Accumulator) Sum() []ring.Poly { return a.sum }

func (k *kit) checkPoly(p ring.Poly) error {
	switch {
	case len(p.Coeffs) != len(k.q):
		return fmt.Errorf("%w: %d residues, want %d", ErrParams, len(p.Coeffs), len(k.q))
	case p.N() != k.params.N():
		return fmt.Errorf("%w: ring degree %d, want %d", ErrParams, p.N(), k.params.N())
	}
	return nil
}

// DecryptionShares produces the party's key-switch shares towards the zero
// key, with noise flooding, for count chunks of round nonce summed over
// the contributions of the given Shamir points, for the active set of
// exactly t parties (including this one). A share is a_i·s'_C + e_flood,
// where s'_C is this party's additive share, for the active set, of the
// sum of the contributors' key shares: it depends on the round's public
// polynomials and on who contributed, not on the aggregate's bytes.
func (p *Party) DecryptionShares(nonce Nonce, contributors, active []uint64, count int) ([]ring.Poly, error) {
	if p.shares == nil {
		return nil, fmt.Errorf("%w: key setup not finished", ErrInput)
	}
	if len(active) != p.threshold {
		return nil, fmt.Errorf("%w: active set of %d, threshold %d", ErrThreshold, len(active), p.threshold)
	}
	if count < 1 {
		return nil, fmt.Errorf("%w: %d chunks", ErrInput, count)
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
	// This party's Shamir share of s_C = sum of the contributors' keys.
	ringQP := p.params.RingQP()
	sC := mhe.ShamirSecretShare{Poly: ringQP.NewPoly()}
	counted := map[uint64]bool{}
	for _, c := range contributors {
		sh, ok := p.shares[c]
		if !ok || counted[c] {
			return nil, fmt.Errorf("%w: contributor point %d is not a key holder of this study, or is listed twice", ErrInput, c)
		}
		counted[c] = true
		ringQP.Add(sC.Poly, sh.Poly, sC.Poly)
	}
	if len(counted) == 0 {
		return nil, fmt.Errorf("%w: no contributors", ErrInput)
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
	if err := cmb.GenAdditiveShare(points, p.point, sC, tsk); err != nil {
		return nil, err
	}
	return p.keySwitchShares(nonce, tsk, count)
}

// keySwitchShares is a_i·sk + e_flood for the count chunks of nonce, sk an
// additive share of the key the chunks' sum is encrypted under.
func (p *Party) keySwitchShares(nonce Nonce, sk *rlwe.SecretKey, count int) ([]ring.Poly, error) {
	k, err := p.preset.kit()
	if err != nil {
		return nil, err
	}
	out := make([]ring.Poly, count)
	type state struct {
		flood ring.Sampler
		a     ring.Poly
	}
	err = forChunks(count, func() *state {
		return &state{flood: k.secretSampler(p.preset.flooding()), a: k.ringQ.NewPoly()}
	}, func(st *state, c int) error {
		sh := k.ringQ.NewPoly()
		st.flood.Read(sh)
		k.ringQ.NTT(sh, sh)
		k.crp(nonce, c, st.a)
		k.ringQ.MulCoeffsMontgomeryThenAdd(st.a, sk.Value.Q, sh)
		out[c] = sh
		return nil
	})
	return out, err
}

// Decrypt combines exactly t parties' decryption shares of the aggregate
// and returns the decoded sum vector and the total weight (the last
// encrypted value). dim is the length of the clients' vectors.
func Decrypt(preset Preset, aggregate []ring.Poly, shares [][]ring.Poly, threshold, dim int) (sum []float64, weight float64, err error) {
	k, err := preset.kit()
	if err != nil {
		return nil, 0, err
	}
	if len(shares) < threshold {
		return nil, 0, fmt.Errorf("%w: %d decryption shares, threshold %d", ErrThreshold, len(shares), threshold)
	}
	per := k.slots()
	if want := (dim + 1 + per - 1) / per; len(aggregate) != want {
		return nil, 0, fmt.Errorf("%w: %d chunks for %d values, want %d", ErrParams, len(aggregate), dim, want)
	}
	for j, s := range shares {
		if len(s) != len(aggregate) {
			return nil, 0, fmt.Errorf("%w: decryption share %d covers %d chunks, want %d", ErrParams, j, len(s), len(aggregate))
		}
		for i := range s {
			if err := k.checkPoly(s[i]); err != nil {
				return nil, 0, fmt.Errorf("decryption share %d, chunk %d: %w", j, i, err)
			}
		}
	}
	vals := make([]float64, len(aggregate)*per)
	err = forChunks(len(aggregate), k.encoder, func(ecd *encoder, c int) error {
		if err := k.checkPoly(aggregate[c]); err != nil {
			return fmt.Errorf("aggregate chunk %d: %w", c, err)
		}
		m := *aggregate[c].CopyNew()
		for _, s := range shares {
			k.ringQ.Add(m, s[c], m)
		}
		k.ringQ.INTT(m, m)
		return ecd.decode(m, preset.LogPrec, vals[c*per:(c+1)*per])
	})
	if err != nil {
		return nil, 0, err
	}
	vals = vals[:dim+1]
	return vals[:dim], vals[dim], nil
}
