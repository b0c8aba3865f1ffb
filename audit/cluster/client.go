package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/audit"
	"github.com/fedledger/fedledger/internal/chunk"
	pb "github.com/fedledger/fedledger/proto"
)

// Client errors beyond the audit package's sentinels (ErrConflict,
// ErrUnknownStudy) and ErrNoLeader.
var (
	// ErrRejected: the log's rules refused the record; nothing was appended.
	ErrRejected = errors.New("audit: the log refused the record")
	// ErrPermission: this identity may not make the call.
	ErrPermission = errors.New("audit: permission denied")
)

// fromStatus turns a node's gRPC status into the package's errors, in one
// place, so callers test errors.Is and never a status code. notFound is
// what NotFound means for the call.
func fromStatus(err error, notFound error) error {
	if err == nil || errors.Is(err, ErrNoLeader) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.AlreadyExists:
		return fmt.Errorf("%w: %s", audit.ErrConflict, msg)
	case codes.NotFound:
		return fmt.Errorf("%w: %s", notFound, msg)
	case codes.InvalidArgument, codes.FailedPrecondition:
		return fmt.Errorf("%w: %s", ErrRejected, msg)
	case codes.PermissionDenied, codes.Unauthenticated:
		return fmt.Errorf("%w: %s", ErrPermission, msg)
	case codes.Unavailable:
		return fmt.Errorf("%w: %s", ErrNoLeader, msg)
	case codes.DeadlineExceeded:
		if msg == context.DeadlineExceeded.Error() {
			return context.DeadlineExceeded
		}
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, msg)
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, msg)
	}
	return err
}

// Client talks to an audit cluster through any of its nodes, trying the
// next one when a node is unreachable. Followers forward writes and
// current reads to the leader, so any reachable member will do. Its
// errors are the package's and the audit package's sentinels (see the
// package doc), never gRPC status codes.
type Client struct {
	addrs []string
	conns []*grpc.ClientConn
	apis  []pb.AuditLogClient
}

// Dial prepares connections to the given nodes with a mutual-TLS client
// configuration (its ServerName is set per node from the address).
func Dial(addrs []string, tlsCfg *tls.Config) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("audit: no audit node addresses")
	}
	c := &Client{addrs: addrs}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("audit: node address %q: %w", a, err)
		}
		cfg := tlsCfg.Clone()
		cfg.ServerName = host
		conn, err := grpc.NewClient(a, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(8<<20)))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.conns, c.apis = append(c.conns, conn), append(c.apis, pb.NewAuditLogClient(conn))
	}
	return c, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	for _, conn := range c.conns {
		conn.Close()
	}
	return nil
}

// each runs call against the nodes in turn until one answers with
// anything but Unavailable; while none does it keeps cycling, with
// backoff, until ctx ends (a cluster may be electing or restarting), or
// for a minute when ctx has no deadline.
func (c *Client) each(ctx context.Context, call func(pb.AuditLogClient) error) error {
	wait := 100 * time.Millisecond
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	for {
		var errs []error
		for i, api := range c.apis {
			err := call(api)
			if status.Code(err) != codes.Unavailable {
				return err
			}
			errs = append(errs, fmt.Errorf("%s: %w", c.addrs[i], err))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNoLeader, errors.Join(errs...))
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// Append submits a signed record envelope; see Node.Append. An identical
// record already on the log returns its index (appends are idempotent); a
// different one for the same study, round and kind is audit.ErrConflict.
func (c *Client) Append(ctx context.Context, env []byte) (AppendResult, error) {
	var r *pb.AppendResponse
	err := c.each(ctx, func(api pb.AuditLogClient) (err error) {
		r, err = api.Append(ctx, &pb.AppendRequest{Envelope: env})
		return err
	})
	if err != nil {
		return AppendResult{}, fromStatus(err, audit.ErrUnknownStudy)
	}
	res := AppendResult{Index: r.Index, TreeSize: r.TreeSize}
	copy(res.LeafHash[:], r.LeafHash)
	return res, nil
}

// LatestOutput is the study's latest committed output model and round.
func (c *Client) LatestOutput(ctx context.Context, study string) (audit.Hash, uint64, error) {
	var r *pb.LatestOutputResponse
	err := c.each(ctx, func(api pb.AuditLogClient) (err error) {
		r, err = api.LatestOutput(ctx, &pb.LatestOutputRequest{StudyId: study})
		return err
	})
	if err != nil {
		return audit.Hash{}, 0, fromStatus(err, audit.ErrUnknownStudy)
	}
	if len(r.ModelSha256) != len(audit.Hash{}) {
		return audit.Hash{}, 0, fmt.Errorf("audit: model hash of %d bytes", len(r.ModelSha256))
	}
	return audit.Hash(r.ModelSha256), r.Round, nil
}

// StudyRecord returns the study's admin-signed study-created envelope. The
// caller verifies it (Envelope.Verify) before trusting it.
func (c *Client) StudyRecord(ctx context.Context, study string) ([]byte, error) {
	var r *pb.Entry
	err := c.each(ctx, func(api pb.AuditLogClient) (err error) {
		r, err = api.StudyRecord(ctx, &pb.LatestOutputRequest{StudyId: study})
		return err
	})
	if err != nil {
		return nil, fromStatus(err, audit.ErrUnknownStudy)
	}
	return r.Envelope, nil
}

// ListStudies summarises every study on the log (as the answering node's
// replica has it).
func (c *Client) ListStudies(ctx context.Context) ([]*pb.StudySummary, error) {
	var r *pb.ListStudiesResponse
	err := c.each(ctx, func(api pb.AuditLogClient) (err error) {
		r, err = api.ListStudies(ctx, &pb.ListStudiesRequest{})
		return err
	})
	if err != nil {
		return nil, fromStatus(err, ErrNotFound)
	}
	return r.Studies, nil
}

// Get returns the entry at index.
func (c *Client) Get(ctx context.Context, index int64) ([]byte, error) {
	var r *pb.Entry
	err := c.each(ctx, func(api pb.AuditLogClient) (err error) {
		r, err = api.Get(ctx, &pb.GetRequest{Index: index})
		return err
	})
	if err != nil {
		return nil, fromStatus(err, ErrNotFound)
	}
	return r.Envelope, nil
}

// Export downloads and decodes an offline bundle (at most limit bytes).
func (c *Client) Export(ctx context.Context, study string, limit int64) (*audit.Bundle, error) {
	var data []byte
	err := c.each(ctx, func(api pb.AuditLogClient) error {
		s, err := api.Export(ctx, &pb.ExportRequest{StudyId: study})
		if err != nil {
			return err
		}
		var a *chunk.Assembler
		for {
			ch, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if a == nil {
				a, err = chunk.NewAssembler(ch, limit, study, nil)
			} else {
				err = a.Add(ch)
			}
			if err != nil {
				return fmt.Errorf("audit: export: %w", err)
			}
		}
		if a == nil {
			return errors.New("audit: export: empty stream")
		}
		data, _, err = a.Bytes()
		return err
	})
	if err != nil {
		return nil, fromStatus(err, audit.ErrUnknownStudy)
	}
	return audit.UnmarshalBundle(data)
}

// Status of the node at index i.
func (c *Client) Status(ctx context.Context, i int) (*pb.StatusResponse, error) {
	return c.apis[i].Status(ctx, &pb.StatusRequest{})
}
