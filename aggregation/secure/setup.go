package secure

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
)

// Setup is a study's public key material, all that the coordinator ever
// holds and what every hospital keeps next to its secret share: the
// parameter set, the participants' Shamir points, the collective public
// key and its hash, and the model's size (which fixes how many ciphertexts
// a contribution has). With it the coordinator checks and adds
// contributions and combines decryption shares; a countersigning hospital
// combines the same shares to recompute the round's model.
type Setup struct {
	study   string
	preset  Preset
	points  map[string]uint64
	dim     int
	pk      *rlwe.PublicKey
	keyHash [32]byte
	count   int
}

// CheckKeyShare opens a participant's public-key share envelope for the
// study's preset: what the coordinator checks before relaying it.
func CheckKeyShare(presetID, study string, pkShare []byte) error {
	preset, err := LookupPreset(presetID)
	if err != nil {
		return err
	}
	_, err = OpenPublicKeyShare(pkShare, preset, study)
	return err
}

// NewSetup computes the collective public key from every participant's
// public-key share envelope, given in the order of order (the sites of
// points), for a model of dim parameters.
func NewSetup(study, presetID string, crs []byte, points map[string]uint64, order []string, shares [][]byte, dim int) (*Setup, error) {
	preset, err := LookupPreset(presetID)
	if err != nil {
		return nil, err
	}
	if len(order) != len(points) || len(shares) != len(order) {
		return nil, fmt.Errorf("%w: %d shares for %d participants", ErrInput, len(shares), len(points))
	}
	opened := make([]mhe.PublicKeyGenShare, len(shares))
	for i, b := range shares {
		if _, ok := points[order[i]]; !ok {
			return nil, fmt.Errorf("%w: %q has no Shamir point", ErrInput, order[i])
		}
		if opened[i], err = OpenPublicKeyShare(b, preset, study); err != nil {
			return nil, fmt.Errorf("public-key share of %q: %w", order[i], err)
		}
	}
	pk, err := CollectivePublicKey(preset, crs, opened)
	if err != nil {
		return nil, err
	}
	return newSetup(study, preset, points, dim, pk)
}

func newSetup(study string, preset Preset, points map[string]uint64, dim int, pk *rlwe.PublicKey) (*Setup, error) {
	s := &Setup{study: study, preset: preset, points: points, dim: dim, pk: pk}
	var err error
	if s.keyHash, err = PublicKeyHash(pk); err != nil {
		return nil, err
	}
	if s.count, err = CiphertextCount(preset, dim); err != nil {
		return nil, err
	}
	return s, nil
}

// Study is the study the key belongs to.
func (s *Setup) Study() string { return s.study }

// Preset is the parameter set's id.
func (s *Setup) Preset() string { return s.preset.ID }

// KeyHash is the SHA-256 of the collective public key.
func (s *Setup) KeyHash() [32]byte { return s.keyHash }

// Points maps every key holder to its Shamir point.
func (s *Setup) Points() map[string]uint64 { return s.points }

// Dim is the length of the vectors the study aggregates.
func (s *Setup) Dim() int { return s.dim }

// Count is the number of ciphertexts (chunks) in each payload of the study.
func (s *Setup) Count() int { return s.count }

// ContributionSize is the exact size of a contribution payload.
func (s *Setup) ContributionSize() int64 {
	n, _ := PayloadSize(KindContribution, s.preset, s.study, s.count)
	return n
}

// AggregateSize is the exact size of an aggregate payload.
func (s *Setup) AggregateSize() int64 {
	n, _ := PayloadSize(KindAggregate, s.preset, s.study, s.count)
	return n
}

// ShareSize is the exact size of one party's decryption-share payload.
func (s *Setup) ShareSize() int64 {
	n, _ := PayloadSize(KindDecryptionShare, s.preset, s.study, s.count)
	return n
}

func (s *Setup) expect(kind byte, round uint64) Expect {
	return Expect{Kind: kind, Preset: s.preset, Study: s.study, Round: round, Count: uint32(s.count)}
}

// CheckContribution opens a contribution payload for round strictly: the
// envelopes of the study's preset, the right number, each a well-formed
// ciphertext.
func (s *Setup) CheckContribution(round uint64, payload []byte) error {
	_, err := OpenPolys(payload, s.expect(KindContribution, round))
	return err
}

// CheckShare opens a decryption-share payload for round strictly.
func (s *Setup) CheckShare(round uint64, payload []byte) error {
	_, err := OpenPolys(payload, s.expect(KindDecryptionShare, round))
	return err
}

// Aggregate adds n contributions of round, which fetch returns one at a
// time (so memory holds about two of them whatever n is), and returns the
// sealed aggregate payload.
func (s *Setup) Aggregate(round uint64, n int, fetch func(i int) ([]byte, error)) ([]byte, error) {
	acc, err := NewAccumulator(s.preset, s.count)
	if err != nil {
		return nil, err
	}
	for i := 0; i < n; i++ {
		p, err := fetch(i)
		if err != nil {
			return nil, err
		}
		polys, err := OpenPolys(p, s.expect(KindContribution, round))
		if err != nil {
			return nil, fmt.Errorf("contribution %d: %w", i, err)
		}
		if err := acc.Add(polys); err != nil {
			return nil, fmt.Errorf("contribution %d: %w", i, err)
		}
	}
	if acc.Sum() == nil {
		return nil, fmt.Errorf("%w: nothing to aggregate", ErrInput)
	}
	return SealPayload(KindAggregate, s.preset, s.study, round, acc.Sum())
}

// Combine decrypts an aggregate of round with threshold parties'
// decryption-share payloads: the decoded sum vector and the total weight
// (the last encrypted value). The coordinator combines to publish the
// round's model; each countersigning hospital combines the same signed
// shares to check it.
func (s *Setup) Combine(round uint64, aggregate []byte, shares [][]byte, threshold int) (sum []float64, weight float64, err error) {
	agg, err := OpenPolys(aggregate, s.expect(KindAggregate, round))
	if err != nil {
		return nil, 0, fmt.Errorf("aggregate: %w", err)
	}
	opened := make([][]ring.Poly, len(shares))
	for i, p := range shares {
		if opened[i], err = OpenPolys(p, s.expect(KindDecryptionShare, round)); err != nil {
			return nil, 0, fmt.Errorf("decryption share %d: %w", i, err)
		}
	}
	return Decrypt(s.preset, agg, opened, threshold, s.dim)
}

// The setup file: what the coordinator (state/keys) and a hospital (next to
// its secret share) keep of a key setup. Canonical, strictly decoded.
//
//	"FLSU\x01" | u8 len, preset id | u16 len, study | u64 dim
//	| u32 n, then n × (u8 len, site | u64 point), sites in order
//	| u32 len, collective public key (Lattigo binary)
const setupMagic = "FLSU\x01"

// The collective key is stored as its raw coefficients, in a layout fixed
// by the preset (2 polynomials, each every Q modulus then every P modulus,
// N coefficients each, u64 big endian), never through Lattigo's own
// decoder: its length fields, if damaged on disk, could ask for any amount
// of memory. Decoding allocates the preset's key and checks every
// coefficient is below its modulus.
func keyBytes(pk *rlwe.PublicKey) []byte {
	var b []byte
	for _, p := range pk.Value {
		for _, poly := range []ring.Poly{p.Q, p.P} {
			for _, row := range poly.Coeffs {
				for _, c := range row {
					b = binary.BigEndian.AppendUint64(b, c)
				}
			}
		}
	}
	return b
}

func keyFromBytes(preset Preset, b []byte) (*rlwe.PublicKey, error) {
	params, err := preset.Params()
	if err != nil {
		return nil, err
	}
	pk := rlwe.NewPublicKey(params)
	q, p := params.RingQ().ModuliChain(), []uint64(nil)
	if params.PCount() > 0 {
		p = params.RingP().ModuliChain()
	}
	off := 0
	for _, v := range pk.Value {
		for k, poly := range []ring.Poly{v.Q, v.P} {
			moduli := [][]uint64{q, p}[k]
			for i, row := range poly.Coeffs {
				if len(b)-off < 8*len(row) {
					return nil, fmt.Errorf("%w: setup file: collective key truncated", ErrInput)
				}
				for j := range row {
					c := binary.BigEndian.Uint64(b[off:])
					if c >= moduli[i] {
						return nil, fmt.Errorf("%w: setup file: collective key coefficient out of range", ErrInput)
					}
					row[j] = c
					off += 8
				}
			}
		}
	}
	if off != len(b) {
		return nil, fmt.Errorf("%w: setup file: collective key of %d bytes, the preset's is %d", ErrInput, len(b), off)
	}
	return pk, nil
}

// MarshalBinary encodes the setup.
func (s *Setup) MarshalBinary() ([]byte, error) {
	pk := keyBytes(s.pk)
	if len(s.preset.ID) > 255 || len(s.study) > math.MaxUint16 {
		return nil, fmt.Errorf("%w: preset or study id too long", ErrInput)
	}
	b := append([]byte(setupMagic), byte(len(s.preset.ID)))
	b = append(b, s.preset.ID...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(s.study)))
	b = append(b, s.study...)
	b = binary.BigEndian.AppendUint64(b, uint64(s.dim))
	sites := make([]string, 0, len(s.points))
	for site := range s.points {
		if len(site) > 255 {
			return nil, fmt.Errorf("%w: site id too long", ErrInput)
		}
		sites = append(sites, site)
	}
	slices.Sort(sites)
	b = binary.BigEndian.AppendUint32(b, uint32(len(sites)))
	for _, site := range sites {
		b = append(b, byte(len(site)))
		b = append(b, site...)
		b = binary.BigEndian.AppendUint64(b, s.points[site])
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(pk)))
	return append(b, pk...), nil
}

// UnmarshalSetup decodes a setup file, recomputing the key hash from the
// key itself.
func UnmarshalSetup(b []byte) (s *Setup, err error) {
	bad := func(what string) (*Setup, error) {
		return nil, fmt.Errorf("%w: setup file: %s", ErrInput, what)
	}
	r := bytes.NewReader(b)
	magic := make([]byte, len(setupMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != setupMagic {
		return bad("bad magic")
	}
	str := func(n int) (string, bool) {
		v := make([]byte, n)
		_, err := io.ReadFull(r, v)
		return string(v), err == nil
	}
	n8, err := r.ReadByte()
	if err != nil {
		return bad("truncated")
	}
	presetID, ok := str(int(n8))
	if !ok {
		return bad("truncated preset")
	}
	preset, err := LookupPreset(presetID)
	if err != nil {
		return nil, err
	}
	var n16 uint16
	var dim uint64
	if binary.Read(r, binary.BigEndian, &n16) != nil {
		return bad("truncated")
	}
	study, ok := str(int(n16))
	if !ok || binary.Read(r, binary.BigEndian, &dim) != nil || dim == 0 || dim > 1<<26 {
		return bad("bad study or dimension")
	}
	var count uint32
	if binary.Read(r, binary.BigEndian, &count) != nil || count == 0 || count > 1<<12 {
		return bad("bad participant count")
	}
	points := map[string]uint64{}
	for i := uint32(0); i < count; i++ {
		l, err := r.ReadByte()
		if err != nil {
			return bad("truncated participant")
		}
		site, ok := str(int(l))
		var p uint64
		if !ok || binary.Read(r, binary.BigEndian, &p) != nil || p == 0 || points[site] != 0 {
			return bad("bad participant")
		}
		points[site] = p
	}
	var pkLen uint32
	if binary.Read(r, binary.BigEndian, &pkLen) != nil || int(pkLen) != r.Len() {
		return bad("bad key length")
	}
	pk, err := keyFromBytes(preset, b[len(b)-int(pkLen):])
	if err != nil {
		return nil, err
	}
	if s, err = newSetup(study, preset, points, int(dim), pk); err != nil {
		return nil, err
	}
	if again, err := s.MarshalBinary(); err != nil || !bytes.Equal(again, b) {
		return bad("non-canonical encoding")
	}
	return s, nil
}

// Digest is the SHA-256 of the setup file, for integrity checks of stored
// copies.
func (s *Setup) Digest() ([32]byte, error) {
	b, err := s.MarshalBinary()
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// Project opens the projection of a contribution payload of round onto dir
// from t key holders' projection shares (ProjectionShare): one scalar,
// ⟨n·Δ, u⟩ for the weighted update the hospital encrypted.
func (s *Setup) Project(round uint64, payload []byte, shares [][]uint64, threshold int, dir *Direction) (float64, error) {
	polys, err := OpenPolys(payload, s.expect(KindContribution, round))
	if err != nil {
		return 0, err
	}
	return Project(s.preset, polys, shares, threshold, dir)
}
