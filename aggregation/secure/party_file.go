package secure

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"slices"

	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"
)

// The secret share file, mode 0600, only ever at the hospital:
//
//	"FLSK\x02" | u8 len, preset id | u64 point | u32 t
//	| u32 len, secret-key share (Lattigo binary)
//	| u32 n, then n × (u64 sender point | u32 len, Shamir share (Lattigo binary)), by point
const partyMagic = "FLSK\x02"

// Save writes the party's secret material (secret-key share and the Shamir
// shares it received) to path with mode 0600.
func (p *Party) Save(path string) error {
	if p.shares == nil {
		return fmt.Errorf("%w: key setup not finished", ErrInput)
	}
	sk, err := p.sk.MarshalBinary()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString(partyMagic)
	b.WriteByte(byte(len(p.preset.ID)))
	b.WriteString(p.preset.ID)
	binary.Write(&b, binary.BigEndian, uint64(p.point))
	binary.Write(&b, binary.BigEndian, uint32(p.threshold))
	binary.Write(&b, binary.BigEndian, uint32(len(sk)))
	b.Write(sk)
	from := make([]uint64, 0, len(p.shares))
	for f := range p.shares {
		from = append(from, f)
	}
	slices.Sort(from)
	binary.Write(&b, binary.BigEndian, uint32(len(from)))
	for _, f := range from {
		sh, err := p.shares[f].MarshalBinary()
		if err != nil {
			return err
		}
		binary.Write(&b, binary.BigEndian, f)
		binary.Write(&b, binary.BigEndian, uint32(len(sh)))
		b.Write(sh)
	}
	if err := fsutil.WriteFileChecked(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("secure: secret share file: %w", err)
	}
	return nil
}

// LoadParty reads a party saved with Save, refusing a file readable by
// anyone but its owner.
func LoadParty(path string) (p *Party, err error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secure: secret share file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secure: secret share file %s has mode %v; it must be 0600", path, fi.Mode().Perm())
	}
	b, err := fsutil.ReadFileChecked(path)
	if err != nil {
		return nil, fmt.Errorf("secure: secret share file: %w", err)
	}
	bad := fmt.Errorf("%w: secret share file %s is malformed", ErrInput, path)
	if len(b) >= len(partyMagic) && string(b[:4]) == "FLSK" && string(b[:len(partyMagic)]) != partyMagic {
		return nil, fmt.Errorf("%w: secret share file %s is of an earlier format, for a retired parameter set; run a new key setup", ErrParams, path)
	}
	r := bytes.NewReader(b)
	magic := make([]byte, len(partyMagic))
	if _, err := r.Read(magic); err != nil || string(magic) != partyMagic {
		return nil, bad
	}
	n, err := r.ReadByte()
	if err != nil || int(n) > r.Len() {
		return nil, bad
	}
	id := make([]byte, n)
	r.Read(id)
	preset, err := LookupPreset(string(id))
	if err != nil {
		return nil, err
	}
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	var hdr struct {
		Point uint64
		T     uint32
	}
	if binary.Read(r, binary.BigEndian, &hdr) != nil || hdr.Point == 0 || hdr.T < 1 {
		return nil, bad
	}
	chunk := func() ([]byte, bool) {
		var l uint32
		if binary.Read(r, binary.BigEndian, &l) != nil || int(l) > r.Len() {
			return nil, false
		}
		v := make([]byte, l)
		r.Read(v)
		return v, true
	}
	defer func() {
		if rec := recover(); rec != nil { // third-party decoder
			p, err = nil, bad
		}
	}()
	skb, ok := chunk()
	sk := rlwe.NewSecretKey(params)
	if !ok || sk.UnmarshalBinary(skb) != nil {
		return nil, bad
	}
	var count uint32
	if binary.Read(r, binary.BigEndian, &count) != nil || count < hdr.T || count > 1<<12 {
		return nil, bad
	}
	shares := map[uint64]mhe.ShamirSecretShare{}
	for i := uint32(0); i < count; i++ {
		var from uint64
		if binary.Read(r, binary.BigEndian, &from) != nil {
			return nil, bad
		}
		shb, ok := chunk()
		var sh mhe.ShamirSecretShare
		if !ok || sh.UnmarshalBinary(shb) != nil {
			return nil, bad
		}
		if _, dup := shares[from]; dup {
			return nil, bad
		}
		shares[from] = sh
	}
	if r.Len() != 0 {
		return nil, bad
	}
	party := &Party{preset: preset, params: params, point: mhe.ShamirPublicPoint(hdr.Point), sk: sk}
	if err := party.SetThresholdShares(int(hdr.T), shares); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return party, nil
}
