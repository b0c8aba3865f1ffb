package secure

import (
	"math/rand"
	"runtime"
	"testing"
	"time"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/he/hefloat"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"

	"github.com/fedledger/fedledger/aggregation"
)

const benchDim = 1_000_000

func benchVector() []float64 {
	rng := rand.New(rand.NewSource(1))
	vec := make([]float64, benchDim)
	for i := range vec {
		vec[i] = (rng.Float64()*20 - 10) * 100 // n·Δ for n = 100
	}
	return vec
}

// oneCore runs the benchmark body on one core, as the floor is
// stated per core.
func oneCore(b *testing.B) {
	old := runtime.GOMAXPROCS(1)
	b.Cleanup(func() { runtime.GOMAXPROCS(old) })
}

// lattigoChunks is the bare Lattigo baseline of the same operation as
// Party.Encrypt, written as a Lattigo expert would: the float64 encoder,
// a secret-key encryptor whose uniform polynomial comes from a keyed PRNG,
// ciphertexts marshalled with Lattigo's encoding.
func lattigoChunks(b *testing.B, k *kit, sk *rlwe.SecretKey, vec []float64) int {
	ecd := hefloat.NewEncoder(k.params, 53)
	enc := rlwe.NewEncryptor(k.params, sk)
	slots := make([]complex128, k.params.MaxSlots())
	per := k.slots()
	bytes := 0
	for lo, c := 0, 0; lo < len(vec)+1; lo, c = lo+per, c+1 {
		clear(slots)
		for i := lo; i < min(lo+per, len(vec)); i += 2 {
			im := 0.0
			if i+1 < len(vec) {
				im = vec[i+1]
			}
			slots[(i-lo)/2] = complex(vec[i], im)
		}
		pt := hefloat.NewPlaintext(k.params, k.params.MaxLevel())
		if err := ecd.Encode(slots, pt); err != nil {
			b.Fatal(err)
		}
		key := Nonce{Round: uint64(c)}.seed(c)
		prng, _ := sampling.NewKeyedPRNG(key[:])
		ct := hefloat.NewCiphertext(k.params, 1, k.params.MaxLevel())
		if err := enc.WithPRNG(prng).Encrypt(pt, ct); err != nil {
			b.Fatal(err)
		}
		body, err := ct.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(body)
	}
	return bytes
}

// BenchmarkEncrypt is one hospital sealing a 10^6-parameter contribution
// on one core: params/s, the ratio of its time to the bare Lattigo
// baseline measured in the same run (x_vs_lattigo), and the bytes of the
// sealed contribution per parameter (B/param, against Lattigo's full
// ciphertexts in lattigo_B/param).
func BenchmarkEncrypt(b *testing.B) {
	oneCore(b)
	s := setup(b, 2, 2)
	k, _ := Default.kit()
	vec := benchVector()
	var ours, base time.Duration
	var size, baseSize int
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		c, err := s.parties[0].Encrypt(s.nonce(uint64(i)), vec, 100)
		if err != nil {
			b.Fatal(err)
		}
		payload, err := SealPayload(KindContribution, Default, "heart", uint64(i), c)
		if err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		size = len(payload)
		t0 = time.Now()
		baseSize = lattigoChunks(b, k, s.parties[0].sk, vec)
		base += time.Since(t0)
	}
	b.ReportMetric(float64(b.N*benchDim)/ours.Seconds(), "params/s")
	b.ReportMetric(ours.Seconds()/base.Seconds(), "x_vs_lattigo")
	b.ReportMetric(float64(size)/benchDim, "B/param")
	b.ReportMetric(float64(baseSize)/benchDim, "lattigo_B/param")
	b.ReportMetric(float64(size)/benchDim/4, "x_float32")
}

// BenchmarkDecryptionShare is one decryptor's shares for a 10^6-parameter
// aggregate on one core, against Lattigo's KeySwitchProtocol.GenShare on
// the same chunks in the same run.
func BenchmarkDecryptionShare(b *testing.B) {
	oneCore(b)
	s := setup(b, 3, 2)
	k, _ := Default.kit()
	count, _ := CiphertextCount(Default, benchDim)
	cks, err := mhe.NewKeySwitchProtocol(k.params, Default.flooding())
	if err != nil {
		b.Fatal(err)
	}
	ct := hefloat.NewCiphertext(k.params, 1, k.params.MaxLevel())
	zero := rlwe.NewSecretKey(k.params)
	var ours, base time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := s.parties[0].DecryptionShares(s.nonce(1), []uint64{1, 2, 3}, []uint64{1, 2}, count); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		t0 = time.Now()
		for c := 0; c < count; c++ {
			k.crp(s.nonce(1), c, ct.Value[1])
			sh := cks.AllocateShare(ct.Level())
			cks.GenShare(s.parties[0].sk, zero, ct, &sh)
		}
		base += time.Since(t0)
	}
	b.ReportMetric(float64(b.N*benchDim)/ours.Seconds(), "params/s")
	b.ReportMetric(ours.Seconds()/base.Seconds(), "x_vs_lattigo")
}

// BenchmarkCombine is combining t = 2 decryption shares with a
// 10^6-parameter aggregate and decoding it, on one core, against Lattigo's
// KeySwitch, Decrypt and DecodePublic on the same chunks in the same run.
func BenchmarkCombine(b *testing.B) {
	oneCore(b)
	s := setup(b, 2, 2)
	k, _ := Default.kit()
	vec := benchVector()
	agg, cpoints := s.encrypt(b, [][]float64{vec, vec}, []float64{1, 1}, all(2))
	var shares [][]ring.Poly
	for _, p := range s.parties {
		sh, err := p.DecryptionShares(s.nonce(1), cpoints, []uint64{1, 2}, len(agg))
		if err != nil {
			b.Fatal(err)
		}
		shares = append(shares, sh)
	}
	cks, err := mhe.NewKeySwitchProtocol(k.params, Default.flooding())
	if err != nil {
		b.Fatal(err)
	}
	ecd := hefloat.NewEncoder(k.params, 53)
	dec := rlwe.NewDecryptor(k.params, rlwe.NewSecretKey(k.params))
	slots := make([]complex128, k.params.MaxSlots())
	var ours, base time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, _, err := Decrypt(Default, agg, shares, 2, benchDim); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(t0)
		t0 = time.Now()
		for c := range agg {
			combined := mhe.KeySwitchShare{Value: *shares[0][c].CopyNew()}
			for _, sh := range shares[1:] {
				cks.AggregateShares(combined, mhe.KeySwitchShare{Value: sh[c]}, &combined)
			}
			ct := hefloat.NewCiphertext(k.params, 1, k.params.MaxLevel())
			ct.Value[0].Copy(agg[c])
			out := hefloat.NewCiphertext(k.params, 1, k.params.MaxLevel())
			cks.KeySwitch(ct, combined, out)
			if err := ecd.DecodePublic(dec.DecryptNew(out), slots, Default.LogPrec); err != nil {
				b.Fatal(err)
			}
		}
		base += time.Since(t0)
	}
	b.ReportMetric(float64(b.N*benchDim)/ours.Seconds(), "params/s")
	b.ReportMetric(ours.Seconds()/base.Seconds(), "x_vs_lattigo")
}

// BenchmarkSecureRound1M measures, for a 1,000,000-parameter update with 3
// parties and threshold 2, on every core: client encryption, aggregation
// per client, decryption-share generation, combine+decode, and bytes on
// the wire per parameter, each also as a ratio to the plaintext path
// (encode/decode of float64 deltas and their sum) measured in the same run.
func BenchmarkSecureRound1M(b *testing.B) {
	s := setup(b, 3, 2)
	vec := benchVector()
	zero := make([]float64, benchDim)
	for i := 0; i < b.N; i++ {
		// Plaintext baseline: encode, decode, add.
		t0 := time.Now()
		var plainBytes int
		sum := aggregation.NewWeightedSum(benchDim)
		for p := 0; p < 3; p++ {
			enc, _ := aggregation.EncodeWeightedDelta(vec, zero, 10)
			plainBytes = len(enc)
			d, _ := aggregation.DecodeWeightedDelta(enc, benchDim)
			sum.Add(d, 10)
		}
		sum.Average()
		plain := time.Since(t0)

		t0 = time.Now()
		var parts [][]ring.Poly
		var wire int
		for p := 0; p < 3; p++ {
			c, err := s.parties[p].Encrypt(s.nonce(uint64(i)), vec, 10)
			if err != nil {
				b.Fatal(err)
			}
			payload, err := SealPayload(KindContribution, Default, "heart", uint64(i), c)
			if err != nil {
				b.Fatal(err)
			}
			polys, err := OpenPolys(payload, Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: uint64(i), Count: uint32(len(c))})
			if err != nil {
				b.Fatal(err)
			}
			parts = append(parts, polys)
			wire = len(payload)
		}
		encrypt := time.Since(t0) / 3
		t0 = time.Now()
		agg, err := Sum(Default, parts)
		if err != nil {
			b.Fatal(err)
		}
		aggregate := time.Since(t0) / 3
		t0 = time.Now()
		var shares [][]ring.Poly
		for _, p := range s.parties[:2] {
			sh, err := p.DecryptionShares(s.nonce(uint64(i)), []uint64{1, 2, 3}, []uint64{1, 2}, len(agg))
			if err != nil {
				b.Fatal(err)
			}
			shares = append(shares, sh)
		}
		share := time.Since(t0) / 2
		t0 = time.Now()
		if _, _, err := Decrypt(Default, agg, shares, 2, benchDim); err != nil {
			b.Fatal(err)
		}
		combine := time.Since(t0)
		secure := 3*encrypt + 3*aggregate + 2*share + combine
		b.ReportMetric(encrypt.Seconds(), "encrypt+seal_s/client")
		b.ReportMetric(aggregate.Seconds(), "aggregate_s/client")
		b.ReportMetric(share.Seconds(), "decshare_s/client")
		b.ReportMetric(combine.Seconds(), "combine+decode_s")
		b.ReportMetric(float64(wire)/benchDim, "wire_B/param")
		b.ReportMetric(float64(wire)/float64(plainBytes), "x_plaintext_bytes")
		b.ReportMetric(secure.Seconds()/plain.Seconds(), "x_plaintext_time")
	}
}

// BenchmarkAggregateCheck is a decryptor checking a 10^6-parameter
// aggregate of 32 hospitals on one core: against the contributors' 32
// sketches (open the aggregate, sketch it, add the sketches) and, measured
// in the same run, by re-adding the 31 other contributions as before
// sketches (open and add each). It reports the sketch path's speed
// (params/s), its time and bytes received against the re-sum's
// (x_vs_resum, x_bytes_vs_resum) and what it receives in contributions'
// worth (check_contributions).
func BenchmarkAggregateCheck(b *testing.B) {
	oneCore(b)
	const hospitals = 32
	s := setup(b, 2, 2)
	k, _ := Default.kit()
	count, _ := CiphertextCount(Default, benchDim)
	cts, err := s.parties[0].Encrypt(s.nonce(1), benchVector(), 100)
	if err != nil {
		b.Fatal(err)
	}
	contribution, err := SealPayload(KindContribution, Default, "bench", 1, cts)
	if err != nil {
		b.Fatal(err)
	}
	aggregate, err := SealPayload(KindAggregate, Default, "bench", 1, cts)
	if err != nil {
		b.Fatal(err)
	}
	challenge := [32]byte{7}
	one, err := SketchPayload(contribution, Expect{Kind: KindContribution, Preset: Default, Study: "bench", Round: 1, Count: uint32(count)}, challenge)
	if err != nil {
		b.Fatal(err)
	}
	var ours, base time.Duration
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		polys, err := OpenPolys(aggregate, Expect{Kind: KindAggregate, Preset: Default, Study: "bench", Round: 1, Count: uint32(count)})
		if err != nil {
			b.Fatal(err)
		}
		want, err := k.sketch(challenge, polys)
		if err != nil {
			b.Fatal(err)
		}
		have := make([]uint64, len(want))
		for h := 0; h < hospitals; h++ {
			v, err := k.decodeSketch(one)
			if err != nil {
				b.Fatal(err)
			}
			k.addSketch(have, v)
		}
		ours += time.Since(t0)
		t0 = time.Now()
		acc, _ := NewAccumulator(Default, count)
		for h := 0; h < hospitals-1; h++ {
			polys, err := OpenPolys(contribution, Expect{Kind: KindContribution, Preset: Default, Study: "bench", Round: 1, Count: uint32(count)})
			if err != nil {
				b.Fatal(err)
			}
			if err := acc.Add(polys); err != nil {
				b.Fatal(err)
			}
		}
		base += time.Since(t0)
	}
	received, resum := float64(hospitals*len(one)), float64((hospitals-1)*len(contribution))
	b.ReportMetric(float64(b.N*benchDim)/ours.Seconds(), "params/s")
	b.ReportMetric(ours.Seconds()/base.Seconds(), "x_vs_resum")
	b.ReportMetric(received/resum, "x_bytes_vs_resum")
	b.ReportMetric(received/float64(len(contribution)), "check_contributions")
}
