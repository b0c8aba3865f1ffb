package fedtest

import (
	"context"

	"google.golang.org/grpc"
)

// Federation RPC names, for Hook.
const (
	SubmitUpdate = "/fedledger.v1.Federation/SubmitUpdate"
	SubmitShare  = "/fedledger.v1.Federation/SubmitShare"
	FetchModel   = "/fedledger.v1.Federation/FetchModel"
)

// Hook is a client-side stream interceptor for fault injection: before runs
// before each call of method opens its stream (an error fails the call,
// nothing sent); after runs once the server's reply to it has arrived (for
// example to make the hospital vanish right after its upload).
func Hook(method string, before func() error, after func()) grpc.DialOption {
	return grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, m string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if m != method {
			return streamer(ctx, desc, cc, m, opts...)
		}
		if before != nil {
			if err := before(); err != nil {
				return nil, err
			}
		}
		cs, err := streamer(ctx, desc, cc, m, opts...)
		if err != nil || after == nil {
			return cs, err
		}
		return &afterRecv{ClientStream: cs, after: after}, nil
	})
}

type afterRecv struct {
	grpc.ClientStream
	after func()
}

func (s *afterRecv) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.after()
	}
	return err
}
