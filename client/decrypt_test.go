package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"math"
	"testing"

	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	pb "github.com/fedledger/fedledger/proto"
)

// manifestDigest is the digest a decryptor signs for a task's
// contributions.
func manifestDigest(study string, round uint64, parent []byte, cs []*pb.Contribution) audit.Hash {
	m, _, err := manifestFrom(study, round, parent, cs)
	if err != nil {
		panic(err)
	}
	return m.Digest()
}

// signContribution signs c's contribution statement for round 1 of the
// fixture as signer.
func (f *fixture) signContribution(signer string, c *pb.Contribution) []byte {
	stmt := audit.Contribution{Site: c.ClientId, UpdateHash: audit.Hash(c.Sha256), Samples: c.Samples, DataManifest: audit.Hash(c.DataManifestSha256)}
	return f.pki.SignAs(signer, stmt.Message(studyID, 1, audit.Hash(f.initial.Sha256)))
}

// checkShare checks the decryption share the site submitted for task: it
// is signed, with the site's certificate key, over
// audit.DecryptionShare.Message with the task's aggregate and manifest
// digest, and it decrypts the aggregate with the fixture's share of
// site-a to the fixture's sum.
func checkShare(t *testing.T, e *env, f *fixture, task *pb.DecryptTask) {
	t.Helper()
	if len(e.coord.shares) != 1 {
		t.Fatalf("%d shares submitted, want 1", len(e.coord.shares))
	}
	u := e.coord.shares[0]
	if u.share == nil || string(u.share.AggregateSha256) != string(task.AggregateSha256) || u.round != task.Round {
		t.Fatalf("share header %v for round %d", u.share, u.round)
	}
	ds := audit.DecryptionShare{Site: e.site, ShareHash: sha256.Sum256(u.payload)}
	digest := manifestDigest(task.StudyId, task.Round, task.ParentSha256, task.Contributions)
	pub := e.pki.Hospitals[e.site].Cert.PublicKey.(ed25519.PublicKey)
	if !ed25519.Verify(pub, ds.Message(task.StudyId, task.Round, audit.Hash(task.AggregateSha256), digest), u.share.Signature) {
		t.Fatal("the share's signature does not verify over its statement with the manifest digest")
	}
	if err := f.setup.CheckShare(task.Round, u.payload); err != nil {
		t.Fatal(err)
	}
	siteA := f.objects[[32]byte(f.shares[0].Payload.Sha256)]
	f.wantDecrypts(t, f.objects[[32]byte(task.AggregateSha256)], siteA, u.payload)
}

// wantDecrypts checks the decryption shares decrypt a round-1 aggregate to
// the fixture's sum and total weight (up to CKKS noise): the round's
// updates are seeded, the same whichever encryption of them is summed.
func (f *fixture) wantDecrypts(t *testing.T, aggregate []byte, shares ...[]byte) {
	t.Helper()
	sum, weight, err := f.setup.Combine(1, aggregate, shares, int(f.spec.Threshold))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(weight-f.weight) > 1e-3 {
		t.Fatalf("the shares decrypt a total weight of %v, want %v", weight, f.weight)
	}
	for i := range sum {
		if math.Abs(sum[i]-f.sum[i]) > 1e-3 {
			t.Fatalf("the shares decrypt value %d to %v, want %v", i, sum[i], f.sum[i])
		}
	}
}

// TestDecrypt: a decryption share is given only for the round the audit
// log has open, from its latest output, for a manifest of at least K
// contributions validly signed over that round and parent in site order,
// whose re-sum is the aggregate; once per round, also across a restart.
func TestDecrypt(t *testing.T) {
	f := secureFixture(t)
	// One hospital's ciphertext presented as the aggregate: a valid
	// aggregate payload, but of site-a's contribution alone.
	single, err := f.setup.Aggregate(1, 1, func(int) ([]byte, error) { return f.updates["site-a"].payload, nil })
	if err != nil {
		t.Fatal(err)
	}
	otherParent := sha256.Sum256([]byte("another parent"))

	// The refusals run on one site in turn: none of them may use up its
	// one share of the round, so a correct task succeeds at the end.
	e := f.clone(t, "site-b")
	refusals := []struct {
		name string
		edit func(*pb.DecryptTask)
		is   error
		want string
	}{
		{"one hospital's ciphertext as the aggregate of a full signed manifest", func(d *pb.DecryptTask) {
			o := e.coord.put(single)
			d.AggregateSha256, d.AggregateSize = o.Sha256, o.Size
		}, secure.ErrAggregate, "the contributions re-added differ from the aggregate"},
		{"fewer than K contributions", func(d *pb.DecryptTask) {
			o := e.coord.put(single)
			d.AggregateSha256, d.AggregateSize = o.Sha256, o.Size
			d.Contributions = d.Contributions[:1]
		}, secure.ErrManifest, "1 distinct contributions, at least 2 required"},
		{"a contribution listed twice", func(d *pb.DecryptTask) {
			d.Contributions = append(d.Contributions[:2], d.Contributions[1])
		}, secure.ErrManifest, `"site-b" listed twice`},
		{"contributions out of site order", func(d *pb.DecryptTask) {
			d.Contributions[0], d.Contributions[1] = d.Contributions[1], d.Contributions[0]
		}, secure.ErrManifest, "not in site order"},
		{"contributions signed over another parent", func(d *pb.DecryptTask) {
			e.log.at(otherParent[:], 0)
			d.ParentSha256 = otherParent[:]
		}, secure.ErrManifest, `contribution of "site-a" is not validly signed`},
		{"a contribution signed by another site", func(d *pb.DecryptTask) {
			d.Contributions[2].Signature = f.signContribution("site-a", d.Contributions[2])
		}, secure.ErrManifest, `contribution of "site-c" is not validly signed`},
		{"a contribution whose samples differ from what its site signed", func(d *pb.DecryptTask) {
			d.Contributions[0].Samples++
		}, secure.ErrManifest, `contribution of "site-a" is not validly signed`},
		{"a contribution of a site that holds no key", func(d *pb.DecryptTask) {
			c := &pb.Contribution{ClientId: "site-z", Sha256: d.Contributions[0].Sha256, Size: d.Contributions[0].Size, Samples: 5,
				DataManifestSha256: d.Contributions[0].DataManifestSha256}
			c.Signature = f.signContribution("site-a", c)
			d.Contributions = append(d.Contributions, c)
		}, secure.ErrManifest, `"site-z" is not a key holder of this study`},
		{"a contribution served with other bytes", func(d *pb.DecryptTask) {
			e.coord.serveWrong(f.contributions[2].Sha256, f.updates["site-a"].payload)
		}, nil, "the coordinator sent bytes hashing to"},
		{"the aggregate served with other bytes", func(d *pb.DecryptTask) {
			e.coord.serveWrong(f.aggregate.Sha256, single)
		}, nil, "aggregate: object"},
		{"round already closed on the log", func(d *pb.DecryptTask) { e.log.at(f.output.Sha256, 1) },
			nil, `round 1 is not open on the audit log: its last committed round of "heart-study" is 1`},
		{"parent is not the log's latest output", func(d *pb.DecryptTask) { e.log.at(otherParent[:], 0) },
			nil, "is not the study's latest committed output on the audit log"},
		{"audit log unreachable", func(d *pb.DecryptTask) { e.log.err = errors.New("no audit node answers") },
			nil, "cannot confirm the round on the audit log"},
		{"a key setup the audit log does not hold", func(d *pb.DecryptTask) { e.log.key = nil },
			nil, "the audit log has no key setup for study"},
		{"another collective key on the audit log", func(d *pb.DecryptTask) { e.log.key = &otherParent },
			nil, "is not the one the audit log's key setup names"},
		{"task for another study", func(d *pb.DecryptTask) { d.StudyId = "other-study" }, nil, `decryption task for "other-study"`},
		{"malformed aggregate hash", func(d *pb.DecryptTask) { d.AggregateSha256 = d.AggregateSha256[:31] },
			nil, "without 32-byte aggregate and parent hashes"},
		{"malformed contribution hash", func(d *pb.DecryptTask) { d.Contributions[1].Sha256 = nil }, nil, `contribution of "site-b" has a malformed hash`},
	}
	key := f.setup.KeyHash()
	for _, tc := range refusals {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			e.coord.wrong = map[[32]byte][]byte{}
			e.log.err, e.log.key = nil, &key
			e.log.at(f.initial.Sha256, 0)
			task := f.decryptTask()
			tc.edit(task)
			err := e.c.decryptRound(t.Context(), e.coord, task)
			wantErr(t, err, tc.want)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("error %v is not %v", err, tc.is)
			}
			if len(e.coord.shares) != 0 {
				t.Fatal("a share was submitted")
			}
		})
	}
	t.Run("this site's own minimum of contributions", func(t *testing.T) {
		e := f.clone(t, "site-b")
		e.edit = func(c *Config) { c.MinContributors = 3 }
		e.c = e.restart(t)
		pair, err := f.setup.Aggregate(1, 2, func(i int) ([]byte, error) { return f.updates[sites[i]].payload, nil })
		if err != nil {
			t.Fatal(err)
		}
		task := f.decryptTask()
		o := e.coord.put(pair)
		task.AggregateSha256, task.AggregateSize, task.Contributions = o.Sha256, o.Size, task.Contributions[:2]
		err = e.c.decryptRound(t.Context(), e.coord, task)
		if !errors.Is(err, secure.ErrManifest) {
			t.Fatalf("err = %v, want %v", err, secure.ErrManifest)
		}
		wantErr(t, err, "2 distinct contributions, at least 3 required")
	})
	t.Run("no audit log", func(t *testing.T) {
		e := f.clone(t, "site-b")
		e.c.audit = nil
		wantErr(t, e.c.decryptRound(t.Context(), e.coord, f.decryptTask()), "only for rounds it can check on the audit log")
	})

	t.Run("given for a correct task after the refusals", func(t *testing.T) {
		e.coord.wrong = map[[32]byte][]byte{}
		e.log.err, e.log.key = nil, &key
		e.log.at(f.initial.Sha256, 0)
		task := f.decryptTask()
		if err := e.c.decryptRound(t.Context(), e.coord, task); err != nil {
			t.Fatal(err)
		}
		checkShare(t, e, f, task)

		// Once per round: the same task again (a retry) gets the same
		// share, byte for byte, never a second one; another aggregate is
		// refused, by this process or after a restart.
		first := e.coord.shares[0].payload
		if err := e.c.decryptRound(t.Context(), e.coord, f.decryptTask()); err != nil {
			t.Fatalf("retried task: %v", err)
		}
		if n := len(e.coord.shares); n != 2 || !bytes.Equal(e.coord.shares[1].payload, first) {
			t.Fatalf("a retried task got another share (%d submitted)", n)
		}
		again := f.decryptTask()
		o := e.coord.put(single)
		again.AggregateSha256, again.AggregateSize = o.Sha256, o.Size
		if err := e.c.decryptRound(t.Context(), e.coord, again); !errors.Is(err, secure.ErrAlreadyShared) {
			t.Fatalf("share of another aggregate of round 1: %v", err)
		}
		restarted := e.restart(t)
		if err := restarted.decryptRound(t.Context(), e.coord, again); !errors.Is(err, secure.ErrAlreadyShared) {
			t.Fatalf("share of another aggregate of round 1 after a restart: %v", err)
		}
		if err := restarted.decryptRound(t.Context(), e.coord, f.decryptTask()); err != nil {
			t.Fatalf("retried task after a restart: %v", err)
		}
		if n := len(e.coord.shares); n != 3 || !bytes.Equal(e.coord.shares[2].payload, first) {
			t.Fatalf("after a restart, a retried task got another share (%d submitted)", n)
		}
	})

	t.Run("share rejected by the coordinator", func(t *testing.T) {
		e := f.clone(t, "site-a")
		e.coord.reject = errors.New("deadline passed")
		wantErr(t, e.c.decryptRound(t.Context(), e.coord, f.decryptTask()), "decryption share for round 1 rejected: deadline passed")
	})
}

// sketches are every round-1 contributor's signed sketch of its
// contribution against the task's aggregate, as the sites would send them.
func (f *fixture) sketches(t *testing.T, task *pb.DecryptTask) []*pb.ContributionSketch {
	t.Helper()
	m, _, err := manifestFrom(task.StudyId, task.Round, task.ParentSha256, task.Contributions)
	if err != nil {
		t.Fatal(err)
	}
	m.AggregateHash = [32]byte(task.AggregateSha256)
	var out []*pb.ContributionSketch
	for _, site := range sites {
		v, err := secure.SketchPayload(f.updates[site].payload, secure.Expect{Kind: secure.KindContribution, Preset: secure.Default, Study: studyID,
			Round: 1, Count: uint32(f.setup.Count())}, secure.SketchChallenge(m))
		if err != nil {
			t.Fatal(err)
		}
		s := audit.Sketch{Site: site, Values: v}
		out = append(out, &pb.ContributionSketch{StudyId: studyID, Round: 1, ClientId: site, AggregateSha256: task.AggregateSha256, Values: v,
			Signature: f.pki.SignAs(site, s.Message(studyID, 1, m.AggregateHash, m.Digest()))})
	}
	return out
}

// TestDecryptWithSketches: with every contributor's signed sketch in the
// task, a decryptor checks the aggregate without downloading any
// contribution, and its share decrypts; an aggregate altered in one
// residue of one chunk, sketched honestly by every contributor, is
// refused, and so is a sketch the coordinator signed itself.
func TestDecryptWithSketches(t *testing.T) {
	f := secureFixture(t)
	e := f.clone(t, "site-b")
	task := f.decryptTask()
	task.Sketches = f.sketches(t, task)
	if err := e.c.decryptRound(t.Context(), e.coord, task); err != nil {
		t.Fatal(err)
	}
	for _, c := range f.contributions {
		if n := e.coord.fetched(c.Sha256); n != 0 {
			t.Errorf("%s's contribution downloaded %d times", c.ClientId, n)
		}
	}
	checkShare(t, e, f, task)
	if got := counter(t, e.c, "fedledger_client_aggregate_check_bytes_total"); got != 3*32 {
		t.Errorf("sketch bytes %v, want 3 sketches of 32", got)
	}

	altered := bytes.Clone(f.objects[[32]byte(f.aggregate.Sha256)])
	altered[len(altered)-8] ^= 1 // the last chunk's last residue, off by one
	e = f.clone(t, "site-b")
	bad := f.decryptTask()
	o := e.coord.put(altered)
	bad.AggregateSha256, bad.AggregateSize = o.Sha256, o.Size
	bad.Sketches = f.sketches(t, bad)
	err := e.c.decryptRound(t.Context(), e.coord, bad)
	if !errors.Is(err, secure.ErrAggregate) || len(e.coord.shares) != 0 {
		t.Fatalf("aggregate altered in one residue: %v (%d shares)", err, len(e.coord.shares))
	}

	forged := f.decryptTask()
	forged.Sketches = f.sketches(t, forged)
	forged.Sketches[2].Signature = f.pki.SignAs("site-a", []byte("anything"))
	wantErr(t, e.c.decryptRound(t.Context(), e.coord, forged), `sketch of "site-c" is not validly signed`)
}

// TestSketchRound: a site sketches the contribution it kept, signed with
// its certificate key over the sketch statement; it refuses a manifest
// that lists another contribution as its own, or does not list it.
func TestSketchRound(t *testing.T) {
	f := secureFixture(t)
	e := f.clone(t, "site-a")
	train := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	if err := e.c.trainRound(t.Context(), e.coord, train); err != nil {
		t.Fatal(err)
	}
	mine := e.coord.updates[0]
	h := sha256.Sum256(mine.payload)
	cs := cloneContributions(f.contributions)
	cs[0] = &pb.Contribution{ClientId: "site-a", Sha256: h[:], Size: uint64(len(mine.payload)), Signature: mine.header.Signature,
		Samples: mine.header.NumSamples, DataManifestSha256: mine.header.DataManifestSha256}
	agg := sha256.Sum256([]byte("the aggregate"))
	task := &pb.SketchTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, Contributions: cs, AggregateSha256: agg[:]}
	msg, err := e.c.sketchRound(task)
	if err != nil {
		t.Fatal(err)
	}
	got := msg.GetSketch()
	m, _, _ := manifestFrom(studyID, 1, f.initial.Sha256, cs)
	m.AggregateHash = agg
	want, err := secure.SketchPayload(mine.payload, secure.Expect{Kind: secure.KindContribution, Preset: secure.Default, Study: studyID, Round: 1,
		Count: uint32(f.setup.Count())}, secure.SketchChallenge(m))
	if err != nil || !bytes.Equal(got.Values, want) {
		t.Fatalf("the sketch is not of the kept contribution (%v)", err)
	}
	pub := e.pki.Hospitals["site-a"].Cert.PublicKey.(ed25519.PublicKey)
	if !ed25519.Verify(pub, audit.Sketch{Site: "site-a", Values: got.Values}.Message(studyID, 1, agg, m.Digest()), got.Signature) {
		t.Fatal("the sketch's signature does not verify over its statement")
	}
	for name, edit := range map[string]func(*pb.SketchTask){
		"lists another contribution as site-a's": func(s *pb.SketchTask) { s.Contributions = cloneContributions(f.contributions) },
		"does not list site-a":                   func(s *pb.SketchTask) { s.Contributions = s.Contributions[1:] },
		"another study":                          func(s *pb.SketchTask) { s.StudyId = "other" },
		"malformed aggregate hash":               func(s *pb.SketchTask) { s.AggregateSha256 = s.AggregateSha256[:8] },
	} {
		bad := &pb.SketchTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, Contributions: cloneContributions(cs), AggregateSha256: agg[:]}
		edit(bad)
		if _, err := e.c.sketchRound(bad); err == nil {
			t.Errorf("%s: sketched", name)
		}
	}
}
