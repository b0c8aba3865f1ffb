package cluster

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// This file holds the integrity formats of a node's stored state, each
// covering what the one below it cannot:
//
//   - Command frame: the leader proposes every record as a frame, a
//     version byte, the SHA-256 of the record and the record. It travels in
//     the entry's Data through Raft to every replica's log and FSM, which
//     verifies it before applying (end to end: proposer to every FSM).
//   - Entry seal: each replica's store seals every log entry it writes with
//     a SHA-256 over the entry's index, term, type, data and extensions,
//     kept in the stored entry's Extensions and removed on read. It catches
//     what the frame cannot: a flipped term, type or index, a damaged
//     configuration or no-op entry.
//   - Stable seal: the current term and the last vote carry a SHA-256 of
//     their key and value, so a flipped bit cannot make a node forget a
//     vote or go back in term.
//   - Snapshot header: the first bytes of a snapshot's state.bin are a
//     SHA-256 of the snapshot's index, term and configuration, so damage to
//     meta.json (which hashicorp's file store does not checksum; its CRC
//     covers state.bin only) is caught too.
//
// None of these formats is compatible with stores written without them: a
// node reports such a store as corrupt.

// ErrCorrupt: a node's stored state failed an integrity check. The
// *CorruptionError that wraps it says what and where.
var ErrCorrupt = errors.New("audit: corrupt replica state")

// CorruptionError is one failed integrity check of a node's state.
type CorruptionError struct {
	// Check names what failed: "raft.db" (the file as a whole), "log entry",
	// "stable store", "snapshot", "tree", "frame".
	Check string
	// RaftIndex is the Raft log index concerned (0: none).
	RaftIndex uint64
	// LeafIndex is the Merkle leaf index concerned (-1: unknown).
	LeafIndex int64
	Err       error
}

func (e *CorruptionError) Error() string {
	where := ""
	if e.RaftIndex > 0 {
		where = fmt.Sprintf(" at raft index %d", e.RaftIndex)
	}
	if e.LeafIndex >= 0 {
		where += fmt.Sprintf(" (leaf %d)", e.LeafIndex)
	}
	return fmt.Sprintf("audit: corrupt %s%s: %v", e.Check, where, e.Err)
}

func (e *CorruptionError) Unwrap() []error { return []error{ErrCorrupt, e.Err} }

func corrupt(check string, raftIndex uint64, format string, args ...any) *CorruptionError {
	return &CorruptionError{Check: check, RaftIndex: raftIndex, LeafIndex: -1, Err: fmt.Errorf(format, args...)}
}

const (
	frameVersion    = 0xF1
	frameHeaderSize = 1 + sha256.Size
	sealVersion     = 0xE1
	sealSize        = 1 + sha256.Size
	snapHeaderMagic = 0xD1
	snapHeaderSize  = 1 + sha256.Size
)

// frameCommand wraps a record for raft.Apply.
func frameCommand(leaf []byte) []byte {
	sum := sha256.Sum256(leaf)
	out := make([]byte, 0, frameHeaderSize+len(leaf))
	out = append(out, frameVersion)
	out = append(out, sum[:]...)
	return append(out, leaf...)
}

// unframeCommand verifies a command entry's frame and returns the record.
func unframeCommand(data []byte) ([]byte, error) {
	if len(data) < frameHeaderSize {
		return nil, fmt.Errorf("command of %d bytes is shorter than its frame header", len(data))
	}
	if data[0] != frameVersion {
		return nil, fmt.Errorf("command frame version %#x, want %#x", data[0], frameVersion)
	}
	leaf := data[frameHeaderSize:]
	if sum := sha256.Sum256(leaf); !bytes.Equal(sum[:], data[1:frameHeaderSize]) {
		return nil, fmt.Errorf("record SHA-256 %x… does not match its frame's %x…", sum[:6], data[1:7])
	}
	return leaf, nil
}

func writeUint(h hash.Hash, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

func writeBytes(h hash.Hash, b []byte) {
	writeUint(h, uint64(len(b)))
	h.Write(b)
}

// entrySum covers everything Raft reads of an entry but AppendedAt (a
// leader's wall-clock note that nothing depends on).
func entrySum(l *raft.Log, ext []byte) []byte {
	h := sha256.New()
	h.Write([]byte("fedledger raft entry v1\x00"))
	writeUint(h, l.Index)
	writeUint(h, l.Term)
	h.Write([]byte{byte(l.Type)})
	writeBytes(h, l.Data)
	writeBytes(h, ext)
	return h.Sum(nil)
}

// sealEntry returns a copy of l as the store keeps it.
func sealEntry(l *raft.Log) *raft.Log {
	c := *l
	c.Extensions = make([]byte, 0, sealSize+len(l.Extensions))
	c.Extensions = append(c.Extensions, sealVersion)
	c.Extensions = append(c.Extensions, entrySum(l, l.Extensions)...)
	c.Extensions = append(c.Extensions, l.Extensions...)
	return &c
}

// openEntry verifies an entry read from the store under key and removes
// its seal in place.
func openEntry(key uint64, l *raft.Log) error {
	if l.Index != key {
		return corrupt("log entry", key, "stored under index %d but says it is entry %d", key, l.Index)
	}
	if len(l.Extensions) < sealSize || l.Extensions[0] != sealVersion {
		return corrupt("log entry", key, "entry has no seal")
	}
	ext := l.Extensions[sealSize:]
	if len(ext) == 0 {
		ext = nil
	}
	if !bytes.Equal(entrySum(l, ext), l.Extensions[1:sealSize]) {
		return corrupt("log entry", key, "entry (term %d, type %s, %d bytes of data) does not match its seal", l.Term, l.Type, len(l.Data))
	}
	l.Extensions = ext
	return nil
}

func stableSum(key, val []byte) []byte {
	h := sha256.New()
	h.Write([]byte("fedledger raft stable v1\x00"))
	writeBytes(h, key)
	writeBytes(h, val)
	return h.Sum(nil)
}

// openStable verifies a sealed stable-store value and returns it.
func openStable(key, stored []byte) ([]byte, error) {
	if len(stored) < sha256.Size {
		return nil, corrupt("stable store", 0, "value of %q is %d bytes, shorter than its seal", key, len(stored))
	}
	val := stored[:len(stored)-sha256.Size]
	if !bytes.Equal(stableSum(key, val), stored[len(val):]) {
		return nil, corrupt("stable store", 0, "value of %q does not match its seal", key)
	}
	return val, nil
}

// sealedStore is the node's Raft log and stable store: raft-boltdb's bbolt
// file, with every entry and value sealed on write and verified on read. A
// read that fails verification is reported to onCorrupt and returned as an
// error, so Raft never sees damaged state.
type sealedStore struct {
	bolt      *raftboltdb.BoltStore
	onCorrupt func(*CorruptionError)
}

var (
	_ raft.LogStore    = (*sealedStore)(nil)
	_ raft.StableStore = (*sealedStore)(nil)
)

func (s *sealedStore) report(err error) error {
	var ce *CorruptionError
	if errors.As(err, &ce) && s.onCorrupt != nil {
		s.onCorrupt(ce)
	}
	return err
}

func (s *sealedStore) FirstIndex() (uint64, error) { return s.bolt.FirstIndex() }
func (s *sealedStore) LastIndex() (uint64, error)  { return s.bolt.LastIndex() }
func (s *sealedStore) DeleteRange(min, max uint64) error {
	return s.bolt.DeleteRange(min, max)
}
func (s *sealedStore) Close() error { return s.bolt.Close() }

func (s *sealedStore) GetLog(index uint64, l *raft.Log) error {
	// msgpack leaves a field it does not find untouched: start from zero,
	// so a damaged field name reads as a missing field, not a stale one.
	*l = raft.Log{}
	if err := s.bolt.GetLog(index, l); err != nil {
		if errors.Is(err, raft.ErrLogNotFound) {
			return err
		}
		return s.report(corrupt("log entry", index, "undecodable: %v", err))
	}
	return s.report(openEntry(index, l))
}

func (s *sealedStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *sealedStore) StoreLogs(logs []*raft.Log) error {
	sealed := make([]*raft.Log, len(logs))
	for i, l := range logs {
		sealed[i] = sealEntry(l)
	}
	return s.bolt.StoreLogs(sealed)
}

func (s *sealedStore) Set(key, val []byte) error {
	return s.bolt.Set(key, append(bytes.Clone(val), stableSum(key, val)...))
}

// Get returns raftboltdb.ErrKeyNotFound ("not found", which Raft tests by
// its text) for a missing key.
func (s *sealedStore) Get(key []byte) ([]byte, error) {
	stored, err := s.bolt.Get(key)
	if err != nil {
		return nil, err
	}
	val, err := openStable(key, stored)
	if err != nil {
		return nil, s.report(err)
	}
	return val, nil
}

func (s *sealedStore) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

func (s *sealedStore) GetUint64(key []byte) (uint64, error) {
	val, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(val) != 8 {
		return 0, s.report(corrupt("stable store", 0, "value of %q is %d bytes, want 8", key, len(val)))
	}
	return binary.BigEndian.Uint64(val), nil
}

// snapshotSum covers what meta.json says about a snapshot and Raft relies
// on: its index, term, version and configuration.
func snapshotSum(version raft.SnapshotVersion, index, term uint64, conf raft.Configuration, confIndex uint64) []byte {
	h := sha256.New()
	h.Write([]byte("fedledger snapshot v1\x00"))
	writeUint(h, uint64(version))
	writeUint(h, index)
	writeUint(h, term)
	writeUint(h, confIndex)
	writeUint(h, uint64(len(conf.Servers)))
	for _, s := range conf.Servers {
		writeUint(h, uint64(s.Suffrage))
		writeBytes(h, []byte(s.ID))
		writeBytes(h, []byte(s.Address))
	}
	return h.Sum(nil)
}

// sealedSnapshots is hashicorp's file snapshot store with a header at the
// start of every state.bin that binds meta.json to it. Open verifies the
// CRC (the file store does) and the header, and hides the header: Raft
// and the FSM read and stream the FSM's bytes only.
type sealedSnapshots struct {
	*raft.FileSnapshotStore
}

func (s sealedSnapshots) Create(version raft.SnapshotVersion, index, term uint64, conf raft.Configuration, confIndex uint64, trans raft.Transport) (raft.SnapshotSink, error) {
	sink, err := s.FileSnapshotStore.Create(version, index, term, conf, confIndex, trans)
	if err != nil {
		return nil, err
	}
	if _, err := sink.Write(append([]byte{snapHeaderMagic}, snapshotSum(version, index, term, conf, confIndex)...)); err != nil {
		sink.Cancel()
		return nil, err
	}
	return sink, nil
}

func (s sealedSnapshots) Open(id string) (*raft.SnapshotMeta, io.ReadCloser, error) {
	meta, rc, err := s.FileSnapshotStore.Open(id)
	if err != nil {
		return nil, nil, corrupt("snapshot", 0, "snapshot %s: %v", id, err)
	}
	var hdr [snapHeaderSize]byte
	if _, err := io.ReadFull(rc, hdr[:]); err != nil {
		rc.Close()
		return nil, nil, corrupt("snapshot", meta.Index, "snapshot %s has no header: %v", id, err)
	}
	if hdr[0] != snapHeaderMagic || !bytes.Equal(hdr[1:], snapshotSum(meta.Version, meta.Index, meta.Term, meta.Configuration, meta.ConfigurationIndex)) {
		rc.Close()
		return nil, nil, corrupt("snapshot", meta.Index, "snapshot %s: meta.json (index %d, term %d) does not match the header of its state.bin", id, meta.Index, meta.Term)
	}
	m := *meta
	m.Size -= snapHeaderSize
	return &m, rc, nil
}
