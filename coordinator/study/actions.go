package study

import (
	"log/slog"
	"time"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/model"
)

// Action is something the driver must do.
type Action interface{ action() }

// Messages the driver sends to a site (Send.Msg).
type (
	// TrainTask: train round Round from Parent and submit before Deadline.
	TrainTask struct {
		Round    uint64
		Parent   Object
		Deadline time.Time
	}
	// KeySetupTask: take part in key setup with these participants.
	KeySetupTask struct {
		Participants []Participant
		Deadline     time.Time
	}
	// PeerKeys relays every participant's signed key share.
	PeerKeys struct{ Keys []PeerKey }
	// ShareBox relays a sealed Shamir share to its recipient.
	ShareBox struct {
		From, To uint64
		Box      []byte
	}
	// SketchTask: sign a sketch of this site's contribution, listed in
	// Contributions, against Aggregate.
	SketchTask struct {
		Round         uint64
		Parent        audit.Hash
		Contributions []Contribution
		Aggregate     Object
		Deadline      time.Time
	}
	// BoundTask: give, for the Active set of Shamir points, this key
	// holder's projection shares of every listed contribution onto the
	// round's direction (secure.RoundDirection of the manifest's digest).
	BoundTask struct {
		Round         uint64
		Parent        Object
		Contributions []Contribution
		Active        []uint64
		Deadline      time.Time
	}
	// DecryptTask: give a decryption share of Aggregate, the sum of
	// Contributions (checked against the contributors' Sketches), for the
	// active set of Shamir points.
	DecryptTask struct {
		Round         uint64
		Parent        audit.Hash
		Contributions []Contribution
		Aggregate     Object
		Sketches      []audit.Sketch
		Active        []uint64
		Deadline      time.Time
	}
	// CountersignTask: recompute the round's model from what the
	// coordinator used and sign its outcome if it matches.
	CountersignTask struct {
		Round           uint64
		Parent          Object
		Contributions   []Contribution
		Aggregate       Object
		Shares          []SignedShare
		OptimizerBefore Object // zero: the initial state
		OptimizerAfter  Object
		Output          Object
		Deadline        time.Time
	}
	// EvaluateTask: evaluate Model on the local test split.
	EvaluateTask struct {
		Round uint64
		Model Object
	}
	// Finished: the study is over.
	Finished struct {
		Rounds  int
		Model   audit.Hash // zero when the study failed
		Failure string
	}
)

// Participant is a key holder and its Shamir point.
type Participant struct {
	Site  string
	Point uint64
}

// PeerKey is one participant's signed key share with its certificate.
type PeerKey struct {
	Site      string
	Cert      []byte
	Point     uint64
	X25519    []byte
	PkShare   []byte
	Signature []byte
}

// Contribution is a signed contribution with its payload's size.
type Contribution struct {
	audit.Contribution
	Size uint64
}

// SignedShare is a decryptor's signed share payload.
type SignedShare struct {
	Share audit.DecryptionShare
	Size  uint64
}

// Actions.
type (
	// Send a message to a site (dropped if it is not connected).
	Send struct {
		To  string
		Msg any
	}
	// Store an accepted payload (an update, a decryption share) so that
	// the driver's aggregation and the hospitals can fetch it by hash.
	Store struct{ Payload []byte }
	// ComputeCollectiveKey from every participant's public-key share, in
	// the participants' order. Answered by CollectiveKeyDone.
	ComputeCollectiveKey struct {
		Participants []Participant
		PkShares     [][]byte
	}
	// SaveKeySetup keeps the key setup (with the collective key the driver
	// computed) on disk before its record is appended. Answered by
	// KeySetupSaved.
	SaveKeySetup struct{ KeySetup *KeySetup }
	// Project opens every listed contribution's projection onto the
	// round's direction from the key holders' shares (Shares[holder][site],
	// for the Active points). Answered by Projected.
	Project struct {
		Round   uint64
		Parent  Object
		Updates []Contribution
		Active  []uint64
		Shares  map[string]map[string][]uint64
	}
	// Aggregate adds the round's updates, in site order. Answered by
	// Aggregated.
	Aggregate struct {
		Round   uint64
		Updates []Contribution
	}
	// Combine decrypts the aggregate with the shares (secure; in site
	// order) or reads the plaintext aggregate, checks its total weight is
	// Weight, and applies the server optimiser from Parent and
	// OptimizerBefore. Answered by Combined.
	Combine struct {
		Round           uint64
		Parent          Object
		OptimizerBefore Object
		Aggregate       Object
		Shares          []audit.Hash
		Weight          uint64
	}
	// Record appends a record to the audit log and waits for its commit.
	// Answered by Recorded.
	Record struct {
		KeySetup *KeySetup    // a key-setup record, or
		Round    *RoundReport // a round record
	}
	// Log a line.
	Log struct {
		Level slog.Level
		Msg   string
		Attrs []slog.Attr
	}
	// Observe a measurement: a phase's duration, a counter's increment.
	Observe struct {
		Metric Metric
		Label  string
		Value  float64
	}
	// Done: the study is over; Err is nil when it succeeded. The machine
	// takes no more events.
	Done struct {
		Result *Result
		Err    error
	}
)

func (Send) action()                 {}
func (Store) action()                {}
func (ComputeCollectiveKey) action() {}
func (SaveKeySetup) action()         {}
func (Aggregate) action()            {}
func (Project) action()              {}
func (Combine) action()              {}
func (Record) action()               {}
func (Log) action()                  {}
func (Observe) action()              {}
func (Done) action()                 {}

// RoundReport is what happened in one round: what its record says.
type RoundReport struct {
	Round  int
	Failed bool
	Reason string
	// Parent is the round's starting model, Model its output (the
	// parent when the round failed).
	Parent audit.Hash
	Model  audit.Hash
	// Contributions are the accepted, signed updates, in site order.
	Contributions []audit.Contribution
	Contributors  []string
	// Dropped lists the sites given the task that did not contribute.
	Dropped []string
	// Aggregate is the SHA-256 of the aggregate that was decrypted
	// (secure) or read (plaintext).
	Aggregate audit.Hash
	// DecryptionShares are the signed shares that opened it (secure).
	DecryptionShares []audit.DecryptionShare
	Decryptors       []string
	// Countersignatures vouch for the outcome; Certificates are the
	// signers' certificates where the log does not hold them (plaintext).
	Countersignatures []audit.Countersignature
	Certificates      [][]byte
	// HEParams and CollectiveKey are the key setup's (secure studies):
	// every round record carries them, so no record of a secure study
	// reads as unencrypted.
	HEParams        string
	CollectiveKey   audit.Hash
	OptimizerBefore audit.Hash
	OptimizerAfter  audit.Hash
	// TrainLoss is the sample-weighted mean local training loss the
	// contributors reported; ParentTest their metrics of the parent model
	// on their test splits (reported by them, not vouched for).
	TrainLoss  float64
	ParentTest map[string]model.Metrics
	// PersonalTest are the personalising sites' personal models on their
	// test splits after the round's training (reported, not vouched for).
	PersonalTest map[string]model.Metrics
	// Evaluations are the contributors' signed evaluation statements, in
	// site order: the same figures, as each hospital's word.
	Evaluations []audit.Evaluation
	// Projections are the norm check's opened projections, by site (the
	// contributors' and the excluded ones'), and Excluded the sites whose
	// contributions were past the bound and left out (bounded studies).
	Projections map[string]float64
	Excluded    []string
	// Flags are the anomaly detector's flags on this round's signals, by
	// site (detect.go); the coordinator's word, on the record.
	Flags    []Flag
	Duration time.Duration
}

// Result is the outcome of a study.
type Result struct {
	Study  string
	Model  Object
	Rounds []RoundReport
	// FinalTest holds each site's metrics of the final model on its test
	// split, as it reported them; FinalPersonal those of the personal
	// models the personalising sites made from it.
	FinalTest, FinalPersonal map[string]model.Metrics
}

// Metric names what an Observe measures; the driver maps each to its
// Prometheus series.
type Metric string

const (
	MetricConnected         Metric = "connected"         // gauge: live hospitals
	MetricRefusals          Metric = "refusals"          // counter: hospitals that refused the study
	MetricUpdates           Metric = "updates"           // counter by result (accepted, rejected)
	MetricUpdateBytes       Metric = "update_bytes"      // counter: accepted update bytes
	MetricShares            Metric = "shares"            // counter by result
	MetricSketches          Metric = "sketches"          // counter by result (accepted, rejected, missing)
	MetricProjections       Metric = "projections"       // counter by result (within, excluded, rejected)
	MetricAnomalies         Metric = "anomalies"         // counter by site: anomaly flags
	MetricCountersignatures Metric = "countersignatures" // counter by result
	MetricRounds            Metric = "rounds"            // counter by outcome
	MetricRoundSeconds      Metric = "round_seconds"     // histogram: a round's duration
	MetricPhaseSeconds      Metric = "phase_seconds"     // histogram by phase
	MetricKeySetupSeconds   Metric = "key_setup_seconds" // gauge: the key setup's duration
)
