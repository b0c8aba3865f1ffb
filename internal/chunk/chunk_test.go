package chunk

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/fedledger/fedledger/proto"
)

func assemble(chunks []*pb.Chunk, max int64) ([]byte, error) {
	a, err := NewAssembler(chunks[0], max, "", nil)
	if err != nil {
		return nil, err
	}
	for _, c := range chunks[1:] {
		if err := a.Add(c); err != nil {
			return nil, err
		}
	}
	b, _, err := a.Bytes()
	return b, err
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, 9, 10, 11, 100} {
		payload := bytes.Repeat([]byte{7}, n)
		chunks := Split("s", 3, payload, 10)
		got, err := assemble(chunks, 1000)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("n=%d: %v", n, err)
		}
	}
}

func TestBadStreams(t *testing.T) {
	payload := []byte("0123456789abcdefghij0123456789")
	fresh := func() []*pb.Chunk { return Split("s", 1, payload, 10) }
	mut := func(f func([]*pb.Chunk) []*pb.Chunk) []*pb.Chunk { return f(fresh()) }
	cases := map[string]struct {
		chunks []*pb.Chunk
		want   error
	}{
		"flipped data byte": {mut(func(c []*pb.Chunk) []*pb.Chunk {
			c[1] = proto.Clone(c[1]).(*pb.Chunk)
			c[1].Data = append([]byte{'X'}, c[1].Data[1:]...)
			return c
		}), ErrHashMismatch},
		"out of order":   {mut(func(c []*pb.Chunk) []*pb.Chunk { c[1], c[2] = c[2], c[1]; return c }), ErrChunk},
		"missing chunk":  {mut(func(c []*pb.Chunk) []*pb.Chunk { return c[:2] }), ErrChunk},
		"other round":    {mut(func(c []*pb.Chunk) []*pb.Chunk { c[2].Round = 2; return c }), ErrChunk},
		"count changes":  {mut(func(c []*pb.Chunk) []*pb.Chunk { c[1].Count = 4; return c }), ErrChunk},
		"oversize":       {mut(func(c []*pb.Chunk) []*pb.Chunk { c[2].Data = append(c[2].Data, 'x'); return c }), ErrTooLarge},
		"extra chunk":    {mut(func(c []*pb.Chunk) []*pb.Chunk { return append(c, c[2]) }), ErrChunk},
		"over the limit": {Split("s", 1, make([]byte, 2000), 100), ErrTooLarge},
		"short hash":     {mut(func(c []*pb.Chunk) []*pb.Chunk { c[0].ContentSha256 = c[0].ContentSha256[:4]; return c }), ErrChunk},
	}
	for name, tc := range cases {
		if _, err := assemble(tc.chunks, 1000); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
	// The receiver's expectations.
	c := fresh()
	if _, err := NewAssembler(c[0], 1000, "other", nil); !errors.Is(err, ErrChunk) {
		t.Errorf("wrong study accepted: %v", err)
	}
	if _, err := NewAssembler(c[0], 1000, "", make([]byte, 32)); !errors.Is(err, ErrHashMismatch) {
		t.Errorf("unexpected payload accepted: %v", err)
	}
}

func FuzzAssembler(f *testing.F) {
	good := Split("s", 1, []byte("hello world"), 4)
	for _, c := range good {
		b, _ := proto.Marshal(c)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var c pb.Chunk
		if proto.Unmarshal(b, &c) != nil {
			return
		}
		a, err := NewAssembler(&c, 1<<20, "", nil)
		if err != nil {
			return
		}
		if a.Done() {
			if p, _, err := a.Bytes(); err == nil && uint64(len(p)) != c.TotalSize {
				t.Fatal("accepted a payload of the wrong size")
			}
		}
	})
}
