package secure

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedledger/fedledger/audit"
)

// roleStudy runs the hospital role's key setup among sites, relaying like
// the coordinator does, and returns the finished participants.
func roleStudy(t *testing.T, sites []string, threshold, dim int) []*Participant {
	t.Helper()
	points := map[string]uint64{}
	for i, s := range sites {
		points[s] = uint64(i + 1)
	}
	setups := make([]*KeySetup, len(sites))
	shares := make([]KeyShare, len(sites))
	for i, s := range sites {
		var err error
		if setups[i], shares[i], err = StartKeySetup("heart", Default.ID, seed, threshold, dim, points, s); err != nil {
			t.Fatal(err)
		}
	}
	// The coordinator relays every key share to everyone; each returns its
	// sealed Shamir shares, relayed by recipient.
	inbox := map[uint64]map[uint64][]byte{}
	for i := range sites {
		for j, from := range sites {
			boxes, err := setups[i].AddPeer(from, shares[j].PkShare, shares[j].X25519)
			if err != nil {
				t.Fatal(err)
			}
			for to, box := range boxes {
				if inbox[to] == nil {
					inbox[to] = map[uint64][]byte{}
				}
				inbox[to][setups[i].Point()] = box
			}
		}
	}
	out := make([]*Participant, len(sites))
	for i, s := range setups {
		for from, box := range inbox[s.Point()] {
			p, err := s.AddBox(from, box)
			if err != nil {
				t.Fatal(err)
			}
			if p != nil {
				out[i] = p
			}
		}
		if out[i] == nil {
			t.Fatalf("%s did not finish key setup", sites[i])
		}
		if err := out[i].Save(t.TempDir()); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestContributionIsKept: a round's public polynomials are fixed, so a
// participant encrypts one update per round, ever: asked again for the
// same round and parent (a retry, also after a restart) it returns the
// bytes it sent, whatever vector it is given; for another parent or an
// earlier round it refuses. A participant that was never saved has nowhere
// to keep its contribution and refuses to make one.
func TestContributionIsKept(t *testing.T) {
	ps := roleStudy(t, []string{"a", "b"}, 2, 3)
	p := ps[0]
	first, err := p.Contribute(4, []byte("parent"), []float64{1, 2, 3}, 10)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.Contribute(4, []byte("parent"), []float64{9, 9, 9}, 11)
	if err != nil || !bytes.Equal(again, first) {
		t.Fatalf("retry: %v, same bytes %v", err, bytes.Equal(again, first))
	}
	if _, err := p.Contribute(4, []byte("other parent"), []float64{1, 2, 3}, 10); !errors.Is(err, ErrInput) {
		t.Fatalf("same round, another parent: %v", err)
	}
	if _, err := p.Contribute(3, []byte("parent"), []float64{1, 2, 3}, 10); !errors.Is(err, ErrInput) {
		t.Fatalf("an earlier round: %v", err)
	}
	reloaded, err := LoadParticipant(p.dir, "a")
	if err != nil {
		t.Fatal(err)
	}
	if again, err = reloaded.Contribute(4, []byte("parent"), []float64{5, 5, 5}, 1); err != nil || !bytes.Equal(again, first) {
		t.Fatalf("retry after a restart: %v", err)
	}
	next, err := reloaded.Contribute(5, []byte("next"), []float64{1, 2, 3}, 10)
	if err != nil || bytes.Equal(next, first) {
		t.Fatalf("next round: %v", err)
	}
	// A damaged contribution file is an error naming it, never a reason
	// to encrypt afresh (which could reuse round 5's polynomials).
	path := filepath.Join(reloaded.dir, contributionFile)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := reloaded.Contribute(5, []byte("next"), []float64{1, 2, 3}, 10); err == nil || !strings.Contains(err.Error(), "contribution file") {
		t.Fatalf("damaged contribution file: %v", err)
	}
	unsaved := &Participant{Setup: ps[1].Setup, party: ps[1].party, self: "b"}
	if _, err := unsaved.Contribute(1, []byte("parent"), []float64{1, 2, 3}, 10); !errors.Is(err, ErrInput) {
		t.Fatalf("unsaved participant: %v", err)
	}
}

// TestRolesRunASecureRound: hospitals set up a key with the participant
// role only; the coordinator, holding nothing but a Setup rebuilt from the
// same key shares, checks and adds their contributions; t hospitals answer
// under their guards; the coordinator and any hospital combining the same
// shares decrypt the same sum.
func TestRolesRunASecureRound(t *testing.T) {
	sites := []string{"a", "b", "c"}
	const dim = 5
	ps := roleStudy(t, sites, 2, dim)
	key := ps[0].Setup.KeyHash()
	for _, p := range ps {
		if p.Setup.KeyHash() != key {
			t.Fatal("participants computed different collective keys")
		}
	}
	// The coordinator's Setup survives its file format.
	b, err := ps[0].Setup.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	coord, err := UnmarshalSetup(b)
	if err != nil || coord.KeyHash() != key {
		t.Fatalf("setup file round trip: %v", err)
	}
	// A damaged file fails to decode (header, lengths, a key coefficient
	// pushed out of range) or decodes, canonically, to other contents (a
	// renamed study, another key: the caller compares the key hash with
	// the log's); it never crashes or allocates what a length field asks.
	// Every header byte, and a sample of key bytes.
	header := len(b) - len(keyBytes(coord.pk))
	for i := 0; i < len(b); i += 1 + (i/header)*4093 {
		bad := bytes.Clone(b)
		bad[i] ^= 0x80
		if s, err := UnmarshalSetup(bad); err == nil {
			if again, _ := s.MarshalBinary(); !bytes.Equal(again, bad) {
				t.Fatalf("flip at %d decoded to something else than the file says", i)
			}
			if i >= header && s.KeyHash() == key {
				t.Fatalf("flip at %d in the key left its hash unchanged", i)
			}
		}
	}

	parent := audit.Hash{7}
	var payloads [][]byte
	var contribs []audit.Contribution
	want := make([]float64, dim)
	for i, p := range ps {
		vec := make([]float64, dim)
		for j := range vec {
			vec[j] = float64((i+1)*(j+1)) * 10
			want[j] += vec[j]
		}
		payload, err := p.Contribute(1, parent[:], vec, 10)
		if err != nil {
			t.Fatal(err)
		}
		if err := coord.CheckContribution(1, payload); err != nil {
			t.Fatal(err)
		}
		if err := coord.CheckContribution(2, payload); err == nil {
			t.Fatal("a round-1 contribution passed as round 2")
		}
		payloads = append(payloads, payload)
		contribs = append(contribs, audit.Contribution{Site: sites[i], UpdateHash: sha256.Sum256(payload), Samples: 10})
	}
	agg, err := coord.Aggregate(1, len(payloads), func(i int) ([]byte, error) { return payloads[i], nil })
	if err != nil {
		t.Fatal(err)
	}
	fetch := func(site string, _ [32]byte) ([]byte, error) { return payloads[slices.Index(sites, site)], nil }
	m := Manifest{Study: "heart", Round: 1, Parent: parent, Contributions: contribs, AggregateHash: sha256.Sum256(agg)}
	// Each hospital sketches the contribution it kept, against the
	// aggregate; the decryptors then download none.
	for i, p := range ps {
		sk, err := p.Sketch(m)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := SketchPayload(payloads[i], Expect{Kind: KindContribution, Preset: Default, Study: "heart", Round: 1, Count: 1}, SketchChallenge(m))
		if !bytes.Equal(sk, want) {
			t.Fatalf("%s's sketch is not its contribution's", sites[i])
		}
		m.Sketches = append(m.Sketches, audit.Sketch{Site: sites[i], Values: sk})
	}
	misattributed := m
	misattributed.Contributions = slices.Clone(m.Contributions)
	misattributed.Contributions[0].UpdateHash = contribs[1].UpdateHash
	if _, err := ps[0].Sketch(misattributed); !errors.Is(err, ErrManifest) {
		t.Fatalf("sketch of a contribution the site did not send: %v", err)
	}
	if _, err := ps[0].Sketch(Manifest{Study: "heart", Round: 1, Contributions: contribs[1:]}); !errors.Is(err, ErrManifest) {
		t.Fatalf("sketch for a manifest without the site: %v", err)
	}
	if _, err := ps[0].Sketch(Manifest{Study: "heart", Round: 2, Contributions: contribs}); !errors.Is(err, ErrManifest) {
		t.Fatalf("sketch for a round the site did not contribute to: %v", err)
	}
	fetch = func(string, [32]byte) ([]byte, error) {
		return nil, errors.New("every contribution is sketched: nothing is downloaded")
	}
	active := []uint64{1, 3}
	var answers [][]byte
	for _, i := range []int{0, 2} {
		p := ps[i]
		if err := p.OpenGuard(GuardConfig{MinContributors: 2, StateFile: filepath.Join(t.TempDir(), "guard.json"),
			Verify: func(string, []byte, []byte) error { return nil }}); err != nil {
			t.Fatal(err)
		}
		share, v, err := p.Answer(m, active, agg, fetch)
		if err != nil {
			t.Fatal(err)
		}
		if v.Sketched != len(ps) || v.Fetched != 0 {
			t.Fatalf("verification %+v", v)
		}
		if err := coord.CheckShare(1, share); err != nil {
			t.Fatal(err)
		}
		if again, _, err := p.Answer(m, active, agg, fetch); err != nil || !bytes.Equal(again, share) {
			t.Fatalf("a retried task got another answer (%v): a share is given once and resent as is", err)
		}
		if _, _, err := p.Answer(m, []uint64{1, 2}, agg, fetch); !errors.Is(err, ErrAlreadyShared) {
			t.Fatalf("second answer for the round, another active set: %v", err)
		}
		answers = append(answers, share)
	}
	sum, weight, err := coord.Combine(1, agg, answers, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Two flooded shares (σ = 2^30 per coefficient, at scale 2^58) leave
	// noise of about 5e-7 rms in each decoded slot (measured over 40 runs:
	// at most 1.6e-6, so the former bound of 1e-6 failed one run in 25);
	// 1e-5 is twenty times the rms.
	if math.Abs(weight-30) > 1e-5 {
		t.Fatalf("total weight %v, want 30", weight)
	}
	for j := range want {
		if math.Abs(sum[j]-want[j]) > 1e-5*(1+math.Abs(want[j])) {
			t.Fatalf("sum %v, want %v", sum, want)
		}
	}
	// A hospital combining the same signed shares gets the same bits.
	sum2, weight2, err := ps[1].Setup.Combine(1, agg, answers, 2)
	if err != nil || !slices.Equal(sum, sum2) || weight != weight2 {
		t.Fatalf("hospital's combination differs: %v", err)
	}
	if _, _, err := coord.Combine(1, agg, answers[:1], 2); !errors.Is(err, ErrThreshold) {
		t.Fatalf("one share for t=2: %v", err)
	}

	// Saved and reloaded, a participant carries on.
	dir := t.TempDir()
	if err := ps[1].Save(dir); err != nil {
		t.Fatal(err)
	}
	again, err := LoadParticipant(dir, "b")
	if err != nil || again.Setup.KeyHash() != key || again.Point() != 2 {
		t.Fatalf("reload: %v", err)
	}
	if _, err := LoadParticipant(dir, "a"); err == nil {
		t.Fatal("b's secret share loaded as a's")
	}
}

// TestKeySetupRefusesWhatTheRelayChanged: a relay cannot replace this
// site's own key share, send one twice, or invent participants.
func TestKeySetupRefusesWhatTheRelayChanged(t *testing.T) {
	points := map[string]uint64{"a": 1, "b": 2}
	ka, _, err := StartKeySetup("heart", Default.ID, seed, 2, 3, points, "a")
	if err != nil {
		t.Fatal(err)
	}
	_, sb, _ := StartKeySetup("heart", Default.ID, seed, 2, 3, points, "b")
	for name, f := range map[string]func() error{
		"own share replaced": func() error { _, err := ka.AddPeer("a", sb.PkShare, sb.X25519); return err },
		"unknown site":       func() error { _, err := ka.AddPeer("mallory", sb.PkShare, sb.X25519); return err },
		"garbage share":      func() error { _, err := ka.AddPeer("b", []byte("junk"), sb.X25519); return err },
	} {
		if err := f(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ka.AddPeer("b", sb.PkShare, sb.X25519); err != nil {
		t.Fatal(err)
	}
	if _, err := ka.AddPeer("b", sb.PkShare, sb.X25519); err == nil {
		t.Error("second share of b accepted")
	}
	if _, _, err := StartKeySetup("heart", Default.ID, seed, 3, 3, points, "a"); err == nil {
		t.Error("t larger than the participants accepted")
	}
	if _, _, err := StartKeySetup("heart", Default.ID, seed, 2, 3, points, "c"); err == nil {
		t.Error("a non-participant started key setup")
	}
}

func FuzzUnmarshalSetup(f *testing.F) {
	points := map[string]uint64{"a": 1}
	_, share, err := StartKeySetup("heart", Default.ID, seed, 2, 3, map[string]uint64{"a": 1, "b": 2}, "a")
	if err != nil {
		f.Fatal(err)
	}
	s, err := NewSetup("heart", Default.ID, seed, points, []string{"a"}, [][]byte{share.PkShare}, 3)
	if err != nil {
		f.Fatal(err)
	}
	b, _ := s.MarshalBinary()
	f.Add(b)
	f.Add(b[:40])
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := UnmarshalSetup(b)
		if err != nil {
			return
		}
		if again, _ := s.MarshalBinary(); !bytes.Equal(again, b) {
			t.Fatal("a decoded setup does not re-encode to the same bytes")
		}
	})
}

// TestKeySetupRefusesAMinorityThreshold: a hospital does not join a key
// setup whose t is not a majority of the key holders, whatever the
// coordinator announced: two disjoint sets of t could then each decrypt a
// different sum of one round.
func TestKeySetupRefusesAMinorityThreshold(t *testing.T) {
	points := map[string]uint64{"a": 1, "b": 2, "c": 3, "d": 4}
	if _, _, err := StartKeySetup("heart", Default.ID, seed, 2, 5, points, "a"); !errors.Is(err, ErrInput) || !strings.Contains(err.Error(), "not a majority") {
		t.Fatalf("t = 2 of 4: %v", err)
	}
	if _, _, err := StartKeySetup("heart", Default.ID, seed, 3, 5, points, "a"); err != nil {
		t.Fatalf("t = 3 of 4: %v", err)
	}
}
