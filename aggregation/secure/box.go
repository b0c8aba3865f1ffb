package secure

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tuneinsight/lattigo/v5/mhe"
	"golang.org/x/crypto/chacha20poly1305"
)

// ErrBox: a share box that does not open (wrong recipient, tampered, or
// malformed).
var ErrBox = errors.New("secure: share box does not open")

// A share box carries one Shamir share from one party to another through
// the coordinator, which cannot read it: X25519 with a fresh ephemeral key
// per box, HKDF-SHA256, ChaCha20-Poly1305. The header (study, sender and
// recipient points) is authenticated as associated data, so a box cannot be
// replayed into another study or re-addressed.
//
//	"FLSB" | u8 version 1 | u64 from | u64 to | 32-byte ephemeral key | sealed share
const boxMagic = "FLSB"

func boxKey(shared, eph, recipient []byte, study string, from, to uint64) ([]byte, error) {
	info := fmt.Sprintf("fedledger shamir share v1|%s|%d|%d", study, from, to)
	return hkdf.Key(sha256.New, shared, append(append([]byte{}, eph...), recipient...), info, chacha20poly1305.KeySize)
}

// SealShare encrypts share from party `from` to party `to`, whose X25519
// public key is recipient.
func SealShare(recipient *ecdh.PublicKey, study string, from, to uint64, share mhe.ShamirSecretShare) ([]byte, error) {
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	shared, err := eph.ECDH(recipient)
	if err != nil {
		return nil, err
	}
	key, err := boxKey(shared, eph.PublicKey().Bytes(), recipient.Bytes(), study, from, to)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return nil, err
	}
	plain, err := share.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var hdr bytes.Buffer
	hdr.WriteString(boxMagic)
	hdr.WriteByte(1)
	binary.Write(&hdr, binary.BigEndian, from)
	binary.Write(&hdr, binary.BigEndian, to)
	hdr.Write(eph.PublicKey().Bytes())
	ad := append(hdr.Bytes()[:len(hdr.Bytes()):len(hdr.Bytes())], study...)
	// The key is unique per box (fresh ephemeral key), so a zero nonce is safe.
	return aead.Seal(hdr.Bytes(), make([]byte, chacha20poly1305.NonceSize), plain, ad), nil
}

// OpenShare opens a box addressed to party `to` with its X25519 key.
func OpenShare(priv *ecdh.PrivateKey, study string, to uint64, box []byte) (from uint64, share mhe.ShamirSecretShare, err error) {
	const hdrLen = 4 + 1 + 8 + 8 + 32
	if len(box) < hdrLen+chacha20poly1305.Overhead || string(box[:4]) != boxMagic || box[4] != 1 {
		return 0, share, fmt.Errorf("%w: malformed", ErrBox)
	}
	from = binary.BigEndian.Uint64(box[5:])
	if got := binary.BigEndian.Uint64(box[13:]); got != to {
		return 0, share, fmt.Errorf("%w: addressed to party %d, not %d", ErrBox, got, to)
	}
	eph, err := ecdh.X25519().NewPublicKey(box[21:hdrLen])
	if err != nil {
		return 0, share, fmt.Errorf("%w: %v", ErrBox, err)
	}
	shared, err := priv.ECDH(eph)
	if err != nil {
		return 0, share, fmt.Errorf("%w: %v", ErrBox, err)
	}
	key, err := boxKey(shared, eph.Bytes(), priv.PublicKey().Bytes(), study, from, to)
	if err != nil {
		return 0, share, err
	}
	aead, err := chacha20poly1305.New(key)
	if err != nil {
		return 0, share, err
	}
	ad := append(append([]byte{}, box[:hdrLen]...), study...)
	plain, err := aead.Open(nil, make([]byte, chacha20poly1305.NonceSize), box[hdrLen:], ad)
	if err != nil {
		return 0, share, fmt.Errorf("%w: authentication failed (wrong recipient, study or tampered)", ErrBox)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: share body: %v", ErrBox, r)
		}
	}()
	if err := share.UnmarshalBinary(plain); err != nil {
		return 0, share, fmt.Errorf("%w: share body: %v", ErrBox, err)
	}
	return from, share, nil
}
