package study

import (
	"crypto/ed25519"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
)

// Event is something that happened: a hospital's message (already
// decoded, and checked by the driver for what only it can check), the
// result of a work action, or time passing.
type Event interface{ event() }

// Identity is who sent a message: the site, and the identity key and DER
// certificate of its verified mTLS connection.
type Identity struct {
	Site string
	Key  ed25519.PublicKey
	Cert []byte
}

// Events from hospitals and admins.
type (
	// Tick: time passed.
	Tick struct{}
	// Joined: a site accepted the study on a new connection.
	Joined struct{ Site string }
	// Left: a site's connection ended.
	Left struct{ Site string }
	// Refused: a site declined a task of Round (0: the study or key
	// setup), and why.
	Refused struct {
		Site   string
		Round  uint64
		Reason string
	}
	// StartRequested: an admin starts a study waiting for it.
	StartRequested struct{ By string }
	// ExclusionChanged: the audit log holds an admin's exclusion of a site
	// from the study's rounds from Exclusion.From on (Excluded), or its
	// readmission from that round (not Excluded).
	ExclusionChanged struct {
		Exclusion audit.Exclusion
		Excluded  bool
	}
	// KeyShareIn: a participant's signed key share; the driver has checked
	// the public-key share opens under the study's parameters.
	KeyShareIn struct {
		From      Identity
		Point     uint64
		X25519    []byte
		PkShare   []byte
		Signature []byte
	}
	// ShareBoxIn: a sealed Shamir share, from one participant to another.
	ShareBoxIn struct {
		Site     string
		From, To uint64
		Box      []byte
	}
	// KeyDoneIn: a participant computed the collective key and signed the
	// key setup.
	KeyDoneIn struct {
		Site          string
		CollectiveKey audit.Hash
		Signature     []byte
	}
	// UpdateIn: a complete update; the driver has checked its payload
	// (plaintext encoding or ciphertexts of the study's key) and hash.
	UpdateIn struct {
		From   Identity
		Round  uint64
		Parent audit.Hash
		// Update names the payload; its Site is From.Site.
		Update     audit.Contribution
		Payload    []byte
		Train      *model.Metrics
		ParentTest *model.Metrics
		// PersonalTest: the site's personal model on its test split.
		PersonalTest *model.Metrics
		// Evaluation: the site's signed evaluation statement (nil: none).
		Evaluation *audit.Evaluation
	}
	// ShareIn: a decryption-share payload; the driver has checked it opens
	// under the study's parameters.
	ShareIn struct {
		Site      string
		Round     uint64
		Aggregate audit.Hash
		Share     audit.DecryptionShare
		Payload   []byte
	}
	// SketchIn: a contributor's signed sketch of its contribution against
	// Aggregate; the driver has checked its size for the study's preset.
	SketchIn struct {
		Round     uint64
		Aggregate audit.Hash
		// Sketch names its Site, the sender.
		Sketch audit.Sketch
	}
	// BoundIn: a key holder's projection shares for the norm check, by
	// contributor site.
	BoundIn struct {
		From   string
		Round  uint64
		Shares map[string][]uint64
	}
	// Projected: the driver's opened projections, by contributor site.
	Projected struct {
		Round       uint64
		Projections map[string]float64
		Err         error
	}
	// CountersignIn: a hospital's countersignature of a round's outcome.
	CountersignIn struct {
		From      Identity
		Round     uint64
		Output    audit.Hash
		Signature []byte
	}
	// EvalIn: a site's metrics of a model on its test split.
	EvalIn struct {
		Site  string
		Model audit.Hash
		Test  model.Metrics
		// Personal: the site's personal model made from Model, on the same
		// test split (nil: the site does not personalise).
		Personal *model.Metrics
	}
)

// Results of work actions.
type (
	// CollectiveKeyDone answers ComputeCollectiveKey: the key's hash, or
	// why the shares did not make one.
	CollectiveKeyDone struct {
		Hash audit.Hash
		Err  error
	}
	// KeySetupSaved answers SaveKeySetup.
	KeySetupSaved struct{ Err error }
	// Aggregated answers Aggregate: the aggregate object.
	Aggregated struct {
		Round     uint64
		Aggregate Object
		Err       error
	}
	// Combined answers Combine: the new model and optimiser state, or why
	// the round cannot produce one (Err names it; the round fails).
	Combined struct {
		Round     uint64
		Output    Object
		Optimizer Object
		Err       error
	}
	// Recorded answers Record: Err nil when the log committed the record;
	// Retry when the log was unavailable and the same record may be
	// appended again.
	Recorded struct {
		Err   error
		Retry bool
	}
)

func (Tick) event()              {}
func (Joined) event()            {}
func (Left) event()              {}
func (Refused) event()           {}
func (StartRequested) event()    {}
func (ExclusionChanged) event()  {}
func (KeyShareIn) event()        {}
func (ShareBoxIn) event()        {}
func (KeyDoneIn) event()         {}
func (UpdateIn) event()          {}
func (ShareIn) event()           {}
func (SketchIn) event()          {}
func (BoundIn) event()           {}
func (Projected) event()         {}
func (CountersignIn) event()     {}
func (EvalIn) event()            {}
func (CollectiveKeyDone) event() {}
func (KeySetupSaved) event()     {}
func (Aggregated) event()        {}
func (Combined) event()          {}
func (Recorded) event()          {}
