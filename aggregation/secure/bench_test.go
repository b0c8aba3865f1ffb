package secure

import (
	"math/rand"
	"testing"
	"time"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"

	"github.com/fedledger/fedledger/aggregation"
)

// BenchmarkSecureRound1M measures, for a 1,000,000-parameter update with 3
// parties and threshold 2: client encryption, aggregation per client,
// decryption-share generation, combine+decode, and bytes on the wire per
// parameter, each also as a ratio to the plaintext path (encode/decode of
// float64 deltas and their sum) measured in the same run.
func BenchmarkSecureRound1M(b *testing.B) {
	const dim = 1_000_000
	s := setup(b, 3, 2)
	rng := rand.New(rand.NewSource(1))
	vec := make([]float64, dim)
	for i := range vec {
		vec[i] = rng.Float64()*20 - 10
	}
	zero := make([]float64, dim)
	for i := 0; i < b.N; i++ {
		// Plaintext baseline: encode, decode, add.
		t0 := time.Now()
		var plainBytes int
		sum := aggregation.NewWeightedSum(dim)
		for p := 0; p < 3; p++ {
			enc, _ := aggregation.EncodeWeightedDelta(vec, zero, 10)
			plainBytes = len(enc)
			d, _ := aggregation.DecodeWeightedDelta(enc, dim)
			sum.Add(d, 10)
		}
		sum.Average()
		plain := time.Since(t0)

		t0 = time.Now()
		var cts [][]*rlwe.Ciphertext
		for p := 0; p < 3; p++ {
			ct, err := Encrypt(Default, s.pk, vec, 10)
			if err != nil {
				b.Fatal(err)
			}
			cts = append(cts, ct)
		}
		encrypt := time.Since(t0) / 3
		var wire int
		for _, ct := range cts[0] {
			wire += ct.BinarySize()
		}
		t0 = time.Now()
		agg, err := Sum(Default, cts)
		if err != nil {
			b.Fatal(err)
		}
		aggregate := time.Since(t0) / 3
		t0 = time.Now()
		var shares [][]mhe.KeySwitchShare
		for _, p := range s.parties[:2] {
			sh, err := p.DecryptionShares([]uint64{1, 2}, agg)
			if err != nil {
				b.Fatal(err)
			}
			shares = append(shares, sh)
		}
		share := time.Since(t0) / 2
		t0 = time.Now()
		if _, _, err := Decrypt(Default, agg, shares, 2, dim); err != nil {
			b.Fatal(err)
		}
		combine := time.Since(t0)
		secure := 3*encrypt + 3*aggregate + 2*share + combine
		b.ReportMetric(encrypt.Seconds(), "encrypt_s/client")
		b.ReportMetric(aggregate.Seconds(), "aggregate_s/client")
		b.ReportMetric(share.Seconds(), "decshare_s/client")
		b.ReportMetric(combine.Seconds(), "combine+decode_s")
		b.ReportMetric(float64(wire)/dim, "wire_B/param")
		b.ReportMetric(float64(wire)/dim/4, "x_float32")
		b.ReportMetric(float64(wire)/float64(plainBytes), "x_plaintext_bytes")
		b.ReportMetric(secure.Seconds()/plain.Seconds(), "x_plaintext_time")
	}
}
