package secure

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestPayloadRoundTripAndRejections(t *testing.T) {
	s := setup(t, 2, 2)
	cts, err := Encrypt(Default, s.pk, make([]float64, 20000), 3)
	if err != nil {
		t.Fatal(err)
	}
	count, _ := CiphertextCount(Default, 20000)
	if count != len(cts) || count != 2 {
		t.Fatalf("CiphertextCount = %d, Encrypt made %d, want 2", count, len(cts))
	}
	p, err := SealPayload(KindContribution, Default, "heart", 4, cts)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := PayloadSize(KindContribution, Default, "heart", count)
	if int64(len(p)) != size {
		t.Fatalf("payload of %d bytes, PayloadSize says %d", len(p), size)
	}
	want := Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: 4, Count: 2}
	got, err := OpenCiphertexts(p, want)
	if err != nil {
		t.Fatal(err)
	}
	if hashCiphertexts(got) != hashCiphertexts(cts) {
		t.Fatal("ciphertexts changed in the payload")
	}

	half := len(p) / 2
	swapped := append(append([]byte(nil), p[half:]...), p[:half]...)
	badFrame := append([]byte(nil), p...)
	binary.BigEndian.PutUint32(badFrame, 7)
	wrongRound := want
	wrongRound.Round = 5
	wrongStudy := want
	wrongStudy.Study = "lungs"
	oneMore := want
	oneMore.Count = 3
	for name, tc := range map[string]struct {
		b    []byte
		want Expect
		err  error
	}{
		"truncated":        {p[:len(p)-1], want, ErrEnvelope},
		"empty":            {nil, want, ErrEnvelope},
		"extra byte":       {append(append([]byte(nil), p...), 0), want, ErrEnvelope},
		"reordered":        {swapped, want, ErrEnvelope},
		"bad frame length": {badFrame, want, ErrEnvelope},
		"one envelope":     {p[:half], want, ErrEnvelope},
		"wrong round":      {p, wrongRound, ErrRound},
		"wrong count":      {p, oneMore, ErrEnvelope},
		"wrong kind":       {p, Expect{Kind: KindAggregate, Preset: Default, Study: "heart", Round: 4, Count: 2}, ErrEnvelope},
	} {
		if _, err := OpenCiphertexts(tc.b, tc.want); !errors.Is(err, tc.err) {
			t.Errorf("%s: got %v, want %v", name, err, tc.err)
		}
	}
	// A different study id changes the envelope size, so the framing
	// already refuses it; either way it names the problem.
	if _, err := OpenCiphertexts(p, wrongStudy); err == nil {
		t.Error("accepted a payload for another study")
	}
}

func TestSharePayloadRoundTrip(t *testing.T) {
	s := setup(t, 3, 2)
	cts, _ := Encrypt(Default, s.pk, []float64{1, 2, 3}, 100)
	shares, err := s.parties[0].DecryptionShares([]uint64{1, 2}, cts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := SealSharePayload(Default, "heart", 2, shares)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenSharePayload(p, Default, "heart", 2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Value.Equal(&shares[0].Value) {
		t.Fatal("share changed in the payload")
	}
	if _, err := OpenSharePayload(p, Default, "heart", 3, 1); !errors.Is(err, ErrRound) {
		t.Fatalf("share for round 2 opened as round 3: %v", err)
	}
	if _, err := OpenSharePayload(p[:len(p)-3], Default, "heart", 2, 1); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("truncated share payload: %v", err)
	}
}

func FuzzOpenPayload(f *testing.F) {
	s := setup(f, 1, 1)
	cts, _ := Encrypt(Default, s.pk, []float64{1, 2, 3}, 4)
	p, _ := SealPayload(KindContribution, Default, "heart", 4, cts)
	f.Add(p)
	f.Add(p[:100])
	f.Add([]byte{0, 0, 0, 1, 'F'})
	want := Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: 4, Count: 1}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenCiphertexts(b, want)
		if err == nil && len(got) != 1 {
			t.Fatalf("opened %d ciphertexts, want 1", len(got))
		}
	})
}

func FuzzOpenSharePayload(f *testing.F) {
	s := setup(f, 2, 2)
	cts, _ := Encrypt(Default, s.pk, []float64{1}, 4)
	shares, _ := s.parties[0].DecryptionShares([]uint64{1, 2}, cts)
	p, _ := SealSharePayload(Default, "heart", 1, shares)
	f.Add(p)
	f.Add(p[:50])
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenSharePayload(b, Default, "heart", 1, 1)
		if err == nil && len(got) != 1 {
			t.Fatalf("opened %d shares, want 1", len(got))
		}
	})
}
