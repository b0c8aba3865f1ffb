package coordinator

import (
	"errors"
	"os"
	"testing"
)

func TestStore(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	sum, err := s.Put([]byte("model bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := s.Put([]byte("model bytes")); again != sum {
		t.Fatal("same bytes, different hash")
	}
	b, err := s.Get(sum)
	if err != nil || string(b) != "model bytes" {
		t.Fatalf("get: %q %v", b, err)
	}
	if _, err := s.Get([32]byte{1}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing: %v", err)
	}
	// Corrupt the file on disk: the store refuses to serve it.
	if err := os.WriteFile(s.path(sum), []byte("model byteZ"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(sum); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt file served: %v", err)
	}
}
