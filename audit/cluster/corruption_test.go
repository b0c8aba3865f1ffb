package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/fedledger/fedledger/audit/audittest"
)

// copyDir copies a data directory (files and subdirectories).
func copyDir(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// resetDir replaces dir's contents with a copy of src.
func resetDir(t testing.TB, src, dir string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	copyDir(t, src, dir)
}

// dumpStore renders what Raft would read from a raft.db: every log entry
// (index, term, type, data, extensions; not AppendedAt, which nothing
// reads) and every stable value, as raw bytes before any seal is checked.
// Two files with the same dump hold the same state; an error (or panic)
// means the file is not readable as a store.
func dumpStore(path string) (dump string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return "", err
	}
	var keys [][]byte
	var out strings.Builder
	err = db.View(func(tx *bbolt.Tx) error {
		logs, conf := tx.Bucket([]byte("logs")), tx.Bucket([]byte("conf"))
		if logs == nil || conf == nil {
			return errors.New("missing bucket")
		}
		logs.ForEach(func(k, _ []byte) error { keys = append(keys, bytes.Clone(k)); return nil })
		return conf.ForEach(func(k, v []byte) error { fmt.Fprintf(&out, "conf %x=%x\n", k, v); return nil })
	})
	db.Close()
	if err != nil {
		return "", err
	}
	store, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{ReadOnly: true, Timeout: time.Second}})
	if err != nil {
		return "", err
	}
	defer store.Close()
	for _, k := range keys {
		var l raft.Log
		if len(k) != 8 {
			return "", fmt.Errorf("key %x", k)
		}
		idx := uint64(0)
		for _, b := range k {
			idx = idx<<8 | uint64(b)
		}
		if err := store.GetLog(idx, &l); err != nil {
			return "", err
		}
		fmt.Fprintf(&out, "log %d: index %d term %d type %d data %x ext %x\n", idx, l.Index, l.Term, l.Type, l.Data, l.Extensions)
	}
	return out.String(), nil
}

// corruptionCounts reads fedledger_audit_corruption_detected_total by check.
func corruptionCounts(t testing.TB, n *Node) map[string]float64 {
	t.Helper()
	mfs, err := n.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "fedledger_audit_corruption_detected_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "check" {
					out[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}

// studyWithRounds appends the study and rounds 1..n through the leader and
// takes a cosigned checkpoint, so every node has witness state.
func (c *testCluster) studyWithRounds(n int) {
	c.t.Helper()
	study, _ := c.L.Log().Leaf(0)
	lead := c.leader()
	if _, err := c.nodes[lead].Append(context.Background(), study); err != nil {
		c.t.Fatal(err)
	}
	for r := 1; r <= n; r++ {
		if _, err := c.appendVia(lead, c.Coord, c.Round(uint64(r), audittest.Model(byte(r-1)), audittest.Model(byte(r)), "site-a", "site-b")); err != nil {
			c.t.Fatalf("round %d: %v", r, err)
		}
	}
	if _, _, err := c.nodes[lead].Checkpoint(context.Background()); err != nil {
		c.t.Fatal(err)
	}
	c.converged()
}

// convergedWith waits until node i has the tree (size and root) and the
// study's latest output of node j, and fails with why not.
func (c *testCluster) convergedWith(i, j int, timeout time.Duration) error {
	var mine, theirs string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		state := func(n *Node) string {
			size, root, _ := n.FSM().Ledger().Root()
			out, round, err := n.FSM().Ledger().LatestOutput("heart")
			return fmt.Sprintf("size %d root %x… output %x… round %d (%v) state %s", size, root[:4], out[:2], round, err, n.State())
		}
		if mine, theirs = state(c.nodes[i]), state(c.nodes[j]); mine == theirs {
			return nil
		}
	}
	return fmt.Errorf("node %d: %s; node %d: %s", i, mine, j, theirs)
}

// TestFlippedBitsInAFollowerStore flips one bit at each of 100 offsets
// spread over a follower's raft.db, then at 100 offsets spread over the
// pages of it that hold data (20 and 20 with -short), each time in a fresh
// copy of the follower's stopped data directory, and restarts it. There
// must be no case where the node starts on changed state without saying
// so: either the start-up check detected the damage (counted, the file
// moved to evidence/) and the node caught up from the quorum, or the flip
// changed nothing Raft reads (a free page, slack in a page: the store's
// logical dump is unchanged). Either way it ends with its peers' tree and
// latest output.
func TestFlippedBitsInAFollowerStore(t *testing.T) {
	offsets := 100
	if testing.Short() {
		offsets = 20
	}
	start := time.Now()
	c := newCluster(t, 3, nil)
	c.studyWithRounds(12)
	lead := c.leader()
	f, peer := (lead+1)%3, lead
	c.stop(f)
	pristine := t.TempDir()
	copyDir(t, c.dirs[f], pristine)
	file, err := os.ReadFile(filepath.Join(pristine, raftFile))
	if err != nil {
		t.Fatal(err)
	}
	want, err := dumpStore(filepath.Join(pristine, raftFile))
	if err != nil {
		t.Fatal(err)
	}
	// The whole file, and the pages that are not all zeros.
	size := int64(len(file))
	page := int64(os.Getpagesize())
	var used []int64
	for p := int64(0); p < size; p += page {
		if slices.ContainsFunc(file[p:min(p+page, size)], func(b byte) bool { return b != 0 }) {
			for o := p; o < min(p+page, size); o++ {
				used = append(used, o)
			}
		}
	}
	var whole, inUse []int64
	for k := 0; k < offsets; k++ {
		stride := size / int64(offsets)
		whole = append(whole, int64(k)*stride+int64(k*131)%stride)
		ustride := len(used) / offsets
		inUse = append(inUse, used[k*ustride+(k*131)%ustride])
	}
	for _, set := range []struct {
		name    string
		offsets []int64
	}{{"whole file", whole}, {"pages holding data", inUse}} {
		var detected, benign int
		byCheck := map[string]int{}
		for k, off := range set.offsets {
			bit := byte(1) << (k % 8)
			counts := c.flipAndRestart(t, f, peer, pristine, want, off, bit)
			if len(counts) == 0 {
				benign++
			}
			if len(counts) > 0 {
				detected++
			}
			for ch := range counts {
				byCheck[ch]++
			}
		}
		t.Logf("%s: %d offsets over %d bytes of a %d-byte raft.db holding %d entries: %d detected %v, %d benign (store unchanged)",
			set.name, len(set.offsets), map[bool]int64{true: size, false: int64(len(used))}[set.name == "whole file"], size, strings.Count(want, "log "), detected, byCheck, benign)
	}
	t.Logf("%v in all", time.Since(start).Round(time.Millisecond))
}

// flipAndRestart resets follower f's data directory to pristine, flips bit
// at off in its raft.db, starts it and checks the outcome (see
// TestFlippedBitsInAFollowerStore); it returns what was detected.
func (c *testCluster) flipAndRestart(t *testing.T, f, peer int, pristine, want string, off int64, bit byte) map[string]float64 {
	t.Helper()
	db := filepath.Join(c.dirs[f], raftFile)
	resetDir(t, pristine, c.dirs[f])
	b, _ := os.ReadFile(db)
	b[off] ^= bit
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, dumpErr := dumpStore(db)
	changed := dumpErr != nil || got != want

	c.start(f, false)
	defer c.stop(f)
	counts := corruptionCounts(t, c.nodes[f])
	evidence, _ := filepath.Glob(filepath.Join(c.dirs[f], evidenceDir, "*", raftFile))
	switch {
	case len(counts) > 0:
		if len(evidence) != 1 {
			t.Fatalf("offset %d: detected (%v) but raft.db is not in evidence/: %v", off, counts, evidence)
		}
	case changed:
		t.Fatalf("offset %d (bit %#x): the store changed (%v) and the node started without detecting it", off, bit, firstDiff(want, got, dumpErr))
	default:
		if st := c.nodes[f].State(); st != stateHealthy {
			t.Fatalf("offset %d: benign flip, node state %s", off, st)
		}
	}
	if err := c.convergedWith(f, peer, 20*time.Second); err != nil {
		t.Fatalf("offset %d (bit %#x, detected %v): not converged: %v", off, bit, counts, err)
	}
	// Caught up: the vote guard is lifted and reads are served again.
	for deadline := time.Now().Add(10 * time.Second); c.nodes[f].Recovering() || c.nodes[f].State() != stateHealthy; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("offset %d: converged but %s", off, c.nodes[f].State())
		}
	}
	return counts
}

func firstDiff(want, got string, err error) string {
	if err != nil {
		return err.Error()
	}
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range min(len(w), len(g)) {
		if w[i] != g[i] {
			return fmt.Sprintf("line %d: %.120s -> %.120s", i, w[i], g[i])
		}
	}
	return fmt.Sprintf("%d lines -> %d", len(w), len(g))
}
