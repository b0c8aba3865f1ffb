package client

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
	pb "github.com/fedledger/fedledger/proto"
)

// verifyContribution checks an update the site submitted: its header names
// the parent, the site's training samples and data manifest, and its
// signature verifies, with the site's certificate key, over
// audit.Contribution.Message(study, round, parent) of the payload's hash,
// and over nothing else.
func verifyContribution(t *testing.T, c *Client, u submitted, round uint64, parent []byte) {
	t.Helper()
	h := u.header
	if h == nil {
		t.Fatal("update without its header")
	}
	if u.study != studyID || u.round != round || string(h.ParentSha256) != string(parent) {
		t.Fatalf("update for %q round %d parent %x, want %q round %d parent %x", u.study, u.round, h.ParentSha256, studyID, round, parent)
	}
	if h.NumSamples != uint64(c.train.Len()) || [32]byte(h.DataManifestSha256) != c.manifest {
		t.Fatalf("update declares %d samples and manifest %x, the site has %d and %x", h.NumSamples, h.DataManifestSha256, c.train.Len(), c.manifest)
	}
	stmt := audit.Contribution{Site: c.id, UpdateHash: sha256.Sum256(u.payload), Samples: h.NumSamples, DataManifest: audit.Hash(h.DataManifestSha256)}
	pub := leafOf(c.cfg.TLS).PublicKey.(ed25519.PublicKey)
	if !ed25519.Verify(pub, stmt.Message(studyID, round, audit.Hash(parent)), h.Signature) {
		t.Fatal("the update's signature does not verify over its contribution statement")
	}
	other := audit.Hash(parent)
	other[0] ^= 1
	if ed25519.Verify(pub, stmt.Message(studyID, round, other), h.Signature) || ed25519.Verify(pub, stmt.Message(studyID, round+1, audit.Hash(parent)), h.Signature) {
		t.Fatal("the update's signature verifies over another parent or round")
	}
}

// TestTrain: a train task is done only for the round the audit log has
// open, from the log's latest output, within the study's rounds, on a
// parent that hashes to the announced one; the submitted update is an
// encrypted contribution signed over (study, round, parent).
func TestTrain(t *testing.T) {
	f := secureFixture(t)
	task := func() *pb.TrainTask {
		return &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	}
	// Models the coordinator could offer instead of the log's latest output.
	otherParams, _ := model.InitParams(specFrom(f.spec.Model), 2)
	otherModel, _ := model.Encode(specFrom(f.spec.Model), otherParams)
	mlp := model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{4}}
	mlpParams, _ := model.InitParams(mlp, 1)
	mlpModel, _ := model.Encode(mlp, mlpParams)

	refusals := []struct {
		name string
		edit func(e *env, t *pb.TrainTask)
		want string
	}{
		{"round already committed on the log", func(e *env, t *pb.TrainTask) { e.log.at(f.initial.Sha256, 1) },
			`round 1 is not open on the audit log: its last committed round of "heart-study" is 1`},
		{"round ahead of the log", func(e *env, t *pb.TrainTask) { t.Round = 2 },
			`round 2 is not open on the audit log: its last committed round of "heart-study" is 0`},
		{"parent is not the log's latest output", func(e *env, t *pb.TrainTask) {
			o := e.coord.put(otherModel)
			t.ParentSha256, t.ParentSize = o.Sha256, o.Size
		}, "is not the study's latest committed output on the audit log"},
		{"round beyond the study's rounds", func(e *env, t *pb.TrainTask) {
			e.log.at(f.initial.Sha256, 3)
			t.Round = 4
		}, "round 4 is beyond the study's 3 rounds"},
		{"fetched parent does not hash to the announced one", func(e *env, t *pb.TrainTask) { e.coord.serveWrong(f.initial.Sha256, otherModel) },
			"the coordinator sent bytes hashing to"},
		{"parent of another architecture", func(e *env, t *pb.TrainTask) {
			o := e.coord.put(mlpModel)
			e.log.at(o.Sha256, 0)
			t.ParentSha256, t.ParentSize = o.Sha256, o.Size
		}, "the study says logreg"},
		{"parent larger than the site's limit", func(e *env, t *pb.TrainTask) { e.c.cfg.MaxModelBytes = int64(f.initial.Size) - 1 },
			"exceeds the limit"},
		{"truncated parent hash", func(e *env, t *pb.TrainTask) { t.ParentSha256 = f.initial.Sha256[:16] },
			"is not the study's latest committed output on the audit log"},
		{"task for another study", func(e *env, t *pb.TrainTask) { t.StudyId = "other-study" }, `train task for "other-study"`},
		{"audit log unreachable", func(e *env, t *pb.TrainTask) { e.log.err = errors.New("no audit node answers") },
			"cannot confirm the round on the audit log: no audit node answers"},
	}
	for _, tc := range refusals {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			e := f.clone(t, "site-a")
			tk := task()
			tc.edit(e, tk)
			wantErr(t, e.c.trainRound(t.Context(), e.coord, tk), tc.want)
			if len(e.coord.updates) != 0 {
				t.Fatal("an update was submitted")
			}
		})
	}

	t.Run("upload rejected", func(t *testing.T) {
		e := f.clone(t, "site-a")
		e.coord.reject = errors.New("deadline passed")
		wantErr(t, e.c.trainRound(t.Context(), e.coord, task()), "update for round 1 rejected: deadline passed")
	})

	t.Run("accepted", func(t *testing.T) {
		e := f.clone(t, "site-b")
		if err := e.c.trainRound(t.Context(), e.coord, task()); err != nil {
			t.Fatal(err)
		}
		if len(e.coord.updates) != 1 {
			t.Fatalf("%d updates submitted", len(e.coord.updates))
		}
		u := e.coord.updates[0]
		verifyContribution(t, e.c, u, 1, f.initial.Sha256)
		if u.header.Encoding != secure.EncodingContribution {
			t.Fatalf("encoding %q in a secure study", u.header.Encoding)
		}
		if err := f.setup.CheckContribution(1, u.payload); err != nil {
			t.Fatalf("the update is not a contribution under the study's key: %v", err)
		}
		// Encryption is randomised: the same training gives another
		// ciphertext than the fixture's.
		if string(u.payload) == string(f.updates["site-b"].payload) {
			t.Fatal("two encryptions of the update are identical")
		}
	})

	t.Run("the last round", func(t *testing.T) {
		e := f.clone(t, "site-c")
		e.log.at(f.initial.Sha256, 2) // the log's latest output may be any model: rounds 1-2 are the log's business
		tk := task()
		tk.Round = 3
		if err := e.c.trainRound(t.Context(), e.coord, tk); err != nil {
			t.Fatal(err)
		}
		verifyContribution(t, e.c, e.coord.updates[0], 3, f.initial.Sha256)
	})
}

// TestTrainPlaintext: in a plaintext study the update is the plaintext
// weighted delta n·(w_local − w_parent), signed the same way.
func TestTrainPlaintext(t *testing.T) {
	p := newPlainRig(t)
	e := p.env(t, "site-a")
	if err := e.c.trainRound(t.Context(), e.coord, p.trainTask()); err != nil {
		t.Fatal(err)
	}
	u := e.coord.updates[0]
	verifyContribution(t, e.c, u, 1, p.initial.Sha256)
	if u.header.Encoding != aggregation.EncodingWeightedDelta {
		t.Fatalf("encoding %q", u.header.Encoding)
	}
	d, err := aggregation.DecodeWeightedDelta(u.payload, specFrom(p.spec.Model).NumParams())
	if err != nil {
		t.Fatal(err)
	}
	nonzero := 0
	for _, v := range d {
		if v != 0 {
			nonzero++
		}
	}
	if nonzero == 0 {
		t.Fatal("training did not move the model")
	}
}
