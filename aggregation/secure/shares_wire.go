package secure

import (
	"fmt"

	"github.com/tuneinsight/lattigo/v5/mhe"
)

// SealPublicKeyShare wraps one party's CKG share in a KindPublicKeyShare
// envelope (round 0, one chunk).
func SealPublicKeyShare(preset Preset, study string, share mhe.PublicKeyGenShare) ([]byte, error) {
	body, err := share.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return Envelope{Kind: KindPublicKeyShare, Preset: preset.ID, Study: study, Round: 0, Index: 0, Count: 1, Body: body}.Marshal()
}

// OpenPublicKeyShare parses a CKG share envelope strictly for the study and
// checks the share's levels and ring degree against the preset.
func OpenPublicKeyShare(b []byte, preset Preset, study string) (share mhe.PublicKeyGenShare, err error) {
	e, err := OpenEnvelope(b, Expect{Kind: KindPublicKeyShare, Preset: preset, Study: study, Round: 0, Count: 1})
	if err != nil {
		return share, err
	}
	params, err := preset.Params()
	if err != nil {
		return share, err
	}
	defer func() {
		if r := recover(); r != nil { // third-party decoder on untrusted bytes
			share, err = mhe.PublicKeyGenShare{}, fmt.Errorf("%w: public-key share body: %v", ErrEnvelope, r)
		}
	}()
	if err := share.UnmarshalBinary(e.Body); err != nil {
		return mhe.PublicKeyGenShare{}, fmt.Errorf("%w: public-key share body: %v", ErrEnvelope, err)
	}
	switch {
	case share.Value.LevelQ() != params.MaxLevelQ() || share.Value.LevelP() != params.MaxLevelP():
		return mhe.PublicKeyGenShare{}, fmt.Errorf("%w: public-key share levels (%d,%d), want (%d,%d)", ErrParams,
			share.Value.LevelQ(), share.Value.LevelP(), params.MaxLevelQ(), params.MaxLevelP())
	case share.Value.Q.N() != params.N():
		return mhe.PublicKeyGenShare{}, fmt.Errorf("%w: public-key share ring degree %d, want %d", ErrParams, share.Value.Q.N(), params.N())
	}
	return share, nil
}
