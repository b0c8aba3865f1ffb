package secure

import (
	"encoding/binary"
	"errors"
	"testing"
)

func TestPayloadRoundTripAndRejections(t *testing.T) {
	s := setup(t, 2, 2)
	cts, err := s.parties[0].Encrypt(s.nonce(4), make([]float64, 20000), 3)
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
	got, err := OpenPolys(p, want)
	if err != nil {
		t.Fatal(err)
	}
	if hashPolys(got) != hashPolys(cts) {
		t.Fatal("polynomials changed in the payload")
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
		if _, err := OpenPolys(tc.b, tc.want); !errors.Is(err, tc.err) {
			t.Errorf("%s: got %v, want %v", name, err, tc.err)
		}
	}
	// A different study id changes the envelope size, so the framing
	// already refuses it; either way it names the problem.
	if _, err := OpenPolys(p, wrongStudy); err == nil {
		t.Error("accepted a payload for another study")
	}
}

func TestSharePayloadRoundTrip(t *testing.T) {
	s := setup(t, 3, 2)
	shares, err := s.parties[0].DecryptionShares(s.nonce(2), []uint64{1, 2}, []uint64{1, 2}, 1)
	if err != nil {
		t.Fatal(err)
	}
	p, err := SealPayload(KindDecryptionShare, Default, "heart", 2, shares)
	if err != nil {
		t.Fatal(err)
	}
	want := Expect{Kind: KindDecryptionShare, Preset: Default, Study: "heart", Round: 2, Count: 1}
	got, err := OpenPolys(p, want)
	if err != nil {
		t.Fatal(err)
	}
	if !got[0].Equal(&shares[0]) {
		t.Fatal("share changed in the payload")
	}
	other := want
	other.Round = 3
	if _, err := OpenPolys(p, other); !errors.Is(err, ErrRound) {
		t.Fatalf("share for round 2 opened as round 3: %v", err)
	}
	if _, err := OpenPolys(p[:len(p)-3], want); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("truncated share payload: %v", err)
	}
	other = want
	other.Kind = KindContribution
	if _, err := OpenPolys(p, other); !errors.Is(err, ErrEnvelope) {
		t.Fatalf("share payload opened as a contribution: %v", err)
	}
}

func FuzzOpenPayload(f *testing.F) {
	s := setup(f, 1, 1)
	cts, _ := s.parties[0].Encrypt(s.nonce(4), []float64{1, 2, 3}, 4)
	p, _ := SealPayload(KindContribution, Default, "heart", 4, cts)
	f.Add(p)
	f.Add(p[:100])
	f.Add([]byte{0, 0, 0, 1, 'F'})
	want := Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: 4, Count: 1}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenPolys(b, want)
		if err == nil && len(got) != 1 {
			t.Fatalf("opened %d polynomials, want 1", len(got))
		}
	})
}

func FuzzOpenSharePayload(f *testing.F) {
	s := setup(f, 2, 2)
	shares, _ := s.parties[0].DecryptionShares(s.nonce(1), []uint64{1}, []uint64{1, 2}, 1)
	p, _ := SealPayload(KindDecryptionShare, Default, "heart", 1, shares)
	f.Add(p)
	f.Add(p[:50])
	want := Expect{Kind: KindDecryptionShare, Preset: Default, Study: "heart", Round: 1, Count: 1}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := OpenPolys(b, want)
		if err == nil && len(got) != 1 {
			t.Fatalf("opened %d shares, want 1", len(got))
		}
	})
}
