package fedtest

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Federation RPC names, for Hook and OnSend.
const (
	Participate  = "/fedledger.v1.Federation/Participate"
	SubmitUpdate = "/fedledger.v1.Federation/SubmitUpdate"
	SubmitShare  = "/fedledger.v1.Federation/SubmitShare"
	FetchModel   = "/fedledger.v1.Federation/FetchModel"
)

// Hook is a client-side stream interceptor for fault injection: before runs
// before each call of method opens its stream (an error fails the call,
// nothing sent); after runs once the server's reply to it has arrived (for
// example to make the hospital vanish right after its upload). Hooks and
// OnSend compose: each is one link of the connection's interceptor chain.
func Hook(method string, before func() error, after func()) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, m string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
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

// OnSend rewrites what a hospital sends on method's streams (for example
// its countersignatures on Participate): every message goes through f,
// which returns what to send instead (the message itself, a changed
// clone, another message) or nil to drop it silently. f must not modify
// the message it is given: clone it (proto.Clone) to tamper with it.
func OnSend(method string, f func(proto.Message) proto.Message) grpc.DialOption {
	return grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, m string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, m, opts...)
		if err != nil || m != method {
			return cs, err
		}
		return &rewriteSend{ClientStream: cs, f: f}, nil
	})
}

type rewriteSend struct {
	grpc.ClientStream
	f func(proto.Message) proto.Message
}

func (s *rewriteSend) SendMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return s.ClientStream.SendMsg(m)
	}
	out := s.f(pm)
	if out == nil {
		return nil
	}
	return s.ClientStream.SendMsg(out)
}
