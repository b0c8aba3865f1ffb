package secure

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/audit"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
)

func sealOne(t testing.TB, s *study) ([][]byte, []ring.Poly) {
	t.Helper()
	cts, err := s.parties[0].Encrypt(s.nonce(4), make([]float64, 20000), 3) // two chunks
	if err != nil {
		t.Fatal(err)
	}
	envs, err := SealPolys(KindContribution, Default, "heart", 4, cts)
	if err != nil {
		t.Fatal(err)
	}
	return envs, cts
}

func TestEnvelopeRoundTripAndRejections(t *testing.T) {
	s := setup(t, 2, 2)
	envs, cts := sealOne(t, s)
	want := Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: 4, Count: 2}
	for i, b := range envs {
		e, err := OpenEnvelope(b, want)
		if err != nil {
			t.Fatal(err)
		}
		p, err := e.Poly(Default)
		if err != nil {
			t.Fatal(err)
		}
		if hashPolys([]ring.Poly{p}) != hashPolys(cts[i:i+1]) {
			t.Fatal("polynomial changed in the envelope")
		}
	}
	good := envs[0]
	mod := func(f func(e *Envelope)) []byte {
		e, _ := OpenEnvelope(good, want)
		e.Body = append([]byte(nil), e.Body...)
		f(&e)
		b, _ := e.Marshal()
		return b
	}
	cases := map[string]struct {
		b    []byte
		want error
	}{
		"truncated":      {good[:len(good)-100], ErrEnvelope},
		"header only":    {good[:20], ErrEnvelope},
		"bad magic":      {append([]byte("XXXX"), good[4:]...), ErrEnvelope},
		"wrong round":    {mod(func(e *Envelope) { e.Round = 5 }), ErrRound},
		"wrong study":    {mod(func(e *Envelope) { e.Study = "other" }), ErrStudy},
		"wrong params":   {mod(func(e *Envelope) { e.Preset = "ckks-n12-toy" }), ErrParams},
		"wrong kind":     {mod(func(e *Envelope) { e.Kind = KindAggregate }), ErrEnvelope},
		"index >= count": {mod(func(e *Envelope) { e.Index = 2 }), ErrEnvelope},
		"wrong count":    {mod(func(e *Envelope) { e.Count = 3 }), ErrEnvelope},
		"short body":     {mod(func(e *Envelope) { e.Body = e.Body[:1000] }), ErrParams},
		"padded body":    {mod(func(e *Envelope) { e.Body = append(e.Body, 0) }), ErrParams},
	}
	for name, tc := range cases {
		if _, err := OpenEnvelope(tc.b, want); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	// A well-sized body whose residues are not below their moduli.
	junk := mod(func(e *Envelope) {
		for i := range e.Body {
			e.Body[i] = 0xff
		}
	})
	if e, err := OpenEnvelope(junk, want); err == nil {
		if _, err := e.Poly(Default); !errors.Is(err, ErrEnvelope) {
			t.Errorf("a body of 0xff bytes: got %v, want ErrEnvelope", err)
		}
	}
}

func FuzzOpenEnvelope(f *testing.F) {
	s := setup(f, 1, 1)
	envs, _ := sealOne(f, s)
	f.Add(envs[0])
	f.Add(envs[1][:64])
	f.Add([]byte("FLCT\x01\x01"))
	want := Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: 4, Count: 2}
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := OpenEnvelope(b, want)
		if err != nil {
			return
		}
		k, _ := Default.kit()
		if p, err := e.Poly(Default); err == nil && (p.N() != k.params.N() || len(p.Coeffs) != len(k.q)) {
			t.Fatal("accepted a polynomial of the wrong shape")
		}
	})
}

func TestShareBox(t *testing.T) {
	p, _ := NewParty(Default, 1)
	shares, err := p.ThresholdShares(2, []uint64{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := ecdh.X25519().GenerateKey(rand.Reader)
	k3, _ := ecdh.X25519().GenerateKey(rand.Reader)
	box, err := SealShare(k2.PublicKey(), "heart", 1, 2, shares[2])
	if err != nil {
		t.Fatal(err)
	}
	from, got, err := OpenShare(k2, "heart", 2, box)
	if err != nil || from != 1 {
		t.Fatalf("open: from %d, %v", from, err)
	}
	want := shares[2]
	if !got.Equal(&want.Poly) {
		t.Fatal("share changed in the box")
	}
	tampered := append([]byte(nil), box...)
	tampered[len(tampered)-1] ^= 1
	for name, tc := range map[string]func() error{
		"wrong recipient key": func() error { _, _, err := OpenShare(k3, "heart", 2, box); return err },
		"re-addressed":        func() error { _, _, err := OpenShare(k3, "heart", 3, box); return err },
		"other study":         func() error { _, _, err := OpenShare(k2, "other", 2, box); return err },
		"tampered":            func() error { _, _, err := OpenShare(k2, "heart", 2, tampered); return err },
		"truncated":           func() error { _, _, err := OpenShare(k2, "heart", 2, box[:40]); return err },
	} {
		if err := tc(); !errors.Is(err, ErrBox) {
			t.Errorf("%s: got %v, want ErrBox", name, err)
		}
	}
}

func FuzzOpenShare(f *testing.F) {
	p, _ := NewParty(Default, 1)
	shares, _ := p.ThresholdShares(1, []uint64{2})
	k, _ := ecdh.X25519().GenerateKey(rand.Reader)
	box, _ := SealShare(k.PublicKey(), "s", 1, 2, shares[2])
	f.Add(box)
	f.Add(box[:53])
	f.Fuzz(func(t *testing.T, b []byte) {
		OpenShare(k, "s", 2, b) // must not panic; authenticity makes success impossible for non-boxes
	})
}

// signers makes Ed25519 identities and a Verifier over them.
func signers(ids ...string) (map[string]ed25519.PrivateKey, Verifier) {
	keys := map[string]ed25519.PrivateKey{}
	pubs := map[string]ed25519.PublicKey{}
	for _, id := range ids {
		pub, priv, _ := ed25519.GenerateKey(rand.Reader)
		keys[id], pubs[id] = priv, pub
	}
	return keys, func(client string, msg, sig []byte) error {
		pub, ok := pubs[client]
		if !ok {
			return errors.New("unknown client")
		}
		if !ed25519.Verify(pub, msg, sig) {
			return errors.New("bad signature")
		}
		return nil
	}
}

func TestShareGuard(t *testing.T) {
	s := setup(t, 3, 2)
	keys, verify := signers("a", "b", "c")
	payloads := map[string][]byte{}
	parent := audit.Hash{0xfe}
	var parts [][]ring.Poly
	var entries []audit.Contribution
	for i, id := range []string{"a", "b", "c"} {
		cts, _ := s.parties[i].Encrypt(s.nonce(7), []float64{1, 2, 3}, 5)
		p, err := SealPayload(KindContribution, Default, "heart", 7, cts)
		if err != nil {
			t.Fatal(err)
		}
		payloads[id] = p
		parts = append(parts, cts)
		h := sha256.Sum256(p)
		c := audit.Contribution{Site: id, UpdateHash: h, Samples: 5}
		c.Signature = ed25519.Sign(keys[id], c.Message("heart", 7, parent))
		entries = append(entries, c)
	}
	aggPayload := func(parts [][]ring.Poly) []byte {
		sum, err := Sum(Default, parts)
		if err != nil {
			t.Fatal(err)
		}
		p, err := SealPayload(KindAggregate, Default, "heart", 7, sum)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	agg := aggPayload(parts)
	manifest := Manifest{Study: "heart", Round: 7, Parent: parent, Count: 1, Contributions: entries, AggregateHash: sha256.Sum256(agg)}
	state := filepath.Join(t.TempDir(), "guard.json")
	open := func() *ShareGuard {
		g, err := OpenShareGuard(GuardConfig{MinContributors: 2, StateFile: state, Verify: verify})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	g := open()
	fetched := map[string]int{}
	fetch := func(client string, hash [32]byte) ([]byte, error) {
		fetched[client]++
		p, ok := payloads[client]
		if !ok {
			return nil, errors.New("no such contribution")
		}
		return p, nil
	}
	computed := 0
	share := func() ([]byte, error) {
		computed++
		return []byte(fmt.Sprintf("share number %d", computed)), nil
	}
	active := []uint64{1, 2}
	refuse := func(name string, m Manifest, aggregate []byte, want error) {
		t.Helper()
		if _, _, err := g.Answer(m, Default, active, fetch, aggregate, share); !errors.Is(err, want) {
			t.Errorf("%s: got %v, want %v", name, err, want)
		}
	}
	one := manifest
	one.Contributions = entries[:1]
	oneAgg := aggPayload(parts[:1])
	one.AggregateHash = sha256.Sum256(oneAgg)
	refuse("one client's contribution", one, oneAgg, ErrManifest)
	// One client's contribution passed off as the sum of all three.
	single := manifest
	single.AggregateHash = sha256.Sum256(oneAgg)
	refuse("one client's contribution under a full manifest", single, oneAgg, ErrAggregate)
	dup := manifest
	dup.Contributions = []audit.Contribution{entries[0], entries[0]}
	refuse("duplicate contributor", dup, agg, ErrManifest)
	forged := manifest
	forged.Contributions = append([]audit.Contribution{{Site: "a", UpdateHash: entries[0].UpdateHash, Samples: 5, Signature: entries[1].Signature}}, entries[1:]...)
	refuse("bad signature", forged, agg, ErrManifest)
	refuse("wrong round", Manifest{Study: "heart", Round: 8, Parent: parent, Count: 1, Contributions: entries, AggregateHash: manifest.AggregateHash}, agg, ErrManifest)
	otherParent := manifest
	otherParent.Parent = audit.Hash{0xfd}
	refuse("signed over another parent", otherParent, agg, ErrManifest)
	unordered := manifest
	unordered.Contributions = []audit.Contribution{entries[1], entries[0], entries[2]}
	refuse("contributions out of site order", unordered, agg, ErrManifest)
	partial := aggPayload(parts[:2])
	lying := manifest
	lying.AggregateHash = sha256.Sum256(partial)
	refuse("aggregate of fewer than listed", lying, partial, ErrAggregate)
	refuse("aggregate not matching its hash", manifest, partial, ErrAggregate)
	// A contribution that cannot be fetched is an error, not a verdict: the
	// round stays unanswered.
	down := func(string, [32]byte) ([]byte, error) { return nil, errors.New("connection reset") }
	if _, _, err := g.Answer(manifest, Default, active, down, agg, share); err == nil || !strings.Contains(err.Error(), `fetching the contribution of "a"`) {
		t.Errorf("unfetchable contribution: got %v", err)
	}
	// A fetched payload other than the signed one is refused.
	swapped := func(client string, _ [32]byte) ([]byte, error) {
		return payloads[map[string]string{"a": "b", "b": "a", "c": "c"}[client]], nil
	}
	if _, _, err := g.Answer(manifest, Default, active, swapped, agg, share); !errors.Is(err, ErrAggregate) {
		t.Errorf("swapped contributions: got %v", err)
	}
	if computed != 0 {
		t.Fatalf("a share was computed %d times for refused manifests", computed)
	}

	clear(fetched)
	got, _, err := g.Answer(manifest, Default, active, fetch, agg, share)
	if err != nil {
		t.Fatalf("valid manifest refused: %v", err)
	}
	if string(got) != "share number 1" {
		t.Fatalf("answer %q", got)
	}
	if len(fetched) != 3 || fetched["a"] != 1 || fetched["b"] != 1 || fetched["c"] != 1 {
		t.Fatalf("re-sum fetched %v, want each contribution once", fetched)
	}
	// Asked again for the same aggregate and active set (a retry), it
	// resends the same bytes and never computes a second share; for
	// anything else in the round it refuses.
	again, _, err := g.Answer(manifest, Default, active, fetch, agg, share)
	if err != nil || string(again) != string(got) || computed != 1 {
		t.Fatalf("retry: %q, %v, %d shares computed", again, err, computed)
	}
	active = []uint64{1, 3}
	refuse("another active set for the round", manifest, agg, ErrAlreadyShared)
	active = []uint64{1, 2}
	refuse("another aggregate for the round", lying, partial, ErrAlreadyShared)
	// Both survive a restart.
	g = open()
	again, _, err = g.Answer(manifest, Default, active, fetch, agg, share)
	if err != nil || string(again) != string(got) || computed != 1 {
		t.Fatalf("retry after restart: %q, %v, %d shares computed", again, err, computed)
	}
	refuse("another aggregate after restart", lying, partial, ErrAlreadyShared)
	if fi, _ := os.Stat(state); fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v", fi.Mode().Perm())
	}
	// A kept share that no longer hashes to the one given is not resent.
	kept := g.shareFile("heart", 7)
	os.WriteFile(kept, []byte("tampered"), 0o600)
	if _, _, err := g.Answer(manifest, Default, active, fetch, agg, share); err == nil {
		t.Fatal("resent a kept share that was altered on disk")
	}
}

// hashPolys is the SHA-256 of the polynomials' residues.
func hashPolys(ps []ring.Poly) [32]byte {
	h := sha256.New()
	for _, p := range ps {
		for _, row := range p.Coeffs {
			for _, c := range row {
				h.Write(binary.LittleEndian.AppendUint64(nil, c))
			}
		}
	}
	return [32]byte(h.Sum(nil))
}

func TestPartySaveLoad(t *testing.T) {
	s := setup(t, 3, 2)
	path := filepath.Join(t.TempDir(), "share.key")
	if err := s.parties[0].Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret share file mode %v, want 0600", fi.Mode().Perm())
	}
	loaded, err := LoadParty(path)
	if err != nil {
		t.Fatal(err)
	}
	s.parties[0] = loaded
	// Weights are sample counts. The decryption noise is a fixed absolute
	// error on the sum (~1e-6 per slot for two decryptors), so the error on
	// the average shrinks as the total weight grows; with a total of 3 a
	// 1e-6 bound would fail about one run in a few hundred.
	vecs, weights := [][]float64{{1, 2}, {3, 4}, {5, 6}}, []float64{120, 80, 100}
	sum, w := s.round(t, vecs, weights, all(3), []int{0, 2})
	if e := maxErr(sum, w, plainAverage(vecs, weights, all(3))); e > 1e-6 {
		t.Fatalf("reloaded party decrypts with error %g", e)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadParty(path); err == nil {
		t.Fatal("loaded a world-readable secret share file")
	}
	_ = mhe.ShamirPublicPoint(0)
}
