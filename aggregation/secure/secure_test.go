package secure

import (
	"errors"
	"math"
	"math/rand"
	"testing"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
)

var seed = []byte("fedledger test common reference string")

// study simulates the key setup of n parties with threshold t.
type study struct {
	parties []*Party
	points  []uint64
	pk      *rlwe.PublicKey
	t       int
}

func setup(tb testing.TB, n, t int) *study {
	tb.Helper()
	s := &study{t: t}
	var pkShares []mhe.PublicKeyGenShare
	for i := 1; i <= n; i++ {
		p, err := NewParty(Default, uint64(i))
		if err != nil {
			tb.Fatal(err)
		}
		share, err := p.PublicKeyShare(seed)
		if err != nil {
			tb.Fatal(err)
		}
		s.parties, s.points, pkShares = append(s.parties, p), append(s.points, uint64(i)), append(pkShares, share)
	}
	var err error
	if s.pk, err = CollectivePublicKey(Default, seed, pkShares); err != nil {
		tb.Fatal(err)
	}
	inbox := map[uint64]map[uint64]mhe.ShamirSecretShare{}
	for i, p := range s.parties {
		out, err := p.ThresholdShares(t, s.points)
		if err != nil {
			tb.Fatal(err)
		}
		for r, sh := range out {
			if inbox[r] == nil {
				inbox[r] = map[uint64]mhe.ShamirSecretShare{}
			}
			inbox[r][s.points[i]] = sh
		}
	}
	for i, p := range s.parties {
		if err := p.SetThresholdShares(t, inbox[s.points[i]]); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

func (s *study) nonce(round uint64) Nonce {
	h, _ := PublicKeyHash(s.pk)
	return Nonce{KeyHash: h, Study: "heart", Round: round}
}

// encrypt has the parties at contributors encrypt weights[i]·vecs[i] for
// round 1 and returns the sum and the contributors' points.
func (s *study) encrypt(tb testing.TB, vecs [][]float64, weights []float64, contributors []int) ([]ring.Poly, []uint64) {
	tb.Helper()
	var parts [][]ring.Poly
	var points []uint64
	for _, c := range contributors {
		w := make([]float64, len(vecs[c]))
		for j := range w {
			w[j] = vecs[c][j] * weights[c]
		}
		p, err := s.parties[c].Encrypt(s.nonce(1), w, weights[c])
		if err != nil {
			tb.Fatal(err)
		}
		parts, points = append(parts, p), append(points, s.points[c])
	}
	agg, err := Sum(Default, parts)
	if err != nil {
		tb.Fatal(err)
	}
	return agg, points
}

// round encrypts the listed contributors' vectors, sums, and decrypts with
// the parties at active as the active set.
func (s *study) round(tb testing.TB, vecs [][]float64, weights []float64, contributors, active []int) ([]float64, float64) {
	tb.Helper()
	agg, cpoints := s.encrypt(tb, vecs, weights, contributors)
	var pts []uint64
	for _, a := range active {
		pts = append(pts, s.points[a])
	}
	var shares [][]ring.Poly
	for _, a := range active {
		sh, err := s.parties[a].DecryptionShares(s.nonce(1), cpoints, pts, len(agg))
		if err != nil {
			tb.Fatal(err)
		}
		shares = append(shares, sh)
	}
	sum, weight, err := Decrypt(Default, agg, shares, s.t, len(vecs[0]))
	if err != nil {
		tb.Fatal(err)
	}
	return sum, weight
}

func all(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func randomVecs(rng *rand.Rand, n, dim int) ([][]float64, []float64) {
	vecs := make([][]float64, n)
	weights := make([]float64, n)
	for i := range vecs {
		vecs[i] = make([]float64, dim)
		for j := range vecs[i] {
			vecs[i][j] = rng.Float64()*20 - 10
		}
		weights[i] = float64(50 + rng.Intn(200)) // sample counts; see TestPartySaveLoad on why small totals are noisier
	}
	return vecs, weights
}

func plainAverage(vecs [][]float64, weights []float64, contributors []int) []float64 {
	avg := make([]float64, len(vecs[0]))
	var total float64
	for _, i := range contributors {
		for j := range vecs[i] {
			avg[j] += weights[i] * vecs[i][j]
		}
		total += weights[i]
	}
	for j := range avg {
		avg[j] /= total
	}
	return avg
}

func maxErr(sum []float64, weight float64, want []float64) float64 {
	var m float64
	for j := range want {
		m = math.Max(m, math.Abs(sum[j]/weight-want[j]))
	}
	return m
}

// TestWeightedAverageMatchesPlaintext: the decrypted weighted average equals
// the plaintext one within 1e-6 for 2 and 10 clients and vectors from 1 to
// several chunks long, decrypted by exactly t parties.
func TestWeightedAverageMatchesPlaintext(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, c := range []struct{ n, t, dim int }{{2, 2, 1}, {2, 1, 1000}, {10, 6, 1}, {10, 6, 40000}} {
		s := setup(t, c.n, c.t)
		vecs, weights := randomVecs(rng, c.n, c.dim)
		active := rng.Perm(c.n)[:c.t]
		want := plainAverage(vecs, weights, all(c.n))
		sum, weight := s.round(t, vecs, weights, all(c.n), active)
		var total float64
		for _, w := range weights {
			total += w
		}
		// Weights are integer sample counts: the decrypted total must be
		// within rounding distance of the true one (it is ~1e-6 off).
		if math.Abs(weight-total) > 1e-3 || math.Round(weight) != total {
			t.Fatalf("n=%d: decrypted weight %v, want %v", c.n, weight, total)
		}
		e := maxErr(sum, weight, want)
		t.Logf("n=%d t=%d dim=%d: max abs error of the average %.3g", c.n, c.t, c.dim, e)
		if e > 1e-6 {
			t.Fatalf("n=%d dim=%d: max error %g > 1e-6", c.n, c.dim, e)
		}
	}
}

// TestHundredClients: the preset's stated bound for 100 contributors with
// unit weights and values in [-10, 10], each adding flooding noise to its
// share (the worst case for precision): the 100-of-100 additive shares are
// the key shares themselves. The t-of-N Shamir path is exercised by the
// other tests (a 100-party Shamir setup costs minutes and adds nothing to
// precision, since the combined additive shares sum to the same key).
func TestHundredClients(t *testing.T) {
	const n, dim = 100, 3000
	rng := rand.New(rand.NewSource(2))
	var parties []*Party
	for i := 1; i <= n; i++ {
		p, err := NewParty(Default, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		parties = append(parties, p)
	}
	nonce := Nonce{Study: "heart", Round: 3}
	vecs, _ := randomVecs(rng, n, dim)
	weights := make([]float64, n)
	acc, err := NewAccumulator(Default, 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parties {
		weights[i] = 1
		c, err := p.Encrypt(nonce, vecs[i], 1)
		if err != nil {
			t.Fatal(err)
		}
		if err := acc.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	shares := make([][]ring.Poly, n)
	for i, p := range parties {
		if shares[i], err = p.keySwitchShares(nonce, p.sk, 1); err != nil {
			t.Fatal(err)
		}
	}
	sum, weight, err := Decrypt(Default, acc.Sum(), shares, n, dim)
	if err != nil {
		t.Fatal(err)
	}
	if math.Round(weight) != n {
		t.Fatalf("decrypted weight %v, want %d", weight, n)
	}
	e := maxErr(sum, weight, plainAverage(vecs, weights, all(n)))
	t.Logf("100 clients, 100 flooded decryption shares, sigma 2^30: max abs error %.3g", e)
	if e > 1e-6 {
		t.Fatalf("max error %g > 1e-6", e)
	}
}

// TestDropouts: of 5 key holders (t = 3), 2 never contribute and 2 of the
// 3 contributors vanish after uploading; the sum of the 3 contributions is
// decrypted by the one contributor left and the 2 who never contributed:
// the shares cancel exactly the contributors' keys.
func TestDropouts(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	s := setup(t, 5, 3)
	vecs, weights := randomVecs(rng, 5, 50)
	contributors := []int{0, 2, 4}
	sum, weight := s.round(t, vecs, weights, contributors, []int{1, 3, 4})
	if e := maxErr(sum, weight, plainAverage(vecs, weights, contributors)); e > 1e-6 {
		t.Fatalf("max error %g", e)
	}
	// Shares computed for the wrong set of contributors decrypt nothing.
	agg, _ := s.encrypt(t, vecs, weights, contributors)
	var shares [][]ring.Poly
	for _, a := range []int{1, 3, 4} {
		sh, err := s.parties[a].DecryptionShares(s.nonce(1), []uint64{1, 3, 5, 2}, []uint64{2, 4, 5}, 1)
		if err != nil {
			t.Fatal(err)
		}
		shares = append(shares, sh)
	}
	got, _, err := Decrypt(Default, agg, shares, 3, 50)
	if err != nil {
		t.Fatal(err)
	}
	if e := maxErr(got, 1, make([]float64, 50)); e < 1e6 {
		t.Fatalf("shares for another contributor set decrypted something small (%g)", e)
	}
	if _, err := s.parties[0].DecryptionShares(s.nonce(1), []uint64{1, 9}, []uint64{1, 2, 3}, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("contributor outside the key holders: %v", err)
	}
	if _, err := s.parties[0].DecryptionShares(s.nonce(1), []uint64{1, 1}, []uint64{1, 2, 3}, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("contributor listed twice: %v", err)
	}
}

// TestFewerThanTCannotDecrypt: t-1 shares refuse to combine, and forcing
// them through yields values nowhere near the truth.
func TestFewerThanTCannotDecrypt(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	s := setup(t, 5, 3)
	vecs, weights := randomVecs(rng, 5, 20)
	agg, cpoints := s.encrypt(t, vecs, weights, all(5))
	pts := []uint64{1, 2, 3}
	var shares [][]ring.Poly
	for _, a := range []int{0, 1} {
		sh, err := s.parties[a].DecryptionShares(s.nonce(1), cpoints, pts, 1)
		if err != nil {
			t.Fatal(err)
		}
		shares = append(shares, sh)
	}
	if _, _, err := Decrypt(Default, agg, shares, 3, 20); !errors.Is(err, ErrThreshold) {
		t.Fatalf("two shares with t=3: %v", err)
	}
	sum, _, err := Decrypt(Default, agg, shares, 2, 20) // lie about t
	if err != nil {
		t.Fatal(err)
	}
	if e := maxErr(sum, 1, make([]float64, 20)); e < 1e6 {
		t.Fatalf("two of three shares decrypted something small (%g): the threshold does not hold", e)
	}
	// A party refuses an active set of the wrong size or without itself.
	if _, err := s.parties[0].DecryptionShares(s.nonce(1), cpoints, []uint64{1, 2}, 1); !errors.Is(err, ErrThreshold) {
		t.Fatalf("short active set: %v", err)
	}
	if _, err := s.parties[0].DecryptionShares(s.nonce(1), cpoints, []uint64{2, 3, 4}, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("active set without self: %v", err)
	}
}

// TestOneContributionAloneIsMasked: the coordinator holds every c0 and,
// after decryption, the shares' sum a·s_C + e. Presenting one hospital's
// c0 as "the aggregate" decrypts to noise: its update stays masked by the
// other contributors' a·s_j. Shares for another round's nonce decrypt
// nothing either.
func TestOneContributionAloneIsMasked(t *testing.T) {
	rng := rand.New(rand.NewSource(6))
	s := setup(t, 3, 2)
	vecs, weights := randomVecs(rng, 3, 100)
	victim, err := s.parties[0].Encrypt(s.nonce(1), vecs[0], 1)
	if err != nil {
		t.Fatal(err)
	}
	decryptWith := func(agg []ring.Poly, nonce Nonce) []float64 {
		var shares [][]ring.Poly
		for _, a := range []int{0, 1} {
			sh, err := s.parties[a].DecryptionShares(nonce, []uint64{1, 2, 3}, []uint64{1, 2}, 1)
			if err != nil {
				t.Fatal(err)
			}
			shares = append(shares, sh)
		}
		got, _, err := Decrypt(Default, agg, shares, 2, 100)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := decryptWith(victim, s.nonce(1)); maxErr(got, 1, vecs[0]) < 1e6 {
		t.Fatal("one contribution decrypted to its values under a three-contributor key")
	}
	agg, _ := s.encrypt(t, vecs, weights, all(3))
	if got := decryptWith(agg, s.nonce(2)); maxErr(got, 1, make([]float64, 100)) < 1e6 {
		t.Fatal("shares of another round's nonce decrypted the aggregate")
	}
}

// TestLattigoDecryptsTheFastPath: a chunk from the fast encoder and
// encryptor, completed with its regenerated a into a Lattigo ciphertext,
// decrypts with Lattigo's own decryptor and decoder (under the party's key)
// to the encoded values; and the fast decoder agrees with Lattigo's on the
// same plaintext, including values whose scaled coefficients pass 2^63.
func TestLattigoDecryptsTheFastPath(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	p, err := NewParty(Default, 1)
	if err != nil {
		t.Fatal(err)
	}
	k, err := Default.kit()
	if err != nil {
		t.Fatal(err)
	}
	for _, mag := range []float64{1, 1e4, 1e9} {
		vals := make([]float64, k.slots()-1)
		for i := range vals {
			vals[i] = (rng.Float64()*2 - 1) * mag
		}
		nonce := Nonce{Study: "heart", Round: 9}
		c0, err := p.Encrypt(nonce, vals, 1)
		if err != nil {
			t.Fatal(err)
		}
		ct := hefloat.NewCiphertext(k.params, 1, k.params.MaxLevel())
		ct.Value[0].Copy(c0[0])
		k.crp(nonce, 0, ct.Value[1])
		pt := rlwe.NewDecryptor(k.params, p.sk).DecryptNew(ct)
		got := make([]complex128, k.params.MaxSlots())
		if err := hefloat.NewEncoder(k.params).DecodePublic(pt, got, 40); err != nil {
			t.Fatal(err)
		}
		fast := make([]float64, k.slots())
		k.ringQ.INTT(pt.Value, pt.Value)
		if err := k.encoder().decode(pt.Value, 40, fast); err != nil {
			t.Fatal(err)
		}
		var e, ef float64
		for i, v := range vals {
			want := real(got[i/2])
			if i%2 == 1 {
				want = imag(got[i/2])
			}
			e = math.Max(e, math.Abs(want-v)/mag)
			ef = math.Max(ef, math.Abs(fast[i]-want)/mag)
		}
		t.Logf("values of magnitude %g: Lattigo decrypts within %.2g (relative), the fast decoder agrees within %.2g", mag, e, ef)
		if e > 1e-9 || ef > 1e-12 {
			t.Fatalf("magnitude %g: relative error %g (Lattigo), %g (fast decoder vs Lattigo)", mag, e, ef)
		}
	}
}

func TestBadInputs(t *testing.T) {
	s := setup(t, 2, 2)
	if _, err := s.parties[0].Encrypt(s.nonce(1), []float64{math.NaN()}, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("NaN: %v", err)
	}
	if _, err := s.parties[0].Encrypt(s.nonce(1), []float64{1}, 0); !errors.Is(err, ErrInput) {
		t.Fatalf("zero weight: %v", err)
	}
	if _, err := s.parties[0].Encrypt(s.nonce(1), []float64{math.MaxFloat64}, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("a value beyond the scale: %v", err)
	}
	a, _ := s.parties[0].Encrypt(s.nonce(1), make([]float64, 10), 1)
	b, _ := s.parties[0].Encrypt(s.nonce(1), make([]float64, 40000), 1)
	if _, err := Sum(Default, [][]ring.Poly{a, b}); !errors.Is(err, ErrParams) {
		t.Fatalf("mismatched lengths: %v", err)
	}
	short := ring.Poly{Coeffs: a[0].Coeffs[:1]}
	if _, err := Sum(Default, [][]ring.Poly{a, {short}}); !errors.Is(err, ErrParams) {
		t.Fatalf("one residue missing: %v", err)
	}
	if _, err := LookupPreset("ckks-toy"); !errors.Is(err, ErrParams) {
		t.Fatalf("unknown preset: %v", err)
	}
	if _, err := LookupPreset("ckks-n14-q120-flood30/v1"); !errors.Is(err, ErrParams) {
		t.Fatalf("retired preset: %v", err)
	}
	if _, err := NewParty(Default, 0); !errors.Is(err, ErrInput) {
		t.Fatalf("point 0: %v", err)
	}
}

// TestMillionValues: a 1,000,000-value vector (62 chunks) from two clients
// decrypts to the plaintext weighted average within 1e-6.
func TestMillionValues(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000-value round; run without -short")
	}
	rng := rand.New(rand.NewSource(5))
	s := setup(t, 2, 2)
	vecs, weights := randomVecs(rng, 2, 1_000_000)
	sum, weight := s.round(t, vecs, weights, all(2), []int{0, 1})
	if len(sum) != 1_000_000 {
		t.Fatalf("decrypted %d values, want 1000000", len(sum))
	}
	e := maxErr(sum, weight, plainAverage(vecs, weights, all(2)))
	t.Logf("2 clients, 1e6 values: max abs error %.3g", e)
	if e > 1e-6 {
		t.Fatalf("max error %g > 1e-6", e)
	}
}

// TestAccumulatorMatchesSum: adding contributions one at a time gives the
// same polynomials as Sum, the first contribution is copied rather than
// aliased, and a contribution of the wrong shape is refused without
// touching the running sum.
func TestAccumulatorMatchesSum(t *testing.T) {
	s := setup(t, 3, 2)
	var parts [][]ring.Poly
	for i := range 3 {
		c, err := s.parties[i].Encrypt(s.nonce(1), []float64{float64(i), 1, 2}, 1)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, c)
	}
	want, err := Sum(Default, parts)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := NewAccumulator(Default, 1)
	if err != nil {
		t.Fatal(err)
	}
	first := *parts[0][0].CopyNew()
	for i, p := range parts {
		if err := acc.Add(p); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := acc.Add([]ring.Poly{parts[1][0], parts[2][0]}); !errors.Is(err, ErrParams) {
				t.Fatalf("two chunks into a one-chunk sum: %v", err)
			}
		}
	}
	if !acc.Sum()[0].Equal(&want[0]) {
		t.Fatal("accumulated sum differs from Sum, or a refused contribution changed it")
	}
	if !parts[0][0].Equal(&first) {
		t.Fatal("the accumulator wrote into the first contribution")
	}
	if _, err := NewAccumulator(Default, 0); !errors.Is(err, ErrInput) {
		t.Fatalf("zero-chunk accumulator: %v", err)
	}
}
