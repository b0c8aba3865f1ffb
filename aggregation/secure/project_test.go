package secure

import (
	"crypto/sha256"
	"errors"
	"math"
	"math/rand"
	"slices"
	"testing"

	"github.com/fedledger/fedledger/audit"
)

// project has hospital c (index) encrypt v for round 1 and the parties at
// active open its projection onto u.
func (s *study) project(t *testing.T, c int, v, u []float64, active []int) float64 {
	t.Helper()
	contribution, err := s.parties[c].Encrypt(s.nonce(1), v, 1)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := NewDirection(Default, u)
	if err != nil {
		t.Fatal(err)
	}
	var pts []uint64
	for _, a := range active {
		pts = append(pts, s.points[a])
	}
	var shares [][]uint64
	for _, a := range active {
		sh, err := s.parties[a].ProjectionShare(s.nonce(1), s.points[c], pts, dir)
		if err != nil {
			t.Fatal(err)
		}
		shares = append(shares, sh)
	}
	got, err := Project(Default, contribution, shares, s.t, dir)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func dot(a, b []float64) (d, nb float64) {
	for i := range a {
		d += a[i] * b[i]
		nb += b[i] * b[i]
	}
	return d / math.Sqrt(nb), math.Sqrt(nb)
}

// TestProjectionMatchesPlaintext: t key holders open ⟨v, u/‖u‖⟩ of one
// hospital's encrypted update to within 6e-6 of the plaintext value, for
// small and large models (several chunks), with a contributor outside the
// active set.
func TestProjectionMatchesPlaintext(t *testing.T) {
	s := setup(t, 4, 3)
	rng := rand.New(rand.NewSource(3))
	for _, dim := range []int{14, 1000, 40000} {
		v, u := make([]float64, dim), make([]float64, dim)
		for i := range v {
			v[i], u[i] = rng.NormFloat64()*0.1, rng.NormFloat64()
		}
		want, _ := dot(v, u)
		got := s.project(t, 3, v, u, []int{0, 1, 2})
		// The flooding noise, σ 2^30 on coefficients at scale 2^58, is about
		// 6e-7 per chunk in these units.
		if math.Abs(got-want) > 6e-6 {
			t.Fatalf("dim %d: projection %v, plaintext %v", dim, got, want)
		}
		t.Logf("dim %d: projection %.9f, plaintext %.9f", dim, got, want)
	}
}

// TestNormCheck: the check a coordinator makes with a norm bound B on
// three contributions: an honest one clipped to B passes for any
// direction (Cauchy–Schwarz), one just over the bound along u is refused,
// and one scaled ×1000 is refused, its projection far outside.
func TestNormCheck(t *testing.T) {
	s := setup(t, 4, 3)
	rng := rand.New(rand.NewSource(5))
	const dim, bound = 14, 1.0
	honest := make([]float64, dim)
	for i := range honest {
		honest[i] = rng.NormFloat64()
	}
	_, n := dot(honest, honest)
	for i := range honest {
		honest[i] *= bound / n // exactly at the bound
	}
	// The check's slack, 1e-4·B, is far above the opening's noise (about
	// 6e-7) and far below what moves a model.
	within := func(p float64) bool { return math.Abs(p) <= bound*(1+1e-4) }
	// An honest update at the bound, against its own direction (the worst
	// case) and random ones.
	if p := s.project(t, 0, honest, honest, []int{1, 2, 3}); !within(p) || math.Abs(p-bound) > 1e-5 {
		t.Fatalf("honest update along itself: projection %v, want %v and within the bound", p, bound)
	}
	for range 3 {
		u := make([]float64, dim)
		for i := range u {
			u[i] = rng.NormFloat64()
		}
		if p := s.project(t, 0, honest, u, []int{0, 1, 2}); !within(p) {
			t.Fatalf("honest update refused: projection %v, bound %v", p, bound)
		}
	}
	justOver := make([]float64, dim)
	for i := range justOver {
		justOver[i] = honest[i] * 1.001
	}
	if p := s.project(t, 1, justOver, honest, []int{0, 2, 3}); within(p) {
		t.Fatalf("an update 0.1%% over the bound along u passed: projection %v", p)
	}
	wild := make([]float64, dim)
	for i := range wild {
		wild[i] = -1000 * honest[i] // scaled and sign-flipped
	}
	if p := s.project(t, 2, wild, honest, []int{0, 1, 3}); within(p) || math.Abs(p+1000) > 1e-3 {
		t.Fatalf("a ×(-1000) update: projection %v, want -1000 and refused", p)
	}
}

// TestProjectionNeedsTShares: fewer than t shares, shares from the wrong
// active set, or for another contribution do not open the projection.
func TestProjectionNeedsTShares(t *testing.T) {
	s := setup(t, 4, 3)
	v := []float64{0.3, -0.2, 0.1}
	u := []float64{1, 0, 0}
	dir, err := NewDirection(Default, u)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.parties[3].Encrypt(s.nonce(1), v, 1)
	if err != nil {
		t.Fatal(err)
	}
	share := func(a int, contributor uint64, active []uint64) []uint64 {
		sh, err := s.parties[a].ProjectionShare(s.nonce(1), contributor, active, dir)
		if err != nil {
			t.Fatal(err)
		}
		return sh
	}
	act := []uint64{1, 2, 3}
	if _, err := Project(Default, c, [][]uint64{share(0, 4, act), share(1, 4, act)}, 3, dir); !errors.Is(err, ErrThreshold) {
		t.Fatalf("two shares of three: %v", err)
	}
	// Shares for another contributor open nonsense, not v's projection.
	got, err := Project(Default, c, [][]uint64{share(0, 1, act), share(1, 1, act), share(2, 1, act)}, 3, dir)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-0.3) < 1e-3 {
		t.Fatalf("shares for another contributor opened the projection: %v", got)
	}
	good, err := Project(Default, c, [][]uint64{share(0, 4, act), share(1, 4, act), share(2, 4, act)}, 3, dir)
	if err != nil || math.Abs(good-0.3) > 1e-5 {
		t.Fatalf("projection %v (%v), want 0.3", good, err)
	}
	for name, u := range map[string][]float64{"zero": {0, 0, 0}, "NaN": {math.NaN(), 1, 0}} {
		if _, err := NewDirection(Default, u); !errors.Is(err, ErrDirection) {
			t.Errorf("%s direction: %v", name, err)
		}
	}
	bad := [][]uint64{share(0, 4, act), share(1, 4, act), {1 << 63, 0}}
	if _, err := Project(Default, c, bad, 3, dir); !errors.Is(err, ErrParams) {
		t.Fatalf("an unreduced share: %v", err)
	}
	if _, err := Project(Default, append(c, c[0]), [][]uint64{share(0, 4, act), share(1, 4, act), share(2, 4, act)}, 3, dir); !errors.Is(err, ErrParams) {
		t.Fatalf("a contribution of the wrong length: %v", err)
	}
}

// TestParticipantsCheckTheNorm: three hospitals with t = 2 run the norm
// check as the protocol does: each key holder derives the round's
// direction from the manifest itself and gives its shares once; the
// coordinator's Setup opens each contribution's projection, n·⟨Δ, u⟩. A
// holder refuses a second set of contributions for the round (it would
// open a second scalar of each update) and an earlier round, and answers
// the same manifest again.
func TestParticipantsCheckTheNorm(t *testing.T) {
	sites := []string{"a", "b", "c"}
	const dim, n = 14, 10.0
	ps := roleStudy(t, sites, 2, dim)
	coord := ps[0].Setup
	parent := audit.Hash{9}
	rng := rand.New(rand.NewSource(11))
	var payloads [][]byte
	var contribs []audit.Contribution
	vecs := make([][]float64, len(ps))
	for i, p := range ps {
		vecs[i] = make([]float64, dim)
		for j := range vecs[i] {
			vecs[i][j] = rng.NormFloat64() * n // the weighted update n·Δ
		}
		payload, err := p.Contribute(1, parent[:], vecs[i], n)
		if err != nil {
			t.Fatal(err)
		}
		payloads = append(payloads, payload)
		contribs = append(contribs, audit.Contribution{Site: sites[i], UpdateHash: sha256.Sum256(payload), Samples: 10})
	}
	m := Manifest{Study: "heart", Round: 1, Parent: parent, Contributions: contribs}
	u := RoundDirection(m.Digest(), dim)
	dir, err := NewDirection(Default, u)
	if err != nil {
		t.Fatal(err)
	}
	active := []uint64{1, 3}
	shares := map[string]map[string][]uint64{}
	for _, i := range []int{0, 2} {
		sh, err := ps[i].ProjectionShares(m, active, u)
		if err != nil {
			t.Fatal(err)
		}
		shares[sites[i]] = sh
	}
	for i, site := range sites {
		got, err := coord.Project(1, payloads[i], [][]uint64{shares["a"][site], shares["c"][site]}, 2, dir)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := dot(vecs[i], u)
		if math.Abs(got-want) > 1e-4 {
			t.Fatalf("%s: projection %v, plaintext %v", site, got, want)
		}
	}
	// The same manifest again: answered (a retry).
	if _, err := ps[0].ProjectionShares(m, active, u); err != nil {
		t.Fatalf("a retry: %v", err)
	}
	// Another set of contributions for round 1: refused.
	fewer := m
	fewer.Contributions = contribs[:2]
	if _, err := ps[0].ProjectionShares(fewer, active, u); !errors.Is(err, ErrAlreadyShared) {
		t.Fatalf("a second set for round 1: %v", err)
	}
	// A later round is answered; then round 1 is closed.
	later := m
	later.Round = 2
	if _, err := ps[0].ProjectionShares(later, active, u); err != nil {
		t.Fatal(err)
	}
	if _, err := ps[0].ProjectionShares(m, active, u); !errors.Is(err, ErrAlreadyShared) {
		t.Fatalf("round 1 after round 2: %v", err)
	}
	stranger := m
	stranger.Contributions = append(slices.Clone(contribs), audit.Contribution{Site: "z"})
	stranger.Round = 3
	if _, err := ps[2].ProjectionShares(stranger, active, u); !errors.Is(err, ErrManifest) {
		t.Fatalf("a contribution from a site with no key share: %v", err)
	}
}

// TestRoundDirection: the direction is a deterministic function of the
// manifest's digest, different for different digests, and spread like a
// standard normal vector.
func TestRoundDirection(t *testing.T) {
	a, b := RoundDirection([32]byte{1}, 20000), RoundDirection([32]byte{1}, 20000)
	if !slices.Equal(a, b) {
		t.Fatal("the same digest gave two directions")
	}
	if c := RoundDirection([32]byte{2}, 20000); slices.Equal(a, c) {
		t.Fatal("two digests gave one direction")
	}
	// Along a drift: the drift's half dominates the projection of an
	// update along it; with no drift it is the random direction.
	drift := make([]float64, 20000)
	drift[0] = 3
	along := RoundDirectionAlong([32]byte{1}, drift)
	if p, _ := dot(drift, along); p < 2 {
		t.Fatalf("a vector of norm 3 along the drift projects to %v, want about 3/√2", p)
	}
	if !slices.Equal(RoundDirectionAlong([32]byte{1}, make([]float64, 20000)), a) {
		t.Fatal("with no drift the direction is not the random one")
	}
	var sum, sq float64
	for _, x := range a {
		sum, sq = sum+x, sq+x*x
	}
	mean, v := sum/float64(len(a)), sq/float64(len(a))
	if math.Abs(mean) > 0.03 || math.Abs(v-1) > 0.04 {
		t.Fatalf("mean %v, variance %v: not standard normal", mean, v)
	}
}
