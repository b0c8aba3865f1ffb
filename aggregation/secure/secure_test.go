package secure

import (
	"errors"
	"math"
	"math/rand"
	"testing"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"
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
	inbox := map[uint64][]mhe.ShamirSecretShare{}
	for _, p := range s.parties {
		out, err := p.ThresholdShares(t, s.points)
		if err != nil {
			tb.Fatal(err)
		}
		for r, sh := range out {
			inbox[r] = append(inbox[r], sh)
		}
	}
	for i, p := range s.parties {
		if err := p.SetThresholdShares(t, inbox[s.points[i]]); err != nil {
			tb.Fatal(err)
		}
	}
	return s
}

// round encrypts every listed party's vector, sums, and decrypts with the
// parties at the given indices as the active set.
func (s *study) round(tb testing.TB, vecs [][]float64, weights []float64, active []int) ([]float64, float64) {
	tb.Helper()
	var cts [][]*rlwe.Ciphertext
	for i, v := range vecs {
		w := make([]float64, len(v))
		for j := range v {
			w[j] = v[j] * weights[i]
		}
		ct, err := Encrypt(Default, s.pk, w, weights[i])
		if err != nil {
			tb.Fatal(err)
		}
		cts = append(cts, ct)
	}
	agg, err := Sum(Default, cts)
	if err != nil {
		tb.Fatal(err)
	}
	var pts []uint64
	for _, a := range active {
		pts = append(pts, s.points[a])
	}
	var shares [][]mhe.KeySwitchShare
	for _, a := range active {
		sh, err := s.parties[a].DecryptionShares(pts, agg)
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

func plainAverage(vecs [][]float64, weights []float64) []float64 {
	avg := make([]float64, len(vecs[0]))
	var total float64
	for i, v := range vecs {
		for j := range v {
			avg[j] += weights[i] * v[j]
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
// several ciphertexts long, decrypted by exactly t parties.
func TestWeightedAverageMatchesPlaintext(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for _, c := range []struct{ n, t, dim int }{{2, 2, 1}, {2, 1, 1000}, {10, 6, 1}, {10, 6, 40000}} {
		s := setup(t, c.n, c.t)
		vecs, weights := randomVecs(rng, c.n, c.dim)
		active := rng.Perm(c.n)[:c.t]
		want := plainAverage(vecs, weights)
		sum, weight := s.round(t, vecs, weights, active)
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
// unit weights and values in [-10, 10], decrypted by all 100 parties, each
// adding flooding noise (the worst case for precision). The collective key
// is the N-of-N sum of the 100 secret-key shares; the t-of-N Shamir setup is
// exercised by the other tests (a 100-of-100 Shamir setup costs minutes and
// adds nothing to precision, since the combined additive shares sum to the
// same key).
func TestHundredClients(t *testing.T) {
	const n = 100
	rng := rand.New(rand.NewSource(2))
	params, err := Default.Params()
	if err != nil {
		t.Fatal(err)
	}
	var parties []*Party
	var pkShares []mhe.PublicKeyGenShare
	for i := 1; i <= n; i++ {
		p, err := NewParty(Default, uint64(i))
		if err != nil {
			t.Fatal(err)
		}
		sh, err := p.PublicKeyShare(seed)
		if err != nil {
			t.Fatal(err)
		}
		parties, pkShares = append(parties, p), append(pkShares, sh)
	}
	pk, err := CollectivePublicKey(Default, seed, pkShares)
	if err != nil {
		t.Fatal(err)
	}
	vecs, _ := randomVecs(rng, n, 3000)
	weights := make([]float64, n)
	var cts [][]*rlwe.Ciphertext
	for i := range weights {
		weights[i] = 1
		ct, err := Encrypt(Default, pk, vecs[i], 1)
		if err != nil {
			t.Fatal(err)
		}
		cts = append(cts, ct)
	}
	agg, err := Sum(Default, cts)
	if err != nil {
		t.Fatal(err)
	}
	cks, err := mhe.NewKeySwitchProtocol(params, Default.flooding())
	if err != nil {
		t.Fatal(err)
	}
	zero := rlwe.NewSecretKey(params)
	shares := make([][]mhe.KeySwitchShare, n)
	for i, p := range parties {
		for _, ct := range agg {
			sh := cks.AllocateShare(ct.Level())
			cks.GenShare(p.sk, zero, ct, &sh)
			shares[i] = append(shares[i], sh)
		}
	}
	sum, weight, err := Decrypt(Default, agg, shares, n, 3000)
	if err != nil {
		t.Fatal(err)
	}
	if math.Round(weight) != n {
		t.Fatalf("decrypted weight %v, want %d", weight, n)
	}
	e := maxErr(sum, weight, plainAverage(vecs, weights))
	t.Logf("100 clients, 100 flooded decryption shares, sigma 2^30: max abs error %.3g", e)
	if e > 1e-6 {
		t.Fatalf("max error %g > 1e-6", e)
	}
}

// TestDecryptAfterDropouts: N - t parties vanish after uploading; the other
// t still decrypt.
func TestDecryptAfterDropouts(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	s := setup(t, 5, 3)
	vecs, weights := randomVecs(rng, 5, 50)
	sum, weight := s.round(t, vecs, weights, []int{0, 2, 4}) // 1 and 3 are gone
	if e := maxErr(sum, weight, plainAverage(vecs, weights)); e > 1e-6 {
		t.Fatalf("max error %g", e)
	}
}

// TestFewerThanTCannotDecrypt: t-1 shares refuse to combine, and forcing
// them through yields values nowhere near the truth.
func TestFewerThanTCannotDecrypt(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	s := setup(t, 5, 3)
	vecs, weights := randomVecs(rng, 5, 20)
	var cts [][]*rlwe.Ciphertext
	for i, v := range vecs {
		ct, _ := Encrypt(Default, s.pk, v, weights[i])
		cts = append(cts, ct)
	}
	agg, _ := Sum(Default, cts)
	pts := []uint64{1, 2, 3}
	var shares [][]mhe.KeySwitchShare
	for _, a := range []int{0, 1} {
		sh, err := s.parties[a].DecryptionShares(pts, agg)
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
	if _, err := s.parties[0].DecryptionShares([]uint64{1, 2}, agg); !errors.Is(err, ErrThreshold) {
		t.Fatalf("short active set: %v", err)
	}
	if _, err := s.parties[0].DecryptionShares([]uint64{2, 3, 4}, agg); !errors.Is(err, ErrInput) {
		t.Fatalf("active set without self: %v", err)
	}
}

func TestBadInputs(t *testing.T) {
	s := setup(t, 2, 2)
	if _, err := Encrypt(Default, s.pk, []float64{math.NaN()}, 1); !errors.Is(err, ErrInput) {
		t.Fatalf("NaN: %v", err)
	}
	if _, err := Encrypt(Default, s.pk, []float64{1}, 0); !errors.Is(err, ErrInput) {
		t.Fatalf("zero weight: %v", err)
	}
	a, _ := Encrypt(Default, s.pk, make([]float64, 10), 1)
	b, _ := Encrypt(Default, s.pk, make([]float64, 40000), 1)
	if _, err := Sum(Default, [][]*rlwe.Ciphertext{a, b}); !errors.Is(err, ErrParams) {
		t.Fatalf("mismatched lengths: %v", err)
	}
	low := a[0].CopyNew()
	low.Resize(1, 0)
	if _, err := Sum(Default, [][]*rlwe.Ciphertext{a, {low}}); !errors.Is(err, ErrParams) {
		t.Fatalf("wrong level: %v", err)
	}
	if _, err := LookupPreset("ckks-toy"); !errors.Is(err, ErrParams) {
		t.Fatalf("unknown preset: %v", err)
	}
	if _, err := NewParty(Default, 0); !errors.Is(err, ErrInput) {
		t.Fatalf("point 0: %v", err)
	}
}

// TestMillionValues: a 1,000,000-value vector (62 ciphertexts) from two
// clients decrypts to the plaintext weighted average within 1e-6.
func TestMillionValues(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000,000-value round takes ~10 s; run without -short")
	}
	rng := rand.New(rand.NewSource(5))
	s := setup(t, 2, 2)
	vecs, weights := randomVecs(rng, 2, 1_000_000)
	sum, weight := s.round(t, vecs, weights, []int{0, 1})
	if len(sum) != 1_000_000 {
		t.Fatalf("decrypted %d values, want 1000000", len(sum))
	}
	e := maxErr(sum, weight, plainAverage(vecs, weights))
	t.Logf("2 clients, 1e6 values: max abs error %.3g", e)
	if e > 1e-6 {
		t.Fatalf("max error %g > 1e-6", e)
	}
}

// TestAccumulatorMatchesSum: adding contributions one at a time gives the
// same ciphertexts as Sum, the first contribution is copied rather than
// aliased, and a contribution of the wrong shape is refused without
// touching the running sum.
func TestAccumulatorMatchesSum(t *testing.T) {
	s := setup(t, 3, 2)
	var parts [][]*rlwe.Ciphertext
	for i := range 3 {
		cts, err := Encrypt(Default, s.pk, []float64{float64(i), 1, 2}, 1)
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, cts)
	}
	want, err := Sum(Default, parts)
	if err != nil {
		t.Fatal(err)
	}
	acc, err := NewAccumulator(Default, 1)
	if err != nil {
		t.Fatal(err)
	}
	first := parts[0][0].CopyNew()
	for i, p := range parts {
		if err := acc.Add(p); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if err := acc.Add([]*rlwe.Ciphertext{parts[1][0], parts[2][0]}); !errors.Is(err, ErrParams) {
				t.Fatalf("two ciphertexts into a one-ciphertext sum: %v", err)
			}
		}
	}
	if !acc.Sum()[0].Equal(want[0]) {
		t.Fatal("accumulated sum differs from Sum, or a refused contribution changed it")
	}
	if !parts[0][0].Equal(first) {
		t.Fatal("the accumulator wrote into the first contribution")
	}
	if _, err := NewAccumulator(Default, 0); !errors.Is(err, ErrInput) {
		t.Fatalf("zero-ciphertext accumulator: %v", err)
	}
}
