package fsutil

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// checkedMagic opens every file WriteFileChecked writes. It is one line,
// so the file stays readable in a terminal, and it starts with '#', so a
// parser handed the raw file (JSON, YAML) fails loudly instead of reading
// a file whose integrity nobody checked.
const checkedMagic = "#fedledger-checked v1 sha256:"

// ErrCorrupt is the error of a checked file whose content does not match
// its checksum, or that has no valid checksum header. Test with errors.Is;
// the *CorruptError names the file.
var ErrCorrupt = errors.New("fsutil: file is corrupt")

// CorruptError is a checked file that failed verification.
type CorruptError struct {
	Path   string
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("fsutil: %s is corrupt: %s", e.Path, e.Reason)
}

func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// WriteFileChecked writes data like WriteFileAtomic, preceded by one
// header line holding the SHA-256 of data, so that ReadFileChecked
// detects any change to the file (a flipped bit, a truncation, an edit).
func WriteFileChecked(path string, data []byte, perm os.FileMode) error {
	return WriteFileAtomic(path, encodeChecked(data), perm)
}

func encodeChecked(data []byte) []byte {
	sum := sha256.Sum256(data)
	out := make([]byte, 0, len(checkedMagic)+2*len(sum)+1+len(data))
	out = append(out, checkedMagic...)
	out = hex.AppendEncode(out, sum[:])
	out = append(out, '\n')
	return append(out, data...)
}

// ReadFileChecked reads a file written by WriteFileChecked and returns
// its data. A file that is missing returns an error satisfying
// errors.Is(err, os.ErrNotExist); one that fails verification returns a
// *CorruptError naming it.
func ReadFileChecked(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data, reason := decodeChecked(b)
	if reason != "" {
		return nil, &CorruptError{Path: path, Reason: reason}
	}
	return data, nil
}

func decodeChecked(b []byte) ([]byte, string) {
	if !bytes.HasPrefix(b, []byte(checkedMagic)) {
		return nil, "no checksum header (not written by WriteFileChecked, or its first line is damaged)"
	}
	rest := b[len(checkedMagic):]
	nl := bytes.IndexByte(rest, '\n')
	if nl != 2*sha256.Size {
		return nil, "malformed checksum header"
	}
	var want [sha256.Size]byte
	if _, err := hex.Decode(want[:], rest[:nl]); err != nil || !bytes.Equal(rest[:nl], []byte(hex.EncodeToString(want[:]))) {
		return nil, "malformed checksum header"
	}
	data := rest[nl+1:]
	if got := sha256.Sum256(data); got != want {
		return nil, fmt.Sprintf("content SHA-256 %x…, header says %x…", got[:6], want[:6])
	}
	return data, ""
}
