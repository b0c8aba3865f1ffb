package secure

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"slices"
	"testing"

	"github.com/tuneinsight/lattigo/v5/ring"

	"github.com/fedledger/fedledger/audit"
)

// sketchRound is one round of real contributions of two chunks from sites
// a, b, c and d, signed, with the aggregate the coordinator should form.
type sketchRound struct {
	t        *testing.T
	keys     map[string]ed25519.PrivateKey
	verify   Verifier
	sites    []string
	payloads map[string][]byte
	parts    map[string][]ring.Poly
	entries  []audit.Contribution
	parent   audit.Hash
}

const sketchChunks = 2

func newSketchRound(t *testing.T) *sketchRound {
	s := setup(t, 4, 3)
	r := &sketchRound{t: t, sites: []string{"a", "b", "c", "d"}, payloads: map[string][]byte{}, parts: map[string][]ring.Poly{}, parent: audit.Hash{0xfe}}
	r.keys, r.verify = signers(r.sites...)
	k, _ := Default.kit()
	vec := make([]float64, k.slots()+100) // two chunks
	for i, id := range r.sites {
		for j := range vec {
			vec[j] = float64((i+1)*(j%97)) / 7
		}
		cts, err := s.parties[i].Encrypt(s.nonce(7), vec, 5)
		if err != nil {
			t.Fatal(err)
		}
		if len(cts) != sketchChunks {
			t.Fatalf("%d chunks, want %d", len(cts), sketchChunks)
		}
		p, err := SealPayload(KindContribution, Default, "heart", 7, cts)
		if err != nil {
			t.Fatal(err)
		}
		r.payloads[id], r.parts[id] = p, cts
		c := audit.Contribution{Site: id, UpdateHash: sha256.Sum256(p), Samples: 5}
		c.Signature = ed25519.Sign(r.keys[id], c.Message("heart", 7, r.parent))
		r.entries = append(r.entries, c)
	}
	return r
}

// aggregate seals polys as the round's aggregate payload.
func (r *sketchRound) aggregate(polys []ring.Poly) []byte {
	p, err := SealPayload(KindAggregate, Default, "heart", 7, polys)
	if err != nil {
		r.t.Fatal(err)
	}
	return p
}

// sum is the honest aggregate of the given sites.
func (r *sketchRound) sum(sites ...string) []ring.Poly {
	var cs [][]ring.Poly
	for _, s := range sites {
		cs = append(cs, r.parts[s])
	}
	out, err := Sum(Default, cs)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// manifest lists every contribution for aggregate agg, with the signed
// sketches of the given sites, each computed honestly by its hospital
// against this aggregate.
func (r *sketchRound) manifest(agg []byte, sketchers ...string) Manifest {
	m := Manifest{Study: "heart", Round: 7, Parent: r.parent, Count: sketchChunks, Contributions: r.entries, AggregateHash: sha256.Sum256(agg)}
	for _, s := range sketchers {
		m.Sketches = append(m.Sketches, r.sketch(m, s, nil))
	}
	return m
}

// sketch is site's signed sketch against m; lie, if set, alters the
// values before they are signed.
func (r *sketchRound) sketch(m Manifest, site string, lie func([]byte)) audit.Sketch {
	v, err := SketchPayload(r.payloads[site], Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: 7, Count: sketchChunks}, SketchChallenge(m))
	if err != nil {
		r.t.Fatal(err)
	}
	if lie != nil {
		lie(v)
	}
	s := audit.Sketch{Site: site, Values: v}
	s.Signature = ed25519.Sign(r.keys[site], s.Message("heart", 7, m.AggregateHash, m.Digest()))
	return s
}

func (r *sketchRound) guard() *ShareGuard {
	g, err := OpenShareGuard(GuardConfig{MinContributors: 2, StateFile: filepath.Join(r.t.TempDir(), "guard.json"), Verify: r.verify})
	if err != nil {
		r.t.Fatal(err)
	}
	return g
}

// fetch serves the honest contributions and counts what it served.
func (r *sketchRound) fetch(count map[string]int) Fetcher {
	return func(site string, _ [32]byte) ([]byte, error) {
		count[site]++
		p, ok := r.payloads[site]
		if !ok {
			return nil, errors.New("no such contribution")
		}
		return p, nil
	}
}

var noShare = func() ([]byte, error) { return []byte("share"), nil }

// TestSketchesCheckTheAggregateWithoutDownloads: with every contributor's
// signed sketch the decryptor downloads nothing; a missing sketch costs
// exactly that one contribution.
func TestSketchesCheckTheAggregateWithoutDownloads(t *testing.T) {
	r := newSketchRound(t)
	agg := r.aggregate(r.sum(r.sites...))
	fetched := map[string]int{}
	_, v, err := r.guard().Answer(r.manifest(agg, r.sites...), Default, []uint64{1, 2, 3}, r.fetch(fetched), agg, noShare)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := SketchSize(Default)
	if len(fetched) != 0 || v.Fetched != 0 || v.Sketched != 4 || v.Resummed || v.SketchBytes != int64(4*size) {
		t.Fatalf("all sketched: fetched %v, verification %+v", fetched, v)
	}
	if size != 32 {
		t.Fatalf("a sketch of the default preset is %d bytes, want 2 rows × 2 primes × 8", size)
	}
	clear(fetched)
	_, v, err = r.guard().Answer(r.manifest(agg, "a", "c", "d"), Default, []uint64{1, 2, 3}, r.fetch(fetched), agg, noShare)
	if err != nil {
		t.Fatal(err)
	}
	if !maps1(fetched, "b") || v.Fetched != 1 || v.Sketched != 3 || v.Resummed || v.FetchedBytes != int64(len(r.payloads["b"])) {
		t.Fatalf("b without a sketch: fetched %v, verification %+v", fetched, v)
	}
}

// maps1 reports whether m counts exactly one fetch, of site.
func maps1(m map[string]int, site string) bool { return len(m) == 1 && m[site] == 1 }

// TestSketchesRefuseWrongAggregates: the coordinator commits to a wrong
// aggregate and the contributors, honestly, sketch against it. The
// sketches do not add up (Resummed says the sketch check caught it), and
// the decryptor refuses: a swapped aggregate (another round's sum), one
// altered in a single coefficient of a single chunk, one hospital's
// contribution presented as the sum, and the sum of all but one.
func TestSketchesRefuseWrongAggregates(t *testing.T) {
	r := newSketchRound(t)
	k, _ := Default.kit()
	other := newSketchRound(t)
	altered := r.sum(r.sites...)
	altered[1].Coeffs[1][4321] = (altered[1].Coeffs[1][4321] + 1) % k.q[1]
	attacks := map[string][]ring.Poly{
		"swapped aggregate":              other.sum(other.sites...),
		"one coefficient of chunk 1":     altered,
		"one hospital's contribution":    r.sum("a"),
		"the sum of three of the four":   r.sum("a", "b", "c"),
		"every contribution twice over":  r.sum("a", "b", "c", "d", "a", "b", "c", "d"),
		"the negated sum of the four":    negate(k, r.sum(r.sites...)),
		"the sum with one chunk dropped": append([]ring.Poly{r.sum(r.sites...)[0]}, r.sum("a", "b", "c")[1]),
	}
	for name, polys := range attacks {
		agg := r.aggregate(polys)
		computed := 0
		share := func() ([]byte, error) { computed++; return []byte("share"), nil }
		_, v, err := r.guard().Answer(r.manifest(agg, r.sites...), Default, []uint64{1, 2, 3}, r.fetch(map[string]int{}), agg, share)
		if !errors.Is(err, ErrAggregate) || !v.Resummed || computed != 0 {
			t.Errorf("%s: got %v (verification %+v, %d shares), want a refusal from the sketch check", name, err, v, computed)
		}
	}
	// Without the re-sum to fall back on (the coordinator does not serve
	// the contributions), the sketch check alone refuses.
	agg := r.aggregate(altered)
	down := func(string, [32]byte) ([]byte, error) { return nil, errors.New("not served") }
	if _, _, err := r.guard().Answer(r.manifest(agg, r.sites...), Default, []uint64{1, 2, 3}, down, agg, noShare); err == nil {
		t.Fatal("an altered aggregate passed with no contribution served")
	}
}

func negate(k *kit, ps []ring.Poly) []ring.Poly {
	for _, p := range ps {
		k.ringQ.Neg(p, p)
	}
	return ps
}

// TestSketchesThatLie: sketches are the hospitals' word, checked. A
// sketch the coordinator made up (not signed by its hospital), signed over
// another aggregate, from a site that is not listed, twice from one site,
// or malformed, is refused. A hospital that signs a false sketch of its
// own contribution cannot block the round: the decryptor re-adds every
// contribution, finds the aggregate right, and names the hospital.
func TestSketchesThatLie(t *testing.T) {
	r := newSketchRound(t)
	agg := r.aggregate(r.sum(r.sites...))
	m := r.manifest(agg, r.sites...)
	refuse := func(name string, m Manifest) {
		t.Helper()
		if _, _, err := r.guard().Answer(m, Default, []uint64{1, 2, 3}, r.fetch(map[string]int{}), agg, noShare); !errors.Is(err, ErrManifest) {
			t.Errorf("%s: got %v, want ErrManifest", name, err)
		}
	}
	forged := m
	forged.Sketches = slices.Clone(m.Sketches)
	forged.Sketches[1].Signature = forged.Sketches[0].Signature
	refuse("a sketch not signed by its hospital", forged)
	stale := m
	stale.Sketches = slices.Clone(m.Sketches)
	otherAgg := r.aggregate(r.sum("a", "b"))
	stale.Sketches[2] = r.sketch(r.manifest(otherAgg), "c", nil)
	refuse("a sketch signed against another aggregate", stale)
	twice := m
	twice.Sketches = append(slices.Clone(m.Sketches), m.Sketches[0])
	refuse("two sketches from one site", twice)
	stranger := m
	stranger.Contributions = r.entries[:3]
	stranger.Sketches = []audit.Sketch{r.sketch(stranger, "d", nil)}
	refuse("a sketch from a site not listed", stranger)
	short := m
	short.Sketches = slices.Clone(m.Sketches)
	short.Sketches[0] = r.sketch(m, "a", nil)
	short.Sketches[0].Values = short.Sketches[0].Values[:24]
	refuse("a truncated sketch", short)
	unreduced := m
	unreduced.Sketches = slices.Clone(m.Sketches)
	unreduced.Sketches[0] = r.sketch(m, "a", func(v []byte) { copy(v, bytes.Repeat([]byte{0xff}, 8)) })
	refuse("a sketch value not reduced mod q", unreduced)

	lying := m
	lying.Sketches = slices.Clone(m.Sketches)
	lying.Sketches[1] = r.sketch(m, "b", func(v []byte) { v[0] ^= 1 })
	fetched := map[string]int{}
	_, v, err := r.guard().Answer(lying, Default, []uint64{1, 2, 3}, r.fetch(fetched), agg, noShare)
	if err != nil {
		t.Fatalf("a false sketch blocked a right aggregate: %v", err)
	}
	if !v.Resummed || !slices.Equal(v.FalseSketches, []string{"b"}) || len(fetched) != 4 {
		t.Fatalf("false sketch of b: verification %+v, fetched %v", v, fetched)
	}
}

// TestSketchIsLinear: the sketch of a sum is the sum of the sketches (what
// the check rests on), and another challenge gives other coefficients.
func TestSketchIsLinear(t *testing.T) {
	r := newSketchRound(t)
	k, _ := Default.kit()
	ch := [32]byte{1}
	total := make([]uint64, SketchRows*len(k.q))
	for _, s := range r.sites {
		v, err := k.sketch(ch, r.parts[s])
		if err != nil {
			t.Fatal(err)
		}
		k.addSketch(total, v)
	}
	of, err := k.sketch(ch, r.sum(r.sites...))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(of, total) {
		t.Fatal("the sketch of the sum is not the sum of the sketches")
	}
	other, _ := k.sketch([32]byte{2}, r.sum(r.sites...))
	if slices.Equal(other, of) {
		t.Fatal("two challenges gave the same sketch")
	}
	for i := 0; i < SketchRows; i++ {
		if of[i*len(k.q)] == of[((i+1)%SketchRows)*len(k.q)] {
			t.Fatal("two rows of the sketch are equal: they are not independent")
		}
	}
	// A residue out of range is refused, not reduced silently.
	bad := r.sum("a")
	bad[0].Coeffs[0][0] = k.q[0]
	if _, err := k.sketch(ch, bad); !errors.Is(err, ErrParams) {
		t.Fatalf("unreduced coefficient: %v", err)
	}
}

// FuzzDecodeSketch: a sketch off the wire is exactly SketchRows values per
// prime, each reduced; anything else is an error, never a panic, and what
// decodes encodes back to the same bytes.
func FuzzDecodeSketch(f *testing.F) {
	k, _ := Default.kit()
	good := encodeSketch([]uint64{1, 2, 3, 4})
	f.Add(good)
	f.Add(good[:31])
	f.Add(append(bytes.Clone(good), 0))
	f.Add(bytes.Repeat([]byte{0xff}, 32))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := k.decodeSketch(b)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeSketch(v), b) {
			t.Fatalf("%x decoded to %v, which encodes otherwise", b, v)
		}
		for j, x := range v {
			if x >= k.q[j%len(k.q)] {
				t.Fatalf("value %d = %d is not reduced", j, x)
			}
		}
	})
}
