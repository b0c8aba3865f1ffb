package heart

import (
	"crypto/md5"
	"encoding/hex"
	"testing"
)

// The digests published with the dataset (README.md): a corrupted or
// edited copy fails here.
func TestFilesMatchPublishedDigests(t *testing.T) {
	want := map[string]string{
		"cleveland":   "2d91a8ff69cfd9616aa47b59d6f843db",
		"hungary":     "22e96bee155b5973568101c93b3705f6",
		"switzerland": "9a87f7577310b3917730d06ba9349e20",
		"va":          "4249d03ca7711e84f4444768c9426170",
	}
	for h, sum := range want {
		b, err := File(h)
		if err != nil {
			t.Fatal(err)
		}
		got := md5.Sum(b)
		if hex.EncodeToString(got[:]) != sum {
			t.Errorf("%s: md5 %x, want %s", h, got, sum)
		}
	}
	if _, err := File("mayo"); err == nil {
		t.Fatal("unknown hospital accepted")
	}
	if _, err := FS.ReadFile("README.md"); err != nil {
		t.Fatal("attribution README not embedded")
	}
}
