package cluster

import (
	"encoding/binary"
	"fmt"
	"os"
)

// bbolt v1.3 page layout, as bolt's page.go and bucket.go define it (native
// byte order): a 16-byte header (id u64, flags u16, count u16, overflow
// u32), then count 16-byte elements. A branch element is (pos u32, ksize
// u32, child pgid u64), a leaf element (flags u32, pos u32, ksize u32,
// vsize u32); pos is relative to the element, and a leaf's value follows
// its key. A bucket is a leaf value flagged 0x01: (root pgid u64,
// sequence u64), followed, when root is 0, by an inline page.
const (
	bboltBranch     = 0x01
	bboltLeaf       = 0x02
	bboltFreelist   = 0x10
	bboltBucketLeaf = 0x01
	bboltNoFreelist = ^uint64(0)
)

// checkPages walks raft.db's page tree from the newest meta page with
// bounds-checked reads of the file's bytes, and fails on a page id or an
// element offset that points outside its page or the file. bbolt follows
// them through unsafe pointers into its memory map, so a damaged one
// faults the process (a fatal error, beyond recover) instead of returning
// an error; this walk runs first. Call it after checkMetaPages.
func checkPages(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ne := binary.NativeEndian
	ps := uint64(ne.Uint32(b[24:]))
	type meta struct{ root, freelist, hwm, txid uint64 }
	read := func(i uint64) meta {
		o := i*ps + 16
		return meta{root: ne.Uint64(b[o+16:]), freelist: ne.Uint64(b[o+32:]), hwm: ne.Uint64(b[o+40:]), txid: ne.Uint64(b[o+48:])}
	}
	m := read(0)
	if m1 := read(1); m1.txid > m.txid {
		m = m1
	}
	if m.hwm < 2 || m.hwm*ps > uint64(len(b)) {
		return fmt.Errorf("bbolt high-water mark of %d pages, the file has %d", m.hwm, uint64(len(b))/ps)
	}
	seen := map[uint64]bool{}
	span := func(id uint64) ([]byte, error) {
		if id < 2 || id >= m.hwm {
			return nil, fmt.Errorf("bbolt page id %d out of range [2, %d)", id, m.hwm)
		}
		if seen[id] {
			return nil, fmt.Errorf("bbolt page %d referenced twice", id)
		}
		seen[id] = true
		p := b[id*ps:]
		if got := ne.Uint64(p); got != id {
			return nil, fmt.Errorf("bbolt page %d: header says page %d", id, got)
		}
		end := (id + 1 + uint64(ne.Uint32(p[12:]))) * ps
		if end > m.hwm*ps {
			return nil, fmt.Errorf("bbolt page %d: overflow past the high-water mark", id)
		}
		return b[id*ps : end], nil
	}
	var walk func(p []byte, depth int) error
	walk = func(p []byte, depth int) error {
		if depth > 64 || len(p) < 16 {
			return fmt.Errorf("bbolt page tree deeper than 64 or a page shorter than its header")
		}
		flags, count := ne.Uint16(p[8:]), uint64(ne.Uint16(p[10:]))
		if 16+16*count > uint64(len(p)) {
			return fmt.Errorf("bbolt page %d: %d elements do not fit", ne.Uint64(p), count)
		}
		for i := uint64(0); i < count; i++ {
			e := 16 + 16*i
			switch {
			case flags&bboltBranch != 0:
				pos, ksize, child := uint64(ne.Uint32(p[e:])), uint64(ne.Uint32(p[e+4:])), ne.Uint64(p[e+8:])
				if e+pos+ksize > uint64(len(p)) {
					return fmt.Errorf("bbolt branch page %d: element %d's key is outside the page", ne.Uint64(p), i)
				}
				cp, err := span(child)
				if err == nil {
					err = walk(cp, depth+1)
				}
				if err != nil {
					return err
				}
			case flags&bboltLeaf != 0:
				fl, pos, ksize, vsize := ne.Uint32(p[e:]), uint64(ne.Uint32(p[e+4:])), uint64(ne.Uint32(p[e+8:])), uint64(ne.Uint32(p[e+12:]))
				end := e + pos + ksize + vsize
				if end > uint64(len(p)) {
					return fmt.Errorf("bbolt leaf page %d: element %d is outside the page", ne.Uint64(p), i)
				}
				if fl&bboltBucketLeaf == 0 {
					continue
				}
				v := p[e+pos+ksize : end]
				if len(v) < 16 {
					return fmt.Errorf("bbolt bucket header of %d bytes", len(v))
				}
				var err error
				if root := ne.Uint64(v); root == 0 {
					err = walk(v[16:], depth+1)
				} else if cp, serr := span(root); serr != nil {
					err = serr
				} else {
					err = walk(cp, depth+1)
				}
				if err != nil {
					return err
				}
			default:
				return fmt.Errorf("bbolt page %d has flags %#x, neither branch nor leaf", ne.Uint64(p), flags)
			}
		}
		return nil
	}
	rp, err := span(m.root)
	if err == nil {
		err = walk(rp, 0)
	}
	if err != nil || m.freelist == bboltNoFreelist {
		return err
	}
	fp, err := span(m.freelist)
	if err != nil {
		return err
	}
	if ne.Uint16(fp[8:])&bboltFreelist == 0 {
		return fmt.Errorf("bbolt freelist page %d has flags %#x", m.freelist, ne.Uint16(fp[8:]))
	}
	first, count := uint64(0), uint64(ne.Uint16(fp[10:]))
	if count == 0xFFFF {
		first, count = 1, ne.Uint64(fp[16:])
	}
	if count > uint64(len(fp)) || 16+8*(first+count) > uint64(len(fp)) {
		return fmt.Errorf("bbolt freelist of %d ids does not fit its page", count)
	}
	for i := first; i < first+count; i++ {
		if id := ne.Uint64(fp[16+8*i:]); id < 2 || id >= m.hwm {
			return fmt.Errorf("bbolt freelist names page %d, out of range [2, %d)", id, m.hwm)
		}
	}
	return nil
}
