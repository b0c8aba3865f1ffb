package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/audit/audittest"
)

var testConf = raft.Configuration{Servers: []raft.Server{
	{Suffrage: raft.Voter, ID: "audit-0", Address: "127.0.0.1:1"},
	{Suffrage: raft.Voter, ID: "audit-1", Address: "127.0.0.1:2"},
	{Suffrage: raft.Voter, ID: "audit-2", Address: "127.0.0.1:3"},
}}

// buildStore writes, through the node's sealed store, what a member's
// raft.db holds after a study and two rounds: stable values, a
// configuration, a no-op and three framed records (raft indexes 3-5).
// It returns the records.
func buildStore(t *testing.T, dir string, f *audittest.Fixture) [][]byte {
	t.Helper()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	s := &sealedStore{bolt: bolt}
	s.SetUint64(keyCurrentTerm, 3)
	s.SetUint64(keyLastVoteTerm, 3)
	s.Set(keyLastVoteCand, []byte("127.0.0.1:1"))
	recs := [][]byte{audittest.Must(f.L.Log().Leaf(0))}
	for r := uint64(1); r <= 2; r++ {
		recs = append(recs, audittest.Must(audit.Sign(f.Coord, f.Round(r, audittest.Model(byte(r-1)), audittest.Model(byte(r)), "site-a", "site-b"))).Marshal())
	}
	logs := []*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: raft.EncodeConfiguration(testConf)},
		{Index: 2, Term: 2, Type: raft.LogNoop},
		{Index: 3, Term: 2, Type: raft.LogCommand, Data: frameCommand(recs[0])},
		{Index: 4, Term: 3, Type: raft.LogCommand, Data: frameCommand(recs[1])},
		{Index: 5, Term: 3, Type: raft.LogCommand, Data: frameCommand(recs[2])},
	}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	return recs
}

// rawStore edits raft.db with raft-boltdb directly, bypassing the seals.
func rawStore(t *testing.T, dir string, edit func(*raftboltdb.BoltStore)) {
	t.Helper()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, raftFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	edit(bolt)
}

// rawBolt edits raft.db's buckets with bbolt directly.
func rawBolt(t *testing.T, dir string, edit func(logs, conf *bbolt.Bucket) error) {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(dir, raftFile), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(func(tx *bbolt.Tx) error { return edit(tx.Bucket([]byte("logs")), tx.Bucket([]byte("conf"))) }); err != nil {
		t.Fatal(err)
	}
}

func editLog(t *testing.T, dir string, idx uint64, change func(*raft.Log)) {
	rawStore(t, dir, func(b *raftboltdb.BoltStore) {
		var l raft.Log
		if err := b.GetLog(idx, &l); err != nil {
			t.Fatal(err)
		}
		change(&l)
		if err := b.StoreLogs([]*raft.Log{&l}); err != nil {
			t.Fatal(err)
		}
	})
}

func key(i uint64) []byte { return binary.BigEndian.AppendUint64(nil, i) }

// TestStartupCheckFindsHandMadeDamage builds a member's store, checks that
// the start-up check passes it (and rebuilds it with the same content),
// then damages a fresh copy in each way a disk can and checks that each is
// reported with what and where, and that a damaged raft.db is left exactly
// as it was found.
func TestStartupCheckFindsHandMadeDamage(t *testing.T) {
	f := audittest.NewFixture(t)
	pristine := t.TempDir()
	recs := buildStore(t, pristine, f)
	full := audit.NewLedger(f.CA.Pool())
	for _, r := range recs {
		full.Apply(r)
	}
	root2, _ := full.Log().Root(2)
	_, root3, _ := full.Root()

	clean := t.TempDir()
	copyDir(t, pristine, clean)
	before, _ := dumpStore(filepath.Join(clean, raftFile))
	rep, err := checkState(clean, f.CA.Pool(), &audit.Checkpoint{Size: 2, Root: root2}, hclog.NewNullLogger())
	if err != nil || len(rep.Problems) > 0 {
		t.Fatalf("clean store: %v, %v", err, rep.Found)
	}
	if rep.TreeSize != 3 || rep.Root != root3 || *rep.CurrentTerm != 3 || *rep.LastVoteTerm != 3 || string(rep.LastVoteCand) != "127.0.0.1:1" ||
		!rep.ConfigKnown || len(rep.Config.Servers) != 3 || rep.FirstIndex != 1 || rep.LastIndex != 5 {
		t.Fatalf("clean store report: %+v", rep)
	}
	if after, err := dumpStore(filepath.Join(clean, raftFile)); err != nil || after != before {
		t.Fatalf("the rebuilt raft.db differs from the original: %v", err)
	}
	if _, err := os.Stat(filepath.Join(clean, raftFile+".rebuilt")); !os.IsNotExist(err) {
		t.Fatalf("rebuild left its temporary file: %v", err)
	}

	flipFile := func(off int64) func(t *testing.T, dir string) {
		return func(t *testing.T, dir string) {
			p := filepath.Join(dir, raftFile)
			b, _ := os.ReadFile(p)
			b[off] ^= 0x10
			os.WriteFile(p, b, 0o600)
		}
	}
	cases := []struct {
		name      string
		damage    func(t *testing.T, dir string)
		witness   *audit.Checkpoint
		check     string
		raftIndex uint64
		says      string
	}{
		{"a record's byte", func(t *testing.T, d string) { editLog(t, d, 3, func(l *raft.Log) { l.Data[100] ^= 1 }) }, nil, "log entry", 3, "does not match its seal"},
		{"an entry's term", func(t *testing.T, d string) { editLog(t, d, 4, func(l *raft.Log) { l.Term = 2 }) }, nil, "log entry", 4, "does not match its seal"},
		{"a command turned no-op", func(t *testing.T, d string) { editLog(t, d, 5, func(l *raft.Log) { l.Type = raft.LogNoop }) }, nil, "log entry", 5, "does not match its seal"},
		{"a configuration entry", func(t *testing.T, d string) { editLog(t, d, 1, func(l *raft.Log) { l.Data[3] ^= 1 }) }, nil, "log entry", 1, "does not match its seal"},
		{"a seal", func(t *testing.T, d string) { editLog(t, d, 2, func(l *raft.Log) { l.Extensions = nil }) }, nil, "log entry", 2, "no seal"},
		{"an entry under another's key", func(t *testing.T, d string) {
			rawBolt(t, d, func(logs, _ *bbolt.Bucket) error { return logs.Put(key(4), bytes.Clone(logs.Get(key(5)))) })
		}, nil, "log entry", 4, "says it is entry 5"},
		{"a missing entry", func(t *testing.T, d string) {
			rawBolt(t, d, func(logs, _ *bbolt.Bucket) error { return logs.Delete(key(4)) })
		}, nil, "log entry", 4, "jump from 3 to 5"},
		{"the current term", func(t *testing.T, d string) {
			rawBolt(t, d, func(_, conf *bbolt.Bucket) error {
				v := bytes.Clone(conf.Get(keyCurrentTerm))
				v[7] = 1
				return conf.Put(keyCurrentTerm, v)
			})
		}, nil, "stable store", 0, "CurrentTerm"},
		{"the vote", func(t *testing.T, d string) {
			rawBolt(t, d, func(_, conf *bbolt.Bucket) error { return conf.Put(keyLastVoteCand, []byte("127.0.0.1:2")) })
		}, nil, "stable store", 0, "LastVoteCand"},
		{"a bbolt meta page", flipFile(16 + 48), nil, "raft.db", 0, "meta page 0: checksum"},
		{"bbolt's page size", flipFile(16 + 8), nil, "raft.db", 0, "meta page 0"},
		{"random bytes", func(t *testing.T, d string) {
			b := make([]byte, 64<<10)
			rand.Read(b)
			os.WriteFile(filepath.Join(d, raftFile), b, 0o600)
		}, nil, "raft.db", 0, "meta page"},
		{"a truncated file", func(t *testing.T, d string) { os.Truncate(filepath.Join(d, raftFile), 5000) }, nil, "raft.db", 0, ""},
		{"an empty file", func(t *testing.T, d string) { os.Truncate(filepath.Join(d, raftFile), 0) }, nil, "raft.db", 0, "meta page 0 unreadable"},
		{"a lost raft.db", func(t *testing.T, d string) { os.Remove(filepath.Join(d, raftFile)) }, &audit.Checkpoint{Size: 2, Root: root2}, "tree", 0, "fewer than the 2 this node cosigned"},
		{"a tree shorter than cosigned", func(*testing.T, string) {}, &audit.Checkpoint{Size: 4, Root: root3}, "tree", 0, "3 entries, fewer than the 4"},
		{"a tree other than cosigned", func(*testing.T, string) {}, &audit.Checkpoint{Size: 2, Root: root3}, "tree", 0, "root at size 2 differs"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, pristine, dir)
			tc.damage(t, dir)
			damaged, _ := os.ReadFile(filepath.Join(dir, raftFile))
			rep, err := checkState(dir, f.CA.Pool(), tc.witness, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) == 0 {
				t.Fatal("no problem found")
			}
			p := rep.Problems[0]
			if p.Check != tc.check || p.RaftIndex != tc.raftIndex || !strings.Contains(p.Error(), tc.says) || !errors.Is(p, ErrCorrupt) {
				t.Fatalf("found %v (check %q, raft index %d), want check %q at raft index %d saying %q", p, p.Check, p.RaftIndex, tc.check, tc.raftIndex, tc.says)
			}
			if after, _ := os.ReadFile(filepath.Join(dir, raftFile)); !bytes.Equal(after, damaged) {
				t.Fatal("the check changed a damaged raft.db")
			}
		})
	}
}

// TestStartupCheckFindsDamagedSnapshots: a snapshot whose state.bin or
// meta.json changed, or whose records do not replay, is reported; a good
// one is replayed into the tree.
func TestStartupCheckFindsDamagedSnapshots(t *testing.T) {
	f := audittest.NewFixture(t)
	pristine := t.TempDir()
	recs := buildStore(t, pristine, f)
	_, trans := raft.NewInmemTransport("")
	snapshot := func(dir string, leaves [][]byte) string {
		files, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		sink, err := sealedSnapshots{files}.Create(raft.SnapshotVersionMax, 5, 3, testConf, 1, trans)
		if err != nil {
			t.Fatal(err)
		}
		if err := (&fsmSnapshot{leaves: leaves}).Persist(sink); err != nil {
			t.Fatal(err)
		}
		return filepath.Join(dir, snapshotsDir, sink.ID())
	}
	good := t.TempDir()
	copyDir(t, pristine, good)
	snapshot(good, recs)
	if rep, err := checkState(good, f.CA.Pool(), nil, hclog.NewNullLogger()); err != nil || len(rep.Problems) > 0 || rep.SnapIndex != 5 || rep.TreeSize != 3 {
		t.Fatalf("good snapshot: %v %v %+v", err, rep.Found, rep)
	}
	cases := []struct {
		name   string
		damage func(snapDir string)
		leaves [][]byte
		says   string
	}{
		{"state.bin", func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, "state.bin"))
			b[len(b)/2] ^= 1
			os.WriteFile(filepath.Join(d, "state.bin"), b, 0o600)
		}, recs, "CRC mismatch"},
		{"meta.json's index", func(d string) {
			b, _ := os.ReadFile(filepath.Join(d, "meta.json"))
			os.WriteFile(filepath.Join(d, "meta.json"), bytes.Replace(b, []byte(`"Index":5`), []byte(`"Index":4`), 1), 0o600)
		}, recs, "does not match the header"},
		{"meta.json's syntax", func(d string) {
			os.WriteFile(filepath.Join(d, "meta.json"), []byte("{"), 0o600)
		}, recs, "snapshot"},
		{"records out of order", func(string) {}, [][]byte{recs[1], recs[0], recs[2]}, "does not replay"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			copyDir(t, pristine, dir)
			tc.damage(snapshot(dir, tc.leaves))
			rep, err := checkState(dir, f.CA.Pool(), nil, hclog.NewNullLogger())
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) == 0 || rep.Problems[0].Check != "snapshot" || !strings.Contains(rep.Problems[0].Error(), tc.says) {
				t.Fatalf("found %v, want a snapshot problem saying %q", rep.Found, tc.says)
			}
		})
	}
}
