package audit

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// Bundle is an offline export: every leaf of the log up to a cosigned
// checkpoint, in order, plus that checkpoint. The verifier replays all
// leaves, so it needs no proofs beyond recomputing the tree.
type Bundle struct {
	Checkpoint []byte   // signed note, cosigned by witnesses
	Leaves     [][]byte // encoded envelopes, index order
}

const (
	bundleVersion = 1
	maxNote       = 1 << 16
	maxLeaves     = 1 << 24
)

// Verification errors.
var (
	ErrRootMismatch = errors.New("audit: bundle entries do not hash to the checkpoint root")
	ErrLineage      = errors.New("audit: model lineage broken")
)

// Marshal encodes the bundle.
func (b *Bundle) Marshal() []byte {
	e := &encoder{}
	e.b = append(e.b, bundleVersion)
	e.bytes(b.Checkpoint)
	e.u64(uint64(len(b.Leaves)))
	for _, l := range b.Leaves {
		e.bytes(l)
	}
	return e.b
}

// UnmarshalBundle strictly decodes a bundle; it does not verify it.
func UnmarshalBundle(data []byte) (*Bundle, error) {
	d := &decoder{b: data}
	v := d.take("bundle.version", 1)
	if d.err != nil {
		return nil, d.err
	}
	if v[0] != bundleVersion {
		return nil, &DecodeError{Field: "bundle.version", Err: fmt.Errorf("version %d: %w", v[0], ErrVersion)}
	}
	b := &Bundle{}
	b.Checkpoint = bytes.Clone(d.take("bundle.checkpoint", d.count("bundle.checkpoint", maxNote)))
	n := d.count("bundle.leaves", maxLeaves)
	for i := 0; i < n && d.err == nil; i++ {
		b.Leaves = append(b.Leaves, bytes.Clone(d.take("bundle.leaf", d.count("bundle.leaf", maxBody+maxCert+128))))
	}
	if d.err != nil {
		return nil, d.err
	}
	if d.off != len(data) {
		return nil, &DecodeError{Field: "bundle.trailer", Offset: d.off, Err: fmt.Errorf("%d trailing bytes: %w", len(data)-d.off, ErrMalformed)}
	}
	if !bytes.Equal(b.Marshal(), data) {
		return nil, &DecodeError{Field: "bundle", Err: ErrNonCanonical}
	}
	return b, nil
}

// Trust is what an offline verifier trusts: the consortium CA for record
// signers and the note keys of log nodes and witnesses, of which Quorum
// distinct ones must have signed the checkpoint.
type Trust struct {
	Roots  *x509.CertPool
	Keys   note.Verifiers
	Quorum int
	// Origin, when set, is the log name the checkpoint must carry.
	Origin string
}

// LineageStep is one record on the path to the verified model, with its
// log index.
type LineageStep struct {
	Index  int64
	Record *Record
}

// Lineage is the result of a successful verification.
type Lineage struct {
	Checkpoint Checkpoint
	Signers    []string
	Study      string
	// StudyRecord is the study-created record: the rules every step was
	// held to (mode, K, t, rounds allowed, approved sites).
	StudyRecord LineageStep
	// KeySetup is the study's key-setup record (nil for a plaintext
	// study): the HE parameters, the collective key and its holders.
	KeySetup *LineageStep
	Initial  Hash
	Steps    []LineageStep // completed rounds in round order, initial model first to last
	// Membership are the admins' exclusions and readmissions of sites in
	// the study (KindMembershipChange), in log order.
	Membership []LineageStep
}

// VerifyBundle checks the checkpoint against trust (k-of-n), replays every
// leaf of every study through a fresh Ledger (the same rules the audit
// nodes apply: submitter signatures and roles, study rules, key setup,
// and the hospitals' signatures on every round), requires the recomputed root to equal the checkpoint's, and walks
// model back through the study's completed rounds to its initial model.
func VerifyBundle(b *Bundle, trust Trust, study string, model Hash) (*Lineage, error) {
	cp, signers, records, err := ReplayBundle(b, trust)
	if err != nil {
		return nil, err
	}
	byOutput := map[Hash]LineageStep{}
	var created, keys *LineageStep
	var members []LineageStep
	for _, step := range records {
		if step.Record.StudyID != study {
			continue
		}
		switch step.Record.Kind {
		case KindStudyCreated:
			created = &step
		case KindKeySetupDone:
			keys = &step
		case KindRoundCompleted:
			byOutput[step.Record.OutputModel] = step
		case KindMembershipChange:
			members = append(members, step)
		}
	}
	if created == nil {
		return nil, fmt.Errorf("%w: study %q not in bundle", ErrUnknownStudy, study)
	}
	initial := created.Record.OutputModel
	var steps []LineageStep
	for cur := model; cur != initial; {
		s, ok := byOutput[cur]
		if !ok {
			return nil, fmt.Errorf("%w: model %x is not the output of any committed round of %q", ErrLineage, cur[:8], study)
		}
		if n := len(steps); n > 0 && s.Record.Round >= steps[n-1].Record.Round {
			return nil, fmt.Errorf("%w: model %x loops back to round %d", ErrLineage, cur[:8], s.Record.Round)
		}
		steps = append(steps, s)
		cur = s.Record.ParentModel
	}
	for i, j := 0, len(steps)-1; i < j; i, j = i+1, j-1 {
		steps[i], steps[j] = steps[j], steps[i]
	}
	return &Lineage{Checkpoint: cp, Signers: signers, Study: study, StudyRecord: *created, KeySetup: keys, Initial: initial, Steps: steps, Membership: members}, nil
}

// ReplayBundle checks the bundle's checkpoint against trust (k-of-n),
// replays every leaf through a fresh Ledger (the rules the audit nodes
// apply) and requires the recomputed root to be the checkpoint's. It
// returns the checkpoint, its signers and every record, in log order.
func ReplayBundle(b *Bundle, trust Trust) (Checkpoint, []string, []LineageStep, error) {
	cp, signers, err := OpenCheckpoint(b.Checkpoint, trust.Keys, trust.Quorum)
	if err != nil {
		return Checkpoint{}, nil, nil, err
	}
	if trust.Origin != "" && cp.Origin != trust.Origin {
		return Checkpoint{}, nil, nil, fmt.Errorf("%w: checkpoint of log %q, trusted log is %q", ErrBadCheckpoint, cp.Origin, trust.Origin)
	}
	if int64(len(b.Leaves)) != cp.Size {
		return Checkpoint{}, nil, nil, fmt.Errorf("%w: %d entries, checkpoint size %d", ErrRootMismatch, len(b.Leaves), cp.Size)
	}
	l := NewLedger(trust.Roots)
	steps := make([]LineageStep, 0, len(b.Leaves))
	for i, leaf := range b.Leaves {
		idx, err := l.Apply(leaf)
		if err != nil {
			return Checkpoint{}, nil, nil, fmt.Errorf("audit: entry %d: %w", i, err)
		}
		if idx != int64(i) {
			return Checkpoint{}, nil, nil, fmt.Errorf("audit: entry %d duplicates entry %d: %w", i, idx, ErrConflict)
		}
		env, _ := UnmarshalEnvelope(leaf) // Apply has decoded it already
		rec, _ := UnmarshalRecord(env.Body)
		steps = append(steps, LineageStep{Index: idx, Record: rec})
	}
	_, root, err := l.Root()
	if err != nil {
		return Checkpoint{}, nil, nil, err
	}
	if root != cp.Root {
		return Checkpoint{}, nil, nil, fmt.Errorf("%w: recomputed %v, checkpoint %v", ErrRootMismatch, root, cp.Root)
	}
	return cp, signers, steps, nil
}

// FindStudy names the study a model belongs to in a bundle: the study whose
// completed round output it, or whose initial model it is. It does not
// verify anything; VerifyBundle does.
func FindStudy(b *Bundle, model Hash) (string, error) {
	for _, leaf := range b.Leaves {
		env, err := UnmarshalEnvelope(leaf)
		if err != nil {
			continue
		}
		rec, err := UnmarshalRecord(env.Body)
		if err != nil {
			continue
		}
		if (rec.Kind == KindRoundCompleted || rec.Kind == KindStudyCreated) && rec.OutputModel == model {
			return rec.StudyID, nil
		}
	}
	return "", fmt.Errorf("%w: model %x is not the output of any record in the bundle", ErrLineage, model[:8])
}
