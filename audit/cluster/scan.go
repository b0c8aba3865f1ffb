package cluster

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/fedledger/fedledger/audit"
)

// Raft's stable-store keys (unexported in hashicorp/raft, raft.go).
var (
	keyCurrentTerm  = []byte("CurrentTerm")
	keyLastVoteTerm = []byte("LastVoteTerm")
	keyLastVoteCand = []byte("LastVoteCand")
)

const (
	raftFile      = "raft.db"
	snapshotsDir  = "snapshots"
	maxProblems   = 20
	storeLockWait = 5 * time.Second
)

// errLocked: another process holds raft.db. Not corruption.
var errLocked = errors.New("audit: raft.db is locked by another process (is another audit node running on this data_dir?)")

// stateReport is what the start-up check found in a data directory.
type stateReport struct {
	Problems []*CorruptionError `json:"-"`
	// Found is Problems as text, for the evidence report.
	Found []string `json:"problems"`
	// The stable values that verified (nil: absent or unreadable).
	CurrentTerm  *uint64 `json:"current_term,omitempty"`
	LastVoteTerm *uint64 `json:"last_vote_term,omitempty"`
	LastVoteCand []byte  `json:"last_vote_candidate,omitempty"`
	// Config is the latest configuration the readable state holds.
	Config      raft.Configuration `json:"configuration"`
	ConfigKnown bool               `json:"configuration_known"`
	FirstIndex  uint64             `json:"first_index"`
	LastIndex   uint64             `json:"last_index"`
	SnapIndex   uint64             `json:"snapshot_index"`
	TreeSize    int64              `json:"tree_size"`
	Root        tlog.Hash          `json:"-"`
}

func (r *stateReport) problem(ce *CorruptionError) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, ce)
		r.Found = append(r.Found, ce.Error())
	}
}

// soleVoter reports whether the readable configuration says this node is
// the cluster's only voter (so there is no quorum to recover from).
func (r *stateReport) soleVoter(id string) bool {
	if !r.ConfigKnown {
		return false
	}
	voters := 0
	self := false
	for _, s := range r.Config.Servers {
		if s.Suffrage == raft.Voter {
			voters++
			self = self || string(s.ID) == id
		}
	}
	return voters == 1 && self
}

// checkState verifies a node's stored state before Raft sees it: raft.db
// as a bbolt file (both meta pages, bbolt's own consistency check), every
// log entry from the first index to the last (present, contiguous,
// decodable, stored under its own index, matching its seal), the stable
// values, every snapshot (CRC, header, and the newest replayed through a
// fresh ledger), and the tree rebuilt from the newest snapshot and the log
// against last, the checkpoint this node last cosigned: the tree must
// hold at least that many entries, with the same root at that size.
//
// When nothing fails, raft.db is replaced by a file rebuilt from the
// verified entries and values (see checkLog). Damage is reported in the
// stateReport's Problems and leaves the files as they were; the error is
// for what is not damage (raft.db locked by another process, no
// permission, a full disk).
func checkState(dataDir string, roots *x509.CertPool, last *audit.Checkpoint, logger hclog.Logger) (_ *stateReport, err error) {
	rep := &stateReport{}
	ledger := audit.NewLedger(roots)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dataDir, 2, logger)
	if err != nil {
		return nil, fmt.Errorf("audit node: snapshot store: %w", err)
	}
	if lg, ok := checkSnapshots(sealedSnapshots{snaps}, filepath.Join(dataDir, snapshotsDir), roots, rep); ok && lg != nil {
		ledger = lg
	}
	path := filepath.Join(dataDir, raftFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		// A node that never started has no raft.db; one that had state and
		// lost it fails the tree check below (fewer entries than cosigned).
	} else if err := checkBolt(path, rep); err != nil {
		return nil, err
	} else if len(rep.Problems) == 0 {
		rebuilt := path + ".rebuilt"
		defer os.Remove(rebuilt)
		if err := checkLog(path, rep, ledger, rebuilt); err != nil {
			return nil, err
		}
		defer func() {
			if len(rep.Problems) == 0 && err == nil {
				if err = os.Rename(rebuilt, path); err == nil {
					syncDir(dataDir)
				}
			}
		}()
	}
	if len(rep.Problems) == 0 {
		rep.TreeSize, rep.Root, _ = ledger.Root()
		if last != nil && last.Size > 0 {
			switch root, err := ledger.Log().Root(last.Size); {
			case rep.TreeSize < last.Size:
				rep.problem(&CorruptionError{Check: "tree", LeafIndex: rep.TreeSize, Err: fmt.Errorf("the stored log rebuilds a tree of %d entries, fewer than the %d this node cosigned (witness.json)", rep.TreeSize, last.Size)})
			case err != nil || root != last.Root:
				rep.problem(&CorruptionError{Check: "tree", LeafIndex: -1, Err: fmt.Errorf("the stored log's root at size %d differs from the one this node cosigned (witness.json)", last.Size)})
			}
		}
	}
	return rep, nil
}

// checkSnapshots opens every snapshot in dir (Open checks the CRC and the
// header) and replays the newest into a ledger.
func checkSnapshots(store sealedSnapshots, dir string, roots *x509.CertPool, rep *stateReport) (*audit.Ledger, bool) {
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		rep.problem(corrupt("snapshot", 0, "reading %s: %v", dir, err))
		return nil, false
	}
	for _, e := range entries {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue // Raft ignores these too: files, and snapshots a crash left unfinished
		}
		_, rc, err := store.Open(e.Name())
		if err != nil {
			var ce *CorruptionError
			if !errors.As(err, &ce) {
				ce = corrupt("snapshot", 0, "%v", err)
			}
			rep.problem(ce)
			continue
		}
		rc.Close()
	}
	if len(rep.Problems) > 0 {
		return nil, false
	}
	metas, err := store.List()
	if err != nil {
		rep.problem(corrupt("snapshot", 0, "listing: %v", err))
		return nil, false
	}
	if len(metas) == 0 {
		return nil, true
	}
	meta, rc, err := store.Open(metas[0].ID)
	if err != nil {
		rep.problem(corrupt("snapshot", metas[0].Index, "%v", err))
		return nil, false
	}
	defer rc.Close()
	lg, err := restoreLedger(rc, roots)
	if err != nil {
		rep.problem(corrupt("snapshot", meta.Index, "snapshot %s does not replay: %v", meta.ID, err))
		return nil, false
	}
	rep.SnapIndex = meta.Index
	rep.Config, rep.ConfigKnown = meta.Configuration, true
	return lg, true
}

// guard turns a panic of bbolt or msgpack on damaged bytes into a problem.
func guard(rep *stateReport, what string) {
	if p := recover(); p != nil {
		rep.problem(corrupt("raft.db", 0, "%s panicked: %v", what, p))
	}
}

// checkBolt checks raft.db as a bbolt file: both meta pages, bbolt's
// consistency check (every page reachable once or free, of a valid type),
// the two buckets, contiguous log keys and the stable values.
func checkBolt(path string, rep *stateReport) (err error) {
	if err := checkMetaPages(path); err != nil {
		rep.problem(corrupt("raft.db", 0, "%v", err))
		return nil
	}
	if err := checkPages(path); err != nil {
		rep.problem(corrupt("raft.db", 0, "%v", err))
		return nil
	}
	defer guard(rep, "bbolt")
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: storeLockWait})
	switch {
	case errors.Is(err, bbolt.ErrTimeout):
		return errLocked
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("audit node: %s: %w", path, err)
	case err != nil:
		rep.problem(corrupt("raft.db", 0, "bbolt cannot open it: %v", err))
		return nil
	}
	defer db.Close()
	return db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			rep.problem(corrupt("raft.db", 0, "bbolt consistency check: %v", err))
		}
		logs, conf := tx.Bucket([]byte("logs")), tx.Bucket([]byte("conf"))
		if logs == nil || conf == nil {
			rep.problem(corrupt("raft.db", 0, "bucket %q or %q is missing", "logs", "conf"))
			return nil
		}
		c := logs.Cursor()
		var prev uint64
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) != 8 {
				rep.problem(corrupt("raft.db", prev+1, "log key of %d bytes after index %d", len(k), prev))
				return nil
			}
			idx := binary.BigEndian.Uint64(k)
			if prev == 0 {
				rep.FirstIndex = idx
			} else if idx != prev+1 {
				rep.problem(corrupt("log entry", prev+1, "log keys jump from %d to %d", prev, idx))
				return nil
			}
			prev = idx
		}
		rep.LastIndex = prev
		return conf.ForEach(func(k, _ []byte) error {
			if !bytes.Equal(k, keyCurrentTerm) && !bytes.Equal(k, keyLastVoteTerm) && !bytes.Equal(k, keyLastVoteCand) {
				rep.problem(corrupt("stable store", 0, "unexpected key %q", k))
			}
			return nil
		})
	})
}

// checkMetaPages verifies both bbolt meta pages as bbolt does on open
// (magic, version, FNV-64a checksum), because bbolt silently uses the
// other one when one fails, which rolls the store back one transaction (a
// vote or an acknowledged entry forgotten). After a crash in the middle of
// a commit this also flags a torn meta page; the node then recovers from
// the quorum, which is safe. Layout (bbolt v1.3, native byte order): a
// 16-byte page header (id u64, flags u16, count u16, overflow u32), then
// magic u32, version u32, page size u32, flags u32, root (pgid u64,
// sequence u64), freelist u64, high-water pgid u64, txid u64, checksum
// u64 over the 56 bytes before it.
func checkMetaPages(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	pageSize := os.Getpagesize()
	var buf [16 + 64]byte
	for id := 0; id < 2; id++ {
		if _, err := f.ReadAt(buf[:], int64(id*pageSize)); err != nil {
			return fmt.Errorf("bbolt meta page %d unreadable: %v", id, err)
		}
		ne := binary.NativeEndian
		h := fnv.New64a()
		h.Write(buf[16 : 16+56])
		switch {
		case ne.Uint64(buf[0:]) != uint64(id) || ne.Uint16(buf[8:])&0x04 == 0:
			return fmt.Errorf("bbolt meta page %d: bad page header", id)
		case ne.Uint32(buf[16:]) != 0xED0CDAED || ne.Uint32(buf[20:]) != 2:
			return fmt.Errorf("bbolt meta page %d: bad magic or version", id)
		case ne.Uint64(buf[16+56:]) != h.Sum64():
			return fmt.Errorf("bbolt meta page %d: checksum mismatch", id)
		case id == 0 && int(ne.Uint32(buf[24:])) != pageSize:
			// bbolt creates files with the OS page size; read page 1 there.
			pageSize = int(ne.Uint32(buf[24:]))
			if pageSize < 512 || pageSize > 1<<16 {
				return fmt.Errorf("bbolt meta page 0: page size %d", pageSize)
			}
		}
	}
	return nil
}

// checkLog reads every entry and stable value through raft-boltdb (read
// only), verifies their seals, and applies the command entries after the
// snapshot to ledger. It writes what it verified, as stored, into a new
// bbolt file at rebuilt: bbolt keeps no checksum of its pages and its
// consistency check does not look inside them (a damaged branch key or
// page count reads back fine and blows up on a later write), so the node
// runs on a file rebuilt from verified content, not on the one it read.
func checkLog(path string, rep *stateReport, ledger *audit.Ledger, rebuilt string) error {
	defer guard(rep, "reading the log")
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: storeLockWait}})
	if errors.Is(err, bbolt.ErrTimeout) {
		return errLocked
	} else if err != nil {
		rep.problem(corrupt("raft.db", 0, "raft-boltdb cannot open it: %v", err))
		return nil
	}
	defer bolt.Close()
	if err := os.Remove(rebuilt); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("audit node: %w", err)
	}
	dst, err := raftboltdb.New(raftboltdb.Options{Path: rebuilt, BoltOptions: &bbolt.Options{Timeout: storeLockWait}})
	if err != nil {
		return fmt.Errorf("audit node: rebuilding raft.db: %w", err)
	}
	defer dst.Close()
	for _, key := range [][]byte{keyCurrentTerm, keyLastVoteTerm, keyLastVoteCand} {
		stored, err := bolt.Get(key)
		if errors.Is(err, raftboltdb.ErrKeyNotFound) {
			continue
		}
		val, err := openStable(key, stored)
		if err != nil {
			rep.problem(asCorruption("stable store", err))
			continue
		}
		switch {
		case bytes.Equal(key, keyLastVoteCand):
			rep.LastVoteCand = val
		case len(val) != 8:
			rep.problem(corrupt("stable store", 0, "value of %q is %d bytes, want 8", key, len(val)))
			continue
		case bytes.Equal(key, keyCurrentTerm):
			v := binary.BigEndian.Uint64(val)
			rep.CurrentTerm = &v
		default:
			v := binary.BigEndian.Uint64(val)
			rep.LastVoteTerm = &v
		}
		if err := dst.Set(key, stored); err != nil {
			return fmt.Errorf("audit node: rebuilding raft.db: %w", err)
		}
	}
	if rep.LastIndex > 0 && rep.CurrentTerm == nil {
		rep.problem(corrupt("stable store", 0, "the log has entries but there is no current term"))
	}
	if rep.LastIndex > rep.SnapIndex && rep.FirstIndex > rep.SnapIndex+1 {
		rep.problem(corrupt("log entry", rep.SnapIndex+1, "the log starts at %d, but the snapshot ends at %d: entries are missing", rep.FirstIndex, rep.SnapIndex))
	}
	var prevTerm uint64
	var batch []*raft.Log
	for idx := rep.FirstIndex; idx > 0 && idx <= rep.LastIndex && len(rep.Problems) == 0; idx++ {
		stored := new(raft.Log)
		if err := bolt.GetLog(idx, stored); err != nil {
			rep.problem(corrupt("log entry", idx, "unreadable: %v", err))
			break
		}
		l := *stored
		if err := openEntry(idx, &l); err != nil {
			rep.problem(asCorruption("log entry", err))
			break
		}
		switch {
		case l.Term < prevTerm:
			rep.problem(corrupt("log entry", idx, "term %d after term %d", l.Term, prevTerm))
		case rep.CurrentTerm != nil && l.Term > *rep.CurrentTerm:
			rep.problem(corrupt("log entry", idx, "term %d is past the current term %d", l.Term, *rep.CurrentTerm))
		case l.Type == raft.LogConfiguration:
			if err := decodeConfiguration(l.Data, &rep.Config); err != nil {
				rep.problem(corrupt("log entry", idx, "configuration: %v", err))
			}
			rep.ConfigKnown = true
		case l.Type == raft.LogCommand && idx > rep.SnapIndex:
			leaf, err := unframeCommand(l.Data)
			if err != nil {
				rep.problem(&CorruptionError{Check: "frame", RaftIndex: idx, LeafIndex: ledger.Log().Size(), Err: err})
				break
			}
			// A refusal here is the same deterministic refusal the FSM made.
			ledger.Apply(leaf)
		}
		prevTerm = l.Term
		if batch = append(batch, stored); len(batch) == 256 || idx == rep.LastIndex {
			if err := dst.StoreLogs(batch); err != nil {
				return fmt.Errorf("audit node: rebuilding raft.db: %w", err)
			}
			batch = batch[:0]
		}
	}
	return nil
}

func asCorruption(check string, err error) *CorruptionError {
	var ce *CorruptionError
	if errors.As(err, &ce) {
		return ce
	}
	return corrupt(check, 0, "%v", err)
}

// decodeConfiguration is raft.DecodeConfiguration without its panic.
func decodeConfiguration(data []byte, out *raft.Configuration) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	*out = raft.DecodeConfiguration(data)
	return nil
}
