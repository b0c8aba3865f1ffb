package secure

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"

	"github.com/fedledger/fedledger/internal/fsutil"
	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"
)

// Save writes the party's secret material (secret-key share and Shamir
// share) to path with mode 0600. It lives only at the hospital.
func (p *Party) Save(path string) error {
	if p.shamir == nil {
		return fmt.Errorf("%w: key setup not finished", ErrInput)
	}
	sk, err := p.sk.MarshalBinary()
	if err != nil {
		return err
	}
	sh, err := p.shamir.MarshalBinary()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.WriteString("FLSK\x01")
	b.WriteByte(byte(len(p.preset.ID)))
	b.WriteString(p.preset.ID)
	binary.Write(&b, binary.BigEndian, uint64(p.point))
	binary.Write(&b, binary.BigEndian, uint32(p.threshold))
	binary.Write(&b, binary.BigEndian, uint32(len(sk)))
	b.Write(sk)
	b.Write(sh)
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
	if len(b) < 6 || string(b[:5]) != "FLSK\x01" {
		return nil, bad
	}
	n := int(b[5])
	if len(b) < 6+n+16 {
		return nil, bad
	}
	preset, err := LookupPreset(string(b[6 : 6+n]))
	if err != nil {
		return nil, err
	}
	rest := b[6+n:]
	point, t, skLen := binary.BigEndian.Uint64(rest), binary.BigEndian.Uint32(rest[8:]), binary.BigEndian.Uint32(rest[12:])
	rest = rest[16:]
	if int(skLen) > len(rest) {
		return nil, bad
	}
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, bad
		}
	}()
	sk := rlwe.NewSecretKey(params)
	if err := sk.UnmarshalBinary(rest[:skLen]); err != nil {
		return nil, bad
	}
	var sh mhe.ShamirSecretShare
	if err := sh.UnmarshalBinary(rest[skLen:]); err != nil {
		return nil, bad
	}
	return &Party{preset: preset, params: params, point: mhe.ShamirPublicPoint(point), sk: sk, shamir: &sh, threshold: int(t)}, nil
}
