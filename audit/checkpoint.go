package audit

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Checkpoint is a tree head in the C2SP tlog-checkpoint format:
// "<origin>\n<size>\n<base64 root>\n", signed as a note (sumdb/note).
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Checkpoint and witness errors.
var (
	ErrBadCheckpoint = errors.New("audit: malformed checkpoint")
	ErrInconsistent  = errors.New("audit: checkpoint is not consistent with the last cosigned one")
	ErrQuorum        = errors.New("audit: checkpoint lacks a quorum of trusted signatures")
)

// String is the checkpoint body (the signed note text).
func (c Checkpoint) String() string {
	return fmt.Sprintf("%s\n%d\n%s\n", c.Origin, c.Size, base64.StdEncoding.EncodeToString(c.Root[:]))
}

// ParseCheckpoint strictly parses a checkpoint body. Extension lines after
// the root are not accepted.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return Checkpoint{}, fmt.Errorf("%w: want 3 newline-terminated lines", ErrBadCheckpoint)
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" || strings.ContainsAny(c.Origin, " \t\r") {
		return Checkpoint{}, fmt.Errorf("%w: origin %q", ErrBadCheckpoint, c.Origin)
	}
	n, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("%w: size %q", ErrBadCheckpoint, lines[1])
	}
	c.Size = n
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != len(c.Root) {
		return Checkpoint{}, fmt.Errorf("%w: root %q", ErrBadCheckpoint, lines[2])
	}
	copy(c.Root[:], root)
	if c.String() != text {
		return Checkpoint{}, fmt.Errorf("%w: non-canonical", ErrBadCheckpoint)
	}
	return c, nil
}

// SignCheckpoint signs c with the node's note signer.
func SignCheckpoint(c Checkpoint, s note.Signer) ([]byte, error) {
	return note.Sign(&note.Note{Text: c.String()}, s)
}

// OpenCheckpoint verifies a signed checkpoint and requires at least k
// distinct trusted signers among known. It returns the checkpoint and the
// names of the trusted signers.
func OpenCheckpoint(msg []byte, known note.Verifiers, k int) (Checkpoint, []string, error) {
	n, err := note.Open(msg, known)
	if err != nil {
		return Checkpoint{}, nil, fmt.Errorf("audit: checkpoint signature: %w", err)
	}
	if err := strictSignatures(msg); err != nil {
		return Checkpoint{}, nil, err
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, nil, err
	}
	seen := map[string]bool{}
	var names []string
	for _, s := range n.Sigs {
		if !seen[s.Name] {
			seen[s.Name] = true
			names = append(names, s.Name)
		}
	}
	if len(names) < k {
		return Checkpoint{}, names, fmt.Errorf("%w: %d of %d required (%v)", ErrQuorum, len(names), k, names)
	}
	return c, names, nil
}

// Witness cosigns checkpoints of one log. Its state (the last checkpoint it
// cosigned and the evidence it kept) lives outside the Raft FSM: a log that
// rewrites history cannot make its own witness forget what it signed.
type Witness struct {
	mu       sync.Mutex
	signer   note.Signer
	logKeys  note.Verifiers
	last     *Checkpoint
	evidence [][]byte
}

// NewWitness returns a witness signing with s that accepts checkpoints
// signed by any of logKeys.
func NewWitness(s note.Signer, logKeys note.Verifiers) *Witness {
	return &Witness{signer: s, logKeys: logKeys}
}

// Cosign adds the witness's signature to a signed checkpoint, provided
// proof shows it extends the last checkpoint this witness cosigned (the
// first checkpoint is accepted as is). A properly signed checkpoint that
// fails the consistency check is kept as evidence and refused with
// ErrInconsistent; nothing else changes the witness state.
func (w *Witness) Cosign(signed []byte, proof tlog.TreeProof) ([]byte, error) {
	n, err := note.Open(signed, w.logKeys)
	if err != nil {
		return nil, fmt.Errorf("audit: witness: %w", err)
	}
	if err := strictSignatures(signed); err != nil {
		return nil, err
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last != nil {
		var bad error
		switch {
		case c.Origin != w.last.Origin:
			return nil, fmt.Errorf("%w: origin %q, want %q", ErrBadCheckpoint, c.Origin, w.last.Origin)
		case c.Size < w.last.Size:
			bad = fmt.Errorf("size %d shrinks from %d", c.Size, w.last.Size)
		case c.Size == w.last.Size:
			if c.Root != w.last.Root {
				bad = fmt.Errorf("same size %d, different root", c.Size)
			}
		case w.last.Size > 0:
			if err := CheckConsistency(proof, w.last.Size, w.last.Root, c.Size, c.Root); err != nil {
				bad = err
			}
		}
		if bad != nil {
			w.evidence = append(w.evidence, bytes.Clone(signed))
			return nil, fmt.Errorf("%w: %w", ErrInconsistent, bad)
		}
	}
	out, err := note.Sign(n, w.signer)
	if err != nil {
		return nil, fmt.Errorf("audit: witness sign: %w", err)
	}
	w.last = &c
	return out, nil
}

// RestoreWitness returns a witness that resumes from saved state: the last
// checkpoint it cosigned (nil for none) and the evidence it kept.
func RestoreWitness(s note.Signer, logKeys note.Verifiers, last *Checkpoint, evidence [][]byte) *Witness {
	w := NewWitness(s, logKeys)
	if last != nil {
		c := *last
		w.last = &c
	}
	for _, e := range evidence {
		w.evidence = append(w.evidence, bytes.Clone(e))
	}
	return w
}

// Last is the last checkpoint this witness cosigned.
func (w *Witness) Last() (Checkpoint, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		return Checkpoint{}, false
	}
	return *w.last, true
}

// Evidence returns copies of the signed checkpoints refused as inconsistent.
func (w *Witness) Evidence() [][]byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([][]byte, len(w.evidence))
	for i, e := range w.evidence {
		out[i] = bytes.Clone(e)
	}
	return out
}

// strictSignatures rejects signature lines whose base64 is not canonical
// (note.Open tolerates non-zero padding bits), so a signed checkpoint has
// exactly one accepted encoding.
func strictSignatures(msg []byte) error {
	i := bytes.LastIndex(msg, []byte("\n\n"))
	if i < 0 {
		return fmt.Errorf("%w: no signature block", ErrBadCheckpoint)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(msg[i+2:]), "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			return fmt.Errorf("%w: signature line %q", ErrBadCheckpoint, line)
		}
		if _, err := base64.StdEncoding.Strict().DecodeString(f[2]); err != nil {
			return fmt.Errorf("%w: signature by %q is not canonical base64", ErrBadCheckpoint, f[1])
		}
	}
	return nil
}

// splitNote separates a signed note into its text and its signature lines,
// without verifying anything.
func splitNote(msg []byte) (text string, sigs []string, err error) {
	i := bytes.LastIndex(msg, []byte("\n\n"))
	if i < 0 || !bytes.HasSuffix(msg, []byte("\n")) {
		return "", nil, fmt.Errorf("%w: no signature block", ErrBadCheckpoint)
	}
	text = string(msg[:i+1])
	for _, l := range strings.Split(strings.TrimSuffix(string(msg[i+2:]), "\n"), "\n") {
		if !strings.HasPrefix(l, "\u2014 ") {
			return "", nil, fmt.Errorf("%w: signature line %q", ErrBadCheckpoint, l)
		}
		sigs = append(sigs, l)
	}
	return text, sigs, nil
}

// mergeSignatures combines signed notes over the same text into one note
// carrying every distinct signature line.
func mergeSignatures(notes [][]byte) ([]byte, error) {
	if len(notes) == 0 {
		return nil, fmt.Errorf("%w: nothing to merge", ErrBadCheckpoint)
	}
	text, _, err := splitNote(notes[0])
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var lines []string
	for _, n := range notes {
		t, sigs, err := splitNote(n)
		if err != nil {
			return nil, err
		}
		if t != text {
			return nil, fmt.Errorf("%w: cosigned text differs from the checkpoint", ErrBadCheckpoint)
		}
		for _, l := range sigs {
			if !seen[l] {
				seen[l] = true
				lines = append(lines, l)
			}
		}
	}
	return []byte(text + "\n" + strings.Join(lines, "\n") + "\n"), nil
}

// signerNames lists the distinct key names of signature lines.
func signerNames(lines []string) []string {
	var out []string
	for _, l := range lines {
		if f := strings.Fields(l); len(f) == 3 && !slices.Contains(out, f[1]) {
			out = append(out, f[1])
		}
	}
	return out
}

// MergeCosignatures combines signed notes over the same checkpoint text
// (the leader's and its witnesses') into one note carrying every distinct
// signature, and names its signers. It verifies nothing; OpenCheckpoint
// does.
func MergeCosignatures(notes [][]byte) (merged []byte, signers []string, err error) {
	if merged, err = mergeSignatures(notes); err != nil {
		return nil, nil, err
	}
	_, lines, err := splitNote(merged)
	if err != nil {
		return nil, nil, err
	}
	return merged, signerNames(lines), nil
}

// PeekCheckpoint parses the checkpoint a signed note carries without
// verifying any signature: for a node reading its own, already verified,
// checkpoint.
func PeekCheckpoint(signed []byte) (Checkpoint, error) {
	text, _, err := splitNote(signed)
	if err != nil {
		return Checkpoint{}, err
	}
	return ParseCheckpoint(text)
}
