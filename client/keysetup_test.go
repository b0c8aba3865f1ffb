package client

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/fedledger/fedledger/aggregation/secure"
	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/fedledger/fedledger/internal/tlsutil"
	pb "github.com/fedledger/fedledger/proto"
)

// TestKeySetupDone: after the fixture's key setup every site has computed
// the same collective key and signed it, with its certificate key, over
// audit.KeySetupMessage with every holder by point; its secret share is
// on disk with mode 0600 and keys.json binds every holder's certificate.
func TestKeySetupDone(t *testing.T) {
	f := secureFixture(t)
	key := f.setup.KeyHash()
	var holders []audit.KeyHolder
	for _, p := range f.task.Participants {
		holders = append(holders, audit.KeyHolder{Site: p.ClientId, Point: p.Point})
	}
	msg := audit.KeySetupMessage(studyID, f.spec.HePreset, f.spec.Threshold, key, holders)
	for _, site := range sites {
		d := f.keyDone[site]
		if d.StudyId != studyID || [32]byte(d.CollectiveKeySha256) != key {
			t.Fatalf("%s: key setup done for %q with key %x, want %x", site, d.StudyId, d.CollectiveKeySha256, key)
		}
		if !ed25519.Verify(f.pki.Hospitals[site].Cert.PublicKey.(ed25519.PublicKey), msg, d.Signature) {
			t.Fatalf("%s: the key setup signature does not verify", site)
		}
		dir := filepath.Join(f.dirs[site], "sites", site, "studies", studyID)
		fi, err := os.Stat(filepath.Join(dir, "share.key"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: secret share has mode %v", site, fi.Mode().Perm())
		}
		var kf keysFile
		b, err := fsutil.ReadFileChecked(filepath.Join(dir, "keys.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &kf); err != nil {
			t.Fatal(err)
		}
		for _, s := range sites {
			if !bytes.Equal(kf.Certificates[s], f.pki.Hospitals[s].Cert.Raw) {
				t.Fatalf("%s: keys.json does not hold %s's certificate", site, s)
			}
		}
	}
}

// TestKeySetup: a site refuses a key setup task that does not fit its
// study and relayed key shares that are not what they claim; refusals
// leave nothing behind, so the key setup completes with the genuine
// shares. A second key setup of the study (the log allows one; a
// coordinator could still send another) keeps the site's round history:
// it does not give a second decryption share or countersign a second
// outcome for a round.
func TestKeySetup(t *testing.T) {
	f := secureFixture(t)
	envs := map[string]*env{}
	clients := map[string]*Client{}
	for _, site := range sites {
		envs[site] = f.clone(t, site)
		clients[site] = envs[site].c
	}
	// Round 1 is decrypted by site-b and countersigned by site-c under the
	// key of the first key setup.
	if err := clients["site-b"].decryptRound(t.Context(), envs["site-b"].coord, f.decryptTask()); err != nil {
		t.Fatal(err)
	}
	if _, err := clients["site-c"].countersign(t.Context(), envs["site-c"].coord, f.countersignTask()); err != nil {
		t.Fatal(err)
	}

	otherCA, err := tlsutil.NewCA("another consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	task := keySetupTask(f.spec)
	task.CrsSeed = []byte("the second key setup")

	t.Run("task refused", func(t *testing.T) {
		cases := []struct {
			name string
			edit func(*pb.KeySetupTask)
			want string
		}{
			{"a participant list repeating a site", func(k *pb.KeySetupTask) {
				k.Participants = append(k.Participants, &pb.Participant{ClientId: "site-b", Point: 4})
			}, `participant list repeats "site-b"`},
			{"too few participants for K and t", func(k *pb.KeySetupTask) { k.Participants = k.Participants[:1] },
				"1 participants; the study's K=2 and t=2 need more"},
			{"another threshold than the study's", func(k *pb.KeySetupTask) { k.Threshold = 3 },
				`key setup with preset "ckks-n14-q2x60-seeded/v2" and t=3, the study says "ckks-n14-q2x60-seeded/v2" and t=2`},
			{"another HE preset than the study's", func(k *pb.KeySetupTask) { k.HePreset = "ckks-toy/v0" }, `key setup with preset "ckks-toy/v0"`},
			{"another study", func(k *pb.KeySetupTask) { k.StudyId = "other-study" }, `key setup for "other-study"`},
			{"this site not a participant", func(k *pb.KeySetupTask) { k.Participants = slices.Delete(k.Participants, 0, 1) },
				`"site-a" is not among the key-setup participants`},
			{"a repeated point", func(k *pb.KeySetupTask) { k.Participants[2].Point = 2 }, "participant list repeats point 2"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				k := proto.Clone(task).(*pb.KeySetupTask)
				tc.edit(k)
				out, err := clients["site-a"].onKeySetupTask(k)
				wantErr(t, err, tc.want)
				if out != nil {
					t.Fatal("a key share with the refusal")
				}
			})
		}
		t.Run("a plaintext study", func(t *testing.T) {
			p := newPlainRig(t)
			c := p.env(t, "site-a").c
			k := proto.Clone(task).(*pb.KeySetupTask)
			wantErr(t, func() error { _, err := c.onKeySetupTask(k); return err }(), "not this client's secure study")
		})
	})

	// The genuine key shares.
	peers, err := startKeySetup(f.pki, clients, task)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("relayed key share refused", func(t *testing.T) {
		relay := func(edit func(p *pb.PeerKey)) *pb.PeerKey {
			p := proto.Clone(peers["site-b"]).(*pb.PeerKey)
			edit(p)
			return p
		}
		foreign := audittest.Issue(t, otherCA, "site-b", tlsutil.RoleClient)
		admin := audittest.Issue(t, f.pki.CA, "site-b", tlsutil.RoleAdmin)
		expired, err := f.pki.CA.Issue("site-b", tlsutil.RoleClient, nil, time.Nanosecond)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		signed := func(id *tlsutil.Identity, sh *pb.KeyShare) []byte {
			return ed25519.Sign(id.Key, audit.KeyShareMessage(sh.StudyId, "site-b", sh.Point, sh.X25519Public, sha256.Sum256(sh.PkShare)))
		}
		cases := []struct {
			name string
			peer *pb.PeerKey
			want string
		}{
			{"certificate from another CA", relay(func(p *pb.PeerKey) {
				p.Certificate = foreign.Cert.Raw
				p.Share.Signature = signed(foreign, p.Share)
			}), `certificate relayed for "site-b"`},
			{"certificate of another role", relay(func(p *pb.PeerKey) {
				p.Certificate = admin.Cert.Raw
				p.Share.Signature = signed(admin, p.Share)
			}), `certificate relayed for "site-b" belongs to "site-b" (admin)`},
			{"certificate of another site", relay(func(p *pb.PeerKey) {
				p.Certificate = f.pki.Hospitals["site-c"].Cert.Raw
				p.Share.Signature = signed(f.pki.Hospitals["site-c"], p.Share)
			}), `certificate relayed for "site-b" belongs to "site-c" (client)`},
			{"expired certificate", relay(func(p *pb.PeerKey) {
				p.Certificate = expired.Cert.Raw
				p.Share.Signature = signed(expired, p.Share)
			}), `certificate relayed for "site-b"`},
			{"key share not signed by its certificate key", relay(func(p *pb.PeerKey) {
				p.Share.Signature = signed(f.pki.Hospitals["site-c"], p.Share)
			}), `key share of "site-b" is not signed by its certificate key`},
			{"another site's public-key share under this site's signature", relay(func(p *pb.PeerKey) {
				p.Share.PkShare = peers["site-c"].Share.PkShare
			}), `key share of "site-b" is not signed by its certificate key`},
			{"another point than the participant list's", relay(func(p *pb.PeerKey) { p.Share.Point = 3 }),
				`relayed key share of "site-b" does not match the participant list`},
			{"a site outside the participant list", relay(func(p *pb.PeerKey) { p.ClientId = "site-z" }),
				`relayed key share of "site-z" does not match the participant list`},
			{"for another study", relay(func(p *pb.PeerKey) { p.Share.StudyId = "other-study" }),
				`relayed key share of "site-b" does not match the participant list`},
			{"no key share", relay(func(p *pb.PeerKey) { p.Share = nil }), `relayed key share of "site-b" does not match`},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				out, err := clients["site-a"].onPeerKey(tc.peer)
				wantErr(t, err, tc.want)
				if out != nil {
					t.Fatal("share boxes with the refusal")
				}
			})
		}
		t.Run("this site's own key share replaced", func(t *testing.T) {
			p := proto.Clone(peers["site-a"]).(*pb.PeerKey)
			sh := peers["site-c"].Share
			p.Share.X25519Public, p.Share.PkShare = sh.X25519Public, sh.PkShare
			p.Share.Signature = ed25519.Sign(f.pki.Hospitals["site-a"].Key, audit.KeyShareMessage(studyID, "site-a", 1, sh.X25519Public, sha256.Sum256(sh.PkShare)))
			_, err := clients["site-a"].onPeerKey(p)
			wantErr(t, err, "the relayed key share in this site's name is not the one it sent")
		})
		t.Run("share box outside key setup", func(t *testing.T) {
			p := newPlainRig(t)
			_, err := p.env(t, "site-a").c.onShareBox(&pb.ShareBox{StudyId: studyID, FromPoint: 2, ToPoint: 1})
			wantErr(t, err, "share box outside key setup")
		})
		t.Run("share box for another site", func(t *testing.T) {
			_, err := clients["site-a"].onShareBox(&pb.ShareBox{StudyId: studyID, FromPoint: 2, ToPoint: 3, Box: []byte("sealed")})
			wantErr(t, err, "share box from point 2 to point 3 is not for this site (point 1)")
		})
	})

	t.Run("completed after the refusals", func(t *testing.T) {
		done, err := relayKeySetup(clients, task, peers)
		if err != nil {
			t.Fatal(err)
		}
		var key []byte
		for _, site := range sites {
			d := done[site]
			if d == nil {
				t.Fatalf("%s did not finish", site)
			}
			if key == nil {
				key = d.CollectiveKeySha256
			}
			if !bytes.Equal(d.CollectiveKeySha256, key) {
				t.Fatalf("%s computed key %x, another site %x", site, d.CollectiveKeySha256, key)
			}
		}
		if old := f.setup.KeyHash(); bytes.Equal(key, old[:]) {
			t.Fatal("the second key setup made the same key")
		}
		// The coordinator records the second key setup (the first never
		// reached the log, or there would be no second).
		for _, e := range envs {
			e.log.mu.Lock()
			e.log.key = (*[32]byte)(key)
			e.log.mu.Unlock()
		}
	})

	t.Run("a second key setup keeps the round history", func(t *testing.T) {
		// Round 1 was answered under the first key: another aggregate of
		// it is refused under the second, by this process or after a
		// restart (the same task again resends the share given).
		other1 := f.decryptTask()
		o := envs["site-b"].coord.put([]byte("another aggregate of round 1"))
		other1.AggregateSha256, other1.AggregateSize = o.Sha256, o.Size
		for _, c := range []*Client{clients["site-b"], envs["site-b"].restart(t)} {
			err := c.decryptRound(t.Context(), envs["site-b"].coord, other1)
			if !errors.Is(err, secure.ErrAlreadyShared) {
				t.Fatalf("a second decryption share of round 1 after a second key setup: %v", err)
			}
		}
		other := f.countersignTask()
		e := envs["site-c"]
		other.Output = editModel(t, e.coord, other.Output, func(p []float64) { p[0] = math.Nextafter(p[0], 0) })
		for _, c := range []*Client{clients["site-c"], e.restart(t)} {
			if _, err := c.countersign(t.Context(), e.coord, other); !errors.Is(err, ErrOutcome) {
				t.Fatalf("a second outcome of round 1 after a second key setup: %v", err)
			}
		}
	})
}

// TestResume: a restarted client (a new Client over the same data_dir and
// identity) loads its key material and carries on: its contribution is
// under the study's key (it decrypts with the others'), and it answers a
// decryption task with its own contribution from memory.
func TestResume(t *testing.T) {
	f := secureFixture(t)
	a := f.clone(t, "site-a")
	if a.c.keys != nil {
		t.Fatal("a restarted client holds key material before it needs it")
	}
	train := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
	if err := a.c.trainRound(t.Context(), a.coord, train); err != nil {
		t.Fatal(err)
	}
	mine := a.coord.updates[0]
	verifyContribution(t, a.c, mine, 1, f.initial.Sha256)

	// The coordinator aggregates the restarted site's contribution with
	// the others' and asks it and site-b to decrypt.
	payloads := [][]byte{mine.payload, f.updates["site-b"].payload, f.updates["site-c"].payload}
	agg, err := f.setup.Aggregate(1, 3, func(i int) ([]byte, error) { return payloads[i], nil })
	if err != nil {
		t.Fatal(err)
	}
	task := f.decryptTask()
	h := sha256.Sum256(mine.payload)
	task.Contributions[0] = &pb.Contribution{ClientId: "site-a", Sha256: h[:], Size: uint64(len(mine.payload)), Signature: mine.header.Signature,
		Samples: mine.header.NumSamples, DataManifestSha256: mine.header.DataManifestSha256}
	o := a.coord.put(agg)
	task.AggregateSha256, task.AggregateSize = o.Sha256, o.Size
	if err := a.c.decryptRound(t.Context(), a.coord, task); err != nil {
		t.Fatal(err)
	}
	if n := a.coord.fetched(h[:]); n != 0 {
		t.Fatalf("the site downloaded its own contribution %d times to re-sum the aggregate", n)
	}
	if n := counter(t, a.c, "fedledger_client_aggregate_check_downloads_total"); n != 2 {
		t.Fatalf("%v contributions downloaded to check the aggregate (no sketches in this task), want the other 2", n)
	}
	b := f.clone(t, "site-b")
	b.coord = a.coord
	if err := b.c.decryptRound(t.Context(), b.coord, task); err != nil {
		t.Fatal(err)
	}
	// Training is seeded: the restarted site's update is the one it made
	// before, under fresh encryption.
	f.wantDecrypts(t, agg, a.coord.shares[0].payload, a.coord.shares[1].payload)
}

// TestDamagedKeyMaterial: damaged or missing key files are an error that
// names the file, and the files are left as they were (no silent reset).
func TestDamagedKeyMaterial(t *testing.T) {
	f := secureFixture(t)
	otherCA, err := tlsutil.NewCA("another consortium", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(at func(n int) int) func(b []byte) []byte {
		return func(b []byte) []byte { b[at(len(b))] ^= 0x10; return b }
	}
	certs := func(edit func(map[string][]byte)) func(b []byte) []byte {
		return func(b []byte) []byte {
			var kf map[string]json.RawMessage
			if err := json.Unmarshal(b, &kf); err != nil {
				t.Fatal(err)
			}
			var c map[string][]byte
			if err := json.Unmarshal(kf["certificates"], &c); err != nil {
				t.Fatal(err)
			}
			edit(c)
			kf["certificates"], _ = json.Marshal(c)
			out, _ := json.Marshal(kf)
			return out
		}
	}
	// Byte-level damage is caught by the files' checksums; edits of the
	// content under a valid checksum (checked) by what it says.
	cases := []struct {
		name, file string
		edit       func([]byte) []byte // nil: remove the file
		want       string
		checked    bool
	}{
		{"setup.bin: a byte of the header", "setup.bin", flip(func(int) int { return 0 }), "setup.bin", false},
		{"setup.bin: a byte of the collective key", "setup.bin", flip(func(n int) int { return n / 2 }), "setup.bin", false},
		{"setup.bin: the last byte", "setup.bin", flip(func(n int) int { return n - 1 }), "setup.bin", false},
		{"setup.bin: truncated", "setup.bin", func(b []byte) []byte { return b[:len(b)-8] }, "setup.bin", false},
		{"setup.bin: missing", "setup.bin", nil, "setup.bin", false},
		{"share.key: a byte of the header", "share.key", flip(func(int) int { return 2 }), "share.key", false},
		{"share.key: a byte of the secret", "share.key", flip(func(n int) int { return n / 2 }), "share.key", false},
		{"share.key: truncated", "share.key", func(b []byte) []byte { return b[:len(b)/2] }, "share.key", false},
		{"share.key: missing", "share.key", nil, "share.key", false},
		{"keys.json: truncated", "keys.json", func(b []byte) []byte { return b[:len(b)/2] }, "keys.json", false},
		{"keys.json: missing", "keys.json", nil, "keys.json", false},
		{"keys.json: a flipped byte", "keys.json", flip(func(n int) int { return n - 3 }), "keys.json", false},
		{"keys.json: another study's", "keys.json", func(b []byte) []byte { return bytes.Replace(b, []byte(studyID), []byte("other-study"), 1) },
			"keys.json", true},
		{"keys.json: a certificate from another CA", "keys.json", certs(func(c map[string][]byte) {
			c["site-b"] = audittest.Issue(t, otherCA, "site-b", tlsutil.RoleClient).Cert.Raw
		}), "keys.json", true},
		{"keys.json: another site's certificate", "keys.json", certs(func(c map[string][]byte) { c["site-b"] = c["site-c"] }), "keys.json", true},
		{"keys.json: a key holder's certificate missing", "keys.json", certs(func(c map[string][]byte) { delete(c, "site-c") }), "keys.json", true},
		{"guard.json: damaged", "guard.json", func([]byte) []byte { return []byte(`["heart-study/1"`) }, "guard.json", true},
		{"guard.json: without its checksum", "guard.json", func([]byte) []byte { return []byte(`["heart-study/1"]`) }, "guard.json", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := f.clone(t, "site-a")
			path := filepath.Join(e.studyDir(), tc.file)
			if tc.edit == nil {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				read, write := os.ReadFile, os.WriteFile
				if tc.checked {
					read, write = fsutil.ReadFileChecked, fsutil.WriteFileChecked
				}
				b, err := read(path)
				if errors.Is(err, os.ErrNotExist) {
					b = nil
				} else if err != nil {
					t.Fatal(err)
				}
				if err := write(path, tc.edit(b), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			before := readDir(t, e.studyDir())
			train := &pb.TrainTask{StudyId: studyID, Round: 1, ParentSha256: f.initial.Sha256, ParentSize: f.initial.Size}
			err := e.c.trainRound(t.Context(), e.coord, train)
			wantErr(t, err, tc.want)
			if len(e.coord.updates) != 0 {
				t.Fatal("an update was submitted")
			}
			err = e.c.decryptRound(t.Context(), e.coord, f.decryptTask())
			wantErr(t, err, tc.want)
			if after := readDir(t, e.studyDir()); !maps.Equal(before, after) {
				t.Fatal("the key material directory changed")
			}
		})
	}
	t.Run("share.key readable by others", func(t *testing.T) {
		e := f.clone(t, "site-a")
		if err := os.Chmod(filepath.Join(e.studyDir(), "share.key"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := e.c.studyKeys()
		wantErr(t, err, "share.key", "it must be 0600")
	})
}

// readDir returns every file of dir by name.
func readDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = string(b)
	}
	return out
}

// counter is the value of one of the client's counters.
func counter(t *testing.T, c *Client, name string) float64 {
	t.Helper()
	families, err := c.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}
