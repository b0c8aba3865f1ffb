package client

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/fedledger/fedledger/internal/model"
	pb "github.com/fedledger/fedledger/proto"
)

// publish is the coordinator's combine (coordinator/work.go) for round 1:
// decrypt the aggregate with the signed shares (plaintext: decode it), run
// the server optimiser from the initial model, store the new model and
// optimiser state, and return the countersigning task.
func publish(t *testing.T, coord *fakeCoord, spec *pb.StudySpec, f *fixture, parent *pb.Object, contributions []*pb.Contribution,
	aggregate *pb.Object, shares []*pb.SignedShare) *pb.CountersignTask {
	t.Helper()
	agg := coord.objects[[32]byte(aggregate.Sha256)]
	var sum []float64
	var weight float64
	var err error
	if f != nil {
		payloads := make([][]byte, len(shares))
		for i, s := range shares {
			payloads[i] = coord.objects[[32]byte(s.Payload.Sha256)]
		}
		sum, weight, err = f.setup.Combine(1, agg, payloads, int(spec.Threshold))
	} else {
		sum, weight, err = aggregation.DecodeSum(agg, specFrom(spec.Model).NumParams())
	}
	if err != nil {
		t.Fatal(err)
	}
	mspec, params, err := model.Decode(coord.objects[[32]byte(parent.Sha256)])
	if err != nil {
		t.Fatal(err)
	}
	next, after, err := aggregation.NextModel(strategyOf(spec), params, nil, sum, weight)
	if err != nil {
		t.Fatal(err)
	}
	out, err := model.Encode(mspec, next)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.CountersignTask{StudyId: spec.StudyId, Round: 1, Parent: parent, Contributions: contributions, Aggregate: aggregate,
		Shares: shares, Output: coord.put(out), OptimizerAfter: coord.put(after)}
}

// checkCountersignature checks the site's countersignature of task: for
// its round and model, and signed with the site's certificate key over
// audit.CountersignMessage of the task's outcome.
func checkCountersignature(t *testing.T, e *env, task *pb.CountersignTask, cs *pb.Countersignature) {
	t.Helper()
	if cs.StudyId != task.StudyId || cs.Round != task.Round || string(cs.OutputSha256) != string(task.Output.Sha256) {
		t.Fatalf("countersignature for %q round %d model %x, task %q round %d model %x", cs.StudyId, cs.Round, cs.OutputSha256,
			task.StudyId, task.Round, task.Output.Sha256)
	}
	o := audit.Outcome{Study: task.StudyId, Round: task.Round, Parent: audit.Hash(task.Parent.Sha256), Aggregate: audit.Hash(task.Aggregate.Sha256),
		Output: audit.Hash(task.Output.Sha256), OptimizerAfter: audit.Hash(task.OptimizerAfter.Sha256)}
	if task.OptimizerBefore != nil {
		o.OptimizerBefore = audit.Hash(task.OptimizerBefore.Sha256)
	}
	pub := e.pki.Hospitals[e.site].Cert.PublicKey.(ed25519.PublicKey)
	if !ed25519.Verify(pub, audit.CountersignMessage(e.site, o), cs.Signature) {
		t.Fatal("the countersignature does not verify over the round's outcome")
	}
	o.OptimizerAfter[0] ^= 1
	if ed25519.Verify(pub, audit.CountersignMessage(e.site, o), cs.Signature) {
		t.Fatal("the countersignature verifies over another outcome")
	}
}

// editModel stores the model of obj with its parameters edited.
func editModel(t *testing.T, coord *fakeCoord, obj *pb.Object, edit func([]float64)) *pb.Object {
	t.Helper()
	spec, params, err := model.Decode(coord.objects[[32]byte(obj.Sha256)])
	if err != nil {
		t.Fatal(err)
	}
	edit(params)
	b, err := model.Encode(spec, params)
	if err != nil {
		t.Fatal(err)
	}
	return coord.put(b)
}

// editState stores the optimiser state of obj with its fields edited.
func editState(t *testing.T, coord *fakeCoord, obj *pb.Object, cfg *aggregation.Config, edit func(o *aggregation.ServerOptimizer)) *pb.Object {
	t.Helper()
	o, err := aggregation.UnmarshalServerOptimizer(coord.objects[[32]byte(obj.Sha256)])
	if err != nil {
		t.Fatal(err)
	}
	if cfg != nil {
		other, err := aggregation.NewServerOptimizer(*cfg)
		if err != nil {
			t.Fatal(err)
		}
		other.Steps, other.M, other.V = o.Steps, o.M, o.V
		o = other
	}
	if edit != nil {
		edit(o)
	}
	b, err := o.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return coord.put(b)
}

// resign has each share of task signed by its holder over the manifest
// of contributions: what decryptors who accepted that manifest sign.
func resign(f *fixture, task *pb.CountersignTask, contributions []*pb.Contribution) {
	digest := manifestDigest(studyID, task.Round, task.Parent.Sha256, contributions)
	for _, s := range task.Shares {
		ds := audit.DecryptionShare{Site: s.ClientId, ShareHash: audit.Hash(s.Payload.Sha256)}
		s.Signature = f.pki.SignAs(s.ClientId, ds.Message(studyID, task.Round, audit.Hash(task.Aggregate.Sha256), digest))
	}
}

// TestCountersign: a site countersigns a round only if the model and
// optimiser state the coordinator published are what it computes itself
// from the parent, the optimiser state before, the aggregate and t shares
// signed by their key holders over this aggregate and manifest; only for
// the round the audit log has open; and never two outcomes of one round.
func TestCountersign(t *testing.T) {
	f := secureFixture(t)
	yogi, _ := aggregation.DefaultConfig(aggregation.FedYogi)
	single, err := f.setup.Aggregate(1, 1, func(int) ([]byte, error) { return f.updates["site-a"].payload, nil })
	if err != nil {
		t.Fatal(err)
	}

	t.Run("countersigned", func(t *testing.T) {
		e := f.clone(t, "site-c")
		task := f.countersignTask()
		cs, err := e.c.countersign(t.Context(), e.coord, task)
		if err != nil {
			t.Fatal(err)
		}
		checkCountersignature(t, e, task, cs)
	})

	t.Run("a difference in the last bit is not a different model", func(t *testing.T) {
		e := f.clone(t, "site-c")
		task := f.countersignTask()
		task.Output = editModel(t, e.coord, task.Output, func(p []float64) { p[3] = math.Nextafter(p[3], math.Inf(1)) })
		cs, err := e.c.countersign(t.Context(), e.coord, task)
		if err != nil {
			t.Fatal(err)
		}
		checkCountersignature(t, e, task, cs)
	})

	refusals := []struct {
		name string
		edit func(t *testing.T, e *env, task *pb.CountersignTask)
		// outcome: the refusal says the coordinator's outcome is wrong
		// (ErrOutcome).
		outcome bool
		want    string
	}{
		{"one parameter of the model differs", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.Output = editModel(t, e.coord, task.Output, func(p []float64) { p[3] += 1e-6 })
		}, true, "parameter 3 of the new model is"},
		{"the model is the parent", func(t *testing.T, e *env, task *pb.CountersignTask) { task.Output = f.initial }, true, "parameter 0 of the new model is"},
		{"the model has another architecture", func(t *testing.T, e *env, task *pb.CountersignTask) {
			mlp := model.Spec{Kind: model.KindMLP, Inputs: 13, Hidden: []int{1}}
			p, _ := model.InitParams(mlp, 1)
			b, _ := model.Encode(mlp, p)
			task.Output = e.coord.put(b)
		}, true, "the new model is mlp"},
		{"a moment of the optimiser state after differs", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.OptimizerAfter = editState(t, e.coord, task.OptimizerAfter, nil, func(o *aggregation.ServerOptimizer) { o.M[5] += 1e-6 })
		}, true, "moment 5 of the optimiser state differs"},
		{"the optimiser state after has another step count", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.OptimizerAfter = editState(t, e.coord, task.OptimizerAfter, nil, func(o *aggregation.ServerOptimizer) { o.Steps++ })
		}, true, "not this site's (config, step or size)"},
		{"the optimiser state after is for another strategy", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.OptimizerAfter = editState(t, e.coord, task.OptimizerAfter, &yogi, nil)
		}, true, "not this site's (config, step or size)"},
		{"the optimiser state after is not a state", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.OptimizerAfter = e.coord.put([]byte("FLOPT\x00 not a state"))
		}, true, "optimiser state"},
		{"the optimiser state before is for another strategy", func(t *testing.T, e *env, task *pb.CountersignTask) {
			o, _ := aggregation.NewServerOptimizer(yogi)
			b, _ := o.MarshalBinary()
			task.OptimizerBefore = e.coord.put(b)
		}, true, "optimiser state is for"},
		{"the outcome ignores the optimiser state before", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.OptimizerBefore = f.after // a FedAdam state with moments, which the published model was not computed from
		}, true, "of the new model is"},
		{"a share signed by another site than its holder", func(t *testing.T, e *env, task *pb.CountersignTask) {
			s := task.Shares[1]
			ds := audit.DecryptionShare{Site: s.ClientId, ShareHash: audit.Hash(s.Payload.Sha256)}
			digest := manifestDigest(studyID, 1, f.initial.Sha256, task.Contributions)
			s.Signature = f.pki.SignAs("site-c", ds.Message(studyID, 1, audit.Hash(task.Aggregate.Sha256), digest))
		}, true, `the decryption share of "site-b" is not signed by it over this aggregate and manifest`},
		{"a share signed by its holder over another manifest", func(t *testing.T, e *env, task *pb.CountersignTask) {
			s := task.Shares[1]
			ds := audit.DecryptionShare{Site: s.ClientId, ShareHash: audit.Hash(s.Payload.Sha256)}
			digest := manifestDigest(studyID, 1, f.initial.Sha256, task.Contributions[:2])
			s.Signature = f.pki.SignAs("site-b", ds.Message(studyID, 1, audit.Hash(task.Aggregate.Sha256), digest))
		}, true, `the decryption share of "site-b" is not signed by it over this aggregate and manifest`},
		{"shares signed over another aggregate", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.Aggregate = e.coord.put(single)
		}, true, `the decryption share of "site-a" is not signed by it`},
		{"fewer than t shares", func(t *testing.T, e *env, task *pb.CountersignTask) { task.Shares = task.Shares[:1] },
			true, "1 decryption shares, the study's threshold is 2"},
		{"one share twice", func(t *testing.T, e *env, task *pb.CountersignTask) { task.Shares[1] = task.Shares[0] },
			true, "decryption share 1 is not a distinct key holder's"},
		{"a share of a site that holds no key", func(t *testing.T, e *env, task *pb.CountersignTask) { task.Shares[1].ClientId = "site-z" },
			true, "decryption share 1 is not a distinct key holder's"},
		{"a share served with other bytes", func(t *testing.T, e *env, task *pb.CountersignTask) {
			e.coord.serveWrong(task.Shares[0].Payload.Sha256, e.coord.objects[[32]byte(task.Shares[1].Payload.Sha256)])
		}, false, `decryption share of "site-a": object`},
		{"the decrypted total weight differs from the declared samples", func(t *testing.T, e *env, task *pb.CountersignTask) {
			// site-a declares (and signs) 10 samples more than it
			// encrypted; the decryptors signed that manifest.
			c := task.Contributions[0]
			c.Samples += 10
			c.Signature = f.signContribution(c.ClientId, c)
			resign(f, task, task.Contributions)
		}, true, "the aggregate's total weight is 456.000, the contributions declare 466"},
		{"round not open on the log", func(t *testing.T, e *env, task *pb.CountersignTask) { e.log.at(f.output.Sha256, 1) },
			false, `round 1 is not open on the audit log: its last committed round of "heart-study" is 1`},
		{"parent is not the log's latest output", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.Parent = e.coord.put([]byte("another parent"))
		}, false, "is not the study's latest committed output on the audit log"},
		{"parent served with other bytes", func(t *testing.T, e *env, task *pb.CountersignTask) {
			e.coord.serveWrong(f.initial.Sha256, []byte("x"))
		},
			false, "parent: object"},
		{"the aggregate served with other bytes", func(t *testing.T, e *env, task *pb.CountersignTask) { e.coord.serveWrong(f.aggregate.Sha256, single) },
			false, "aggregate: object"},
		{"no new model named", func(t *testing.T, e *env, task *pb.CountersignTask) { task.Output = nil }, false, "countersign task without the new model"},
		{"no state after named", func(t *testing.T, e *env, task *pb.CountersignTask) {
			task.OptimizerAfter = &pb.Object{Sha256: []byte{1}}
		},
			false, "countersign task without the optimiser state after the round"},
		{"task for another study", func(t *testing.T, e *env, task *pb.CountersignTask) { task.StudyId = "other-study" }, false, `countersign task for "other-study"`},
	}
	for _, tc := range refusals {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			e := f.clone(t, "site-c")
			task := f.countersignTask()
			tc.edit(t, e, task)
			cs, err := e.c.countersign(t.Context(), e.coord, task)
			wantErr(t, err, tc.want)
			if cs != nil {
				t.Fatal("a countersignature with the refusal")
			}
			if errors.Is(err, ErrOutcome) != tc.outcome {
				t.Fatalf("errors.Is(%v, ErrOutcome) = %v, want %v", err, !tc.outcome, tc.outcome)
			}
			// A refusal leaves the round free to countersign.
			if _, err := os.Stat(filepath.Join(e.studyDir(), "countersigned.json")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refusal recorded a countersignature: %v", err)
			}
		})
	}

	t.Run("never two outcomes of one round", func(t *testing.T) {
		e := f.clone(t, "site-c")
		task := f.countersignTask()
		first, err := e.c.countersign(t.Context(), e.coord, task)
		if err != nil {
			t.Fatal(err)
		}
		// Another model for round 1, one this site would have accepted
		// had it been the first (it is within the tolerance).
		other := f.countersignTask()
		other.Output = editModel(t, e.coord, other.Output, func(p []float64) { p[0] = math.Nextafter(p[0], 0) })
		_, err = e.c.countersign(t.Context(), e.coord, other)
		wantErr(t, err, "round 1: this site already countersigned model "+hex.EncodeToString(f.output.Sha256)[:12])
		if !errors.Is(err, ErrOutcome) {
			t.Fatalf("%v is not ErrOutcome", err)
		}
		restarted := e.restart(t)
		if _, err := restarted.countersign(t.Context(), e.coord, other); err == nil || !errors.Is(err, ErrOutcome) {
			t.Fatalf("another outcome of round 1 after a restart: %v", err)
		}
		// The same outcome again (a restarted coordinator re-running the
		// round) gets the same answer.
		again, err := restarted.countersign(t.Context(), e.coord, f.countersignTask())
		if err != nil {
			t.Fatal(err)
		}
		if string(again.Signature) != string(first.Signature) {
			t.Fatal("the same outcome countersigned with another signature")
		}
	})

	t.Run("never two outcomes of one round, even with the same model", func(t *testing.T) {
		e := f.clone(t, "site-c")
		if _, err := e.c.countersign(t.Context(), e.coord, f.countersignTask()); err != nil {
			t.Fatal(err)
		}
		// The same model and state after, from an optimiser state before
		// that is the initial one written out instead of left implicit:
		// another outcome, which the log would not chain, vouched for by
		// the same site.
		initial, err := aggregation.NewServerOptimizer(strategyOf(f.spec))
		if err != nil {
			t.Fatal(err)
		}
		b, err := initial.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		other := f.countersignTask()
		other.OptimizerBefore = e.coord.put(b)
		_, err = e.c.countersign(t.Context(), e.coord, other)
		wantErr(t, err, "round 1: this site already countersigned another outcome")
		if !errors.Is(err, ErrOutcome) {
			t.Fatalf("%v is not ErrOutcome", err)
		}
	})

	t.Run("a record that names only models", func(t *testing.T) {
		// As written before outcomes were recorded: still holds the site
		// to the model, and takes the outcome.
		e := f.clone(t, "site-c")
		path := filepath.Join(e.studyDir(), "countersigned.json")
		if err := fsutil.WriteFileChecked(path, []byte(`{"rounds":{"1":"`+hex.EncodeToString(f.output.Sha256)+`"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		other := f.countersignTask()
		other.Output = editModel(t, e.coord, other.Output, func(p []float64) { p[0] = math.Nextafter(p[0], 0) })
		_, err := e.c.countersign(t.Context(), e.coord, other)
		wantErr(t, err, "already countersigned model")
		if _, err := e.c.countersign(t.Context(), e.coord, f.countersignTask()); err != nil {
			t.Fatal(err)
		}
		b, err := fsutil.ReadFileChecked(path)
		if err != nil {
			t.Fatal(err)
		}
		var rec countersignedFile
		if err := json.Unmarshal(b, &rec); err != nil || len(rec.Outcomes["1"]) != 64 {
			t.Fatalf("countersigned.json after the countersignature: %s (%v)", b, err)
		}
	})

	t.Run("damaged countersigning state", func(t *testing.T) {
		e := f.clone(t, "site-c")
		path := filepath.Join(e.studyDir(), "countersigned.json")
		if err := fsutil.WriteFileChecked(path, []byte(`{"rounds":`), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := e.c.countersign(t.Context(), e.coord, f.countersignTask())
		wantErr(t, err, "countersigning state "+path+" is damaged")
		// A flipped byte is caught by the file's checksum, naming it.
		if err := os.WriteFile(path, []byte(`{"rounds":{}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err = e.c.countersign(t.Context(), e.coord, f.countersignTask())
		wantErr(t, err, path, "corrupt")
	})

	t.Run("a decryptor countersigns from what it holds", func(t *testing.T) {
		e := f.clone(t, "site-a")
		d := f.decryptTask()
		if err := e.c.decryptRound(t.Context(), e.coord, d); err != nil {
			t.Fatal(err)
		}
		mine := e.coord.shares[0]
		sum := sha256.Sum256(mine.payload)
		shares := []*pb.SignedShare{{ClientId: "site-a", Payload: &pb.Object{Sha256: sum[:], Size: uint64(len(mine.payload))}, Signature: mine.share.Signature},
			f.countersignTask().Shares[1]}
		task := publish(t, e.coord, f.spec, f, f.initial, cloneContributions(f.contributions), f.aggregate, shares)
		cs, err := e.c.countersign(t.Context(), e.coord, task)
		if err != nil {
			t.Fatal(err)
		}
		checkCountersignature(t, e, task, cs)
		if n := e.coord.fetched(f.aggregate.Sha256); n != 1 {
			t.Fatalf("the aggregate was downloaded %d times, want once (for the decryption)", n)
		}
		if n := e.coord.fetched(sum[:]); n != 0 {
			t.Fatalf("the site downloaded its own share %d times", n)
		}
	})

	t.Run("no audit log", func(t *testing.T) {
		e := f.clone(t, "site-c")
		e.c.audit = nil
		_, err := e.c.countersign(t.Context(), e.coord, f.countersignTask())
		wantErr(t, err, "countersigns only rounds it can check on the audit log")
	})
}

// TestCountersignPlaintext: in a plaintext study the site recomputes the
// round from the plaintext aggregate (EncodeSum) and countersigns only
// the outcome it computes.
func TestCountersignPlaintext(t *testing.T) {
	p := newPlainRig(t)
	envs := map[string]*env{}
	var contributions []*pb.Contribution
	dim := specFrom(p.spec.Model).NumParams()
	sum := aggregation.NewWeightedSum(dim)
	for _, site := range sites {
		envs[site] = p.env(t, site)
		if err := envs[site].c.trainRound(t.Context(), p.coord, p.trainTask()); err != nil {
			t.Fatal(err)
		}
		u := p.coord.updates[len(p.coord.updates)-1]
		h := sha256.Sum256(u.payload)
		contributions = append(contributions, &pb.Contribution{ClientId: site, Sha256: h[:], Size: uint64(len(u.payload)),
			Signature: u.header.Signature, Samples: u.header.NumSamples, DataManifestSha256: u.header.DataManifestSha256})
		d, err := aggregation.DecodeWeightedDelta(u.payload, dim)
		if err != nil {
			t.Fatal(err)
		}
		if err := sum.Add(d, float64(u.header.NumSamples)); err != nil {
			t.Fatal(err)
		}
	}
	agg := p.coord.put(aggregation.EncodeSum(sum.Sum, sum.Weight))
	task := func() *pb.CountersignTask {
		return publish(t, p.coord, p.spec, nil, p.initial, cloneContributions(contributions), agg, nil)
	}

	t.Run("countersigned", func(t *testing.T) {
		e := envs["site-b"]
		tk := task()
		cs, err := e.c.countersign(t.Context(), p.coord, tk)
		if err != nil {
			t.Fatal(err)
		}
		checkCountersignature(t, e, tk, cs)
		if n := p.coord.fetched(p.initial.Sha256); n != len(sites) {
			t.Fatalf("the parent was downloaded %d times, want once per site (the countersigner trained on it)", n)
		}
	})
	t.Run("refused: the model differs", func(t *testing.T) {
		tk := task()
		tk.Output = editModel(t, p.coord, tk.Output, func(v []float64) { v[13] *= 1.001 })
		_, err := envs["site-a"].c.countersign(t.Context(), p.coord, tk)
		wantErr(t, err, "parameter 13 of the new model is")
	})
	t.Run("refused: the total weight differs from the declared samples", func(t *testing.T) {
		tk := task()
		tk.Contributions[2].Samples--
		_, err := envs["site-a"].c.countersign(t.Context(), p.coord, tk)
		wantErr(t, err, "the contributions declare 455")
	})
	t.Run("refused: the aggregate is not a plaintext sum", func(t *testing.T) {
		tk := task()
		tk.Aggregate = p.coord.put([]byte("short"))
		_, err := envs["site-a"].c.countersign(t.Context(), p.coord, tk)
		wantErr(t, err, "aggregate:")
	})
	t.Run("never two outcomes of one round, without a data_dir", func(t *testing.T) {
		e := p.env(t, "site-c")
		e.edit = func(c *Config) { c.AllowPlaintext, c.DataDir = true, "" }
		e.c = e.restart(t)
		if _, err := e.c.countersign(t.Context(), p.coord, task()); err != nil {
			t.Fatal(err)
		}
		tk := task()
		tk.Output = editModel(t, p.coord, tk.Output, func(v []float64) { v[0] = math.Nextafter(v[0], 0) })
		_, err := e.c.countersign(t.Context(), p.coord, tk)
		wantErr(t, err, "already countersigned")
	})
}
