package secure

import (
	"errors"
	"testing"

	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
)

// TestPublicKeyShareWire sends every CKG share through its envelope and
// checks that the collective key built from the decoded shares encrypts
// what the parties can decrypt, and that misaddressed or cut shares fail.
func TestPublicKeyShareWire(t *testing.T) {
	var parties []*Party
	var decoded []mhe.PublicKeyGenShare
	var first []byte
	for i := uint64(1); i <= 2; i++ {
		p, err := NewParty(Default, i)
		if err != nil {
			t.Fatal(err)
		}
		share, err := p.PublicKeyShare(seed)
		if err != nil {
			t.Fatal(err)
		}
		b, err := SealPublicKeyShare(Default, "heart", share)
		if err != nil {
			t.Fatal(err)
		}
		if first == nil {
			first = b
		}
		got, err := OpenPublicKeyShare(b, Default, "heart")
		if err != nil {
			t.Fatalf("party %d: %v", i, err)
		}
		if !got.Value.Equal(&share.Value) {
			t.Fatalf("party %d: share changed on the wire", i)
		}
		parties, decoded = append(parties, p), append(decoded, got)
	}
	if _, err := CollectivePublicKey(Default, seed, decoded); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenPublicKeyShare(first, Default, "lung"); !errors.Is(err, ErrStudy) {
		t.Errorf("share for another study: got %v, want ErrStudy", err)
	}
	if _, err := OpenPublicKeyShare(first[:len(first)-1], Default, "heart"); !errors.Is(err, ErrEnvelope) {
		t.Errorf("truncated share: got %v, want ErrEnvelope", err)
	}
	other := Default
	other.ID = "other"
	if _, err := OpenPublicKeyShare(first, other, "heart"); !errors.Is(err, ErrParams) {
		t.Errorf("share for another parameter set: got %v, want ErrParams", err)
	}
	// A ciphertext envelope is not a CKG share even if the study matches.
	s := setup(t, 1, 1)
	envs, _ := sealOne(t, s)
	if _, err := OpenPublicKeyShare(envs[0], Default, "heart"); !errors.Is(err, ErrEnvelope) {
		t.Errorf("ciphertext offered as a CKG share: got %v, want ErrEnvelope", err)
	}
}

// TestDecryptionShareWire runs a 2-of-3 decryption with every share
// travelling as envelopes, and checks the rejections of bad shares.
func TestDecryptionShareWire(t *testing.T) {
	s := setup(t, 3, 2)
	vec := []float64{1.5, -2.25, 7}
	// The preset's 1e-6 bound is on an average of total weight >= 100.
	scaled := []float64{150, -225, 700}
	cts, err := s.parties[1].Encrypt(s.nonce(9), scaled, 100)
	if err != nil {
		t.Fatal(err)
	}
	agg, err := Sum(Default, [][]ring.Poly{cts})
	if err != nil {
		t.Fatal(err)
	}
	active := []uint64{1, 3}
	want := Expect{Kind: KindDecryptionShare, Preset: Default, Study: "heart", Round: 9, Count: uint32(len(agg))}
	var shares [][]ring.Poly
	var sealed [][]byte
	for _, idx := range []int{0, 2} {
		sh, err := s.parties[idx].DecryptionShares(s.nonce(9), []uint64{2}, active, len(agg))
		if err != nil {
			t.Fatal(err)
		}
		envs, err := SealPolys(KindDecryptionShare, Default, "heart", 9, sh)
		if err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, envs[0])
		var got []ring.Poly
		for _, b := range envs {
			e, err := OpenEnvelope(b, want)
			if err != nil {
				t.Fatal(err)
			}
			d, err := e.Poly(Default)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, d)
		}
		shares = append(shares, got)
	}
	sum, weight, err := Decrypt(Default, agg, shares, 2, len(vec))
	if err != nil {
		t.Fatal(err)
	}
	if e := maxErr(sum, weight, vec); e > 1e-6 {
		t.Errorf("decrypted through envelopes with error %g, bound 1e-6", e)
	}

	wrongRound := want
	wrongRound.Round = 10
	if _, err := OpenEnvelope(sealed[0], wrongRound); !errors.Is(err, ErrRound) {
		t.Errorf("share for another round: got %v, want ErrRound", err)
	}
	if _, err := OpenEnvelope(sealed[0][:len(sealed[0])-8], want); !errors.Is(err, ErrEnvelope) {
		t.Errorf("truncated share: got %v, want ErrEnvelope", err)
	}
	ctEnvs, err := SealPolys(KindAggregate, Default, "heart", 9, agg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenEnvelope(ctEnvs[0], want); !errors.Is(err, ErrEnvelope) {
		t.Errorf("aggregate offered as a decryption share: got %v, want ErrEnvelope", err)
	}
	// A well-sized body of junk must not decode as a share of the preset.
	e, err := OpenEnvelope(sealed[0], want)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, len(e.Body))
	for i := range junk {
		junk[i] = 0xff
	}
	e.Body = junk
	if _, err := e.Poly(Default); err == nil {
		t.Error("a body of 0xff bytes decoded as a decryption share")
	}
}

func FuzzOpenPublicKeyShare(f *testing.F) {
	p, err := NewParty(Default, 1)
	if err != nil {
		f.Fatal(err)
	}
	share, err := p.PublicKeyShare(seed)
	if err != nil {
		f.Fatal(err)
	}
	b, err := SealPublicKeyShare(Default, "heart", share)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:100])
	f.Add([]byte("FLCT\x01\x04"))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenPublicKeyShare(b, Default, "heart")
		if err != nil {
			return
		}
		params, _ := Default.Params()
		if got.Value.Q.N() != params.N() {
			t.Fatal("accepted a share of the wrong ring degree")
		}
	})
}

func FuzzDecryptionShare(f *testing.F) {
	s := setup(f, 1, 1)
	sh, err := s.parties[0].DecryptionShares(s.nonce(2), []uint64{1}, []uint64{1}, 1)
	if err != nil {
		f.Fatal(err)
	}
	envs, err := SealPolys(KindDecryptionShare, Default, "heart", 2, sh)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(envs[0])
	f.Add(envs[0][:80])
	f.Add([]byte("FLCT\x01\x03"))
	want := Expect{Kind: KindDecryptionShare, Preset: Default, Study: "heart", Round: 2, Count: 1}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := OpenEnvelope(b, want)
		if err != nil {
			return
		}
		d, err := e.Poly(Default)
		if err == nil && len(d.Coeffs) != len(sh[0].Coeffs) {
			t.Fatal("accepted a share of the wrong number of residues")
		}
	})
}
