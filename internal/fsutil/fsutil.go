// Package fsutil holds the file routines that state which must survive a
// crash goes through: [WriteFileAtomic] (a crash leaves the old file or the
// new one, never a torn mix) and the checked format on top of it,
// [WriteFileChecked] and [ReadFileChecked] (a SHA-256 header line, so a
// flipped bit, a truncation or a hand edit is reported as a
// [*CorruptError] naming the file instead of being parsed).
//
// It does not decide what a caller does with a corrupt file; a state file
// whose loss is dangerous (a witness's memory, key material) should make
// its process refuse to start rather than reset it.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces path with data so that a crash leaves either the
// old file or the new one, never a torn mix: it writes a temporary file
// beside path with mode perm, fsyncs it, renames it over path, and fsyncs
// the directory so the rename itself is durable.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, perm)
	if err != nil {
		return err
	}
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
