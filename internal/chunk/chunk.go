// Package chunk splits payloads (models, updates) into bounded
// fedledgerpb.Chunk messages and reassembles them strictly: every chunk of a
// payload must name the same study, round, content hash, count and total
// size, arrive in order, and the whole must hash to the announced SHA-256
// and fit the receiver's size limit. It is shared by the coordinator and
// the client, which both send and receive payloads.
package chunk

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"

	pb "github.com/fedledger/fedledger/proto"
)

// DefaultSize is the default chunk size: 1 MiB, well under gRPC's 4 MiB
// message limit.
const DefaultSize = 1 << 20

// Errors callers can test with errors.Is.
var (
	ErrChunk        = errors.New("chunk: malformed chunk stream")
	ErrHashMismatch = errors.New("chunk: content hash mismatch")
	ErrTooLarge     = errors.New("chunk: payload exceeds size limit")
)

// Split cuts payload into chunks of at most size bytes. The caller may set
// Header on the first chunk.
func Split(study string, round uint64, payload []byte, size int) []*pb.Chunk {
	if size <= 0 {
		size = DefaultSize
	}
	sum := sha256.Sum256(payload)
	count := max((len(payload)+size-1)/size, 1)
	out := make([]*pb.Chunk, 0, count)
	for i := 0; i < count; i++ {
		lo, hi := i*size, min((i+1)*size, len(payload))
		out = append(out, &pb.Chunk{
			StudyId: study, Round: round, ContentSha256: sum[:], Index: uint32(i), Count: uint32(count),
			TotalSize: uint64(len(payload)), Data: payload[lo:hi],
		})
	}
	return out
}

// Assembler rebuilds one payload from its chunks.
type Assembler struct {
	study string
	round uint64
	hash  [32]byte
	count uint32
	total uint64
	next  uint32
	buf   bytes.Buffer
}

// NewAssembler starts from the first chunk, checking it against the
// receiver's expectations: the size limit, and (when not empty) the study
// and the expected content hash.
func NewAssembler(first *pb.Chunk, maxBytes int64, wantStudy string, wantHash []byte) (*Assembler, error) {
	if first == nil {
		return nil, fmt.Errorf("%w: no chunk", ErrChunk)
	}
	if len(first.ContentSha256) != sha256.Size {
		return nil, fmt.Errorf("%w: content hash has %d bytes, want 32", ErrChunk, len(first.ContentSha256))
	}
	if wantStudy != "" && first.StudyId != wantStudy {
		return nil, fmt.Errorf("%w: chunk for study %q, want %q", ErrChunk, first.StudyId, wantStudy)
	}
	if wantHash != nil && !bytes.Equal(first.ContentSha256, wantHash) {
		return nil, fmt.Errorf("%w: chunk for payload %x, want %x", ErrHashMismatch, first.ContentSha256[:8], wantHash[:min(8, len(wantHash))])
	}
	if first.TotalSize > uint64(maxBytes) {
		return nil, fmt.Errorf("%w: %d bytes announced, limit %d", ErrTooLarge, first.TotalSize, maxBytes)
	}
	if first.Count == 0 || uint64(first.Count) > first.TotalSize+1 {
		return nil, fmt.Errorf("%w: %d chunks for %d bytes", ErrChunk, first.Count, first.TotalSize)
	}
	a := &Assembler{study: first.StudyId, round: first.Round, count: first.Count, total: first.TotalSize}
	copy(a.hash[:], first.ContentSha256)
	a.buf.Grow(int(first.TotalSize))
	return a, a.Add(first)
}

// Add appends the next chunk.
func (a *Assembler) Add(c *pb.Chunk) error {
	switch {
	case a.Done():
		return fmt.Errorf("%w: chunk %d after the last one", ErrChunk, c.Index)
	case c.StudyId != a.study || c.Round != a.round:
		return fmt.Errorf("%w: chunk %d is for study %q round %d, payload for %q round %d", ErrChunk, c.Index, c.StudyId, c.Round, a.study, a.round)
	case !bytes.Equal(c.ContentSha256, a.hash[:]):
		return fmt.Errorf("%w: chunk %d names another payload", ErrChunk, c.Index)
	case c.Count != a.count || c.TotalSize != a.total:
		return fmt.Errorf("%w: chunk %d says %d chunks/%d bytes, first said %d/%d", ErrChunk, c.Index, c.Count, c.TotalSize, a.count, a.total)
	case c.Index != a.next:
		return fmt.Errorf("%w: chunk %d out of order, want %d", ErrChunk, c.Index, a.next)
	case uint64(a.buf.Len())+uint64(len(c.Data)) > a.total:
		return fmt.Errorf("%w: chunk %d overruns the announced %d bytes", ErrTooLarge, c.Index, a.total)
	}
	a.buf.Write(c.Data)
	a.next++
	return nil
}

// Done reports whether every chunk has arrived.
func (a *Assembler) Done() bool { return a.next == a.count }

// Bytes returns the payload after checking its length and hash.
func (a *Assembler) Bytes() ([]byte, [32]byte, error) {
	if !a.Done() {
		return nil, a.hash, fmt.Errorf("%w: %d of %d chunks received", ErrChunk, a.next, a.count)
	}
	if uint64(a.buf.Len()) != a.total {
		return nil, a.hash, fmt.Errorf("%w: %d bytes received, %d announced", ErrChunk, a.buf.Len(), a.total)
	}
	if sha256.Sum256(a.buf.Bytes()) != a.hash {
		return nil, a.hash, fmt.Errorf("%w: payload does not hash to the announced %x", ErrHashMismatch, a.hash[:8])
	}
	return a.buf.Bytes(), a.hash, nil
}

// Study and Round identify the payload.
func (a *Assembler) Study() string { return a.study }

// Round is the round the payload belongs to.
func (a *Assembler) Round() uint64 { return a.round }
