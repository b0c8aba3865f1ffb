package coordinator

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedledger/fedledger/aggregation"
	"github.com/fedledger/fedledger/internal/chunk"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

// toStatus maps the package's errors to gRPC status codes. It is the only
// place that does, so a client sees the same code for the same problem
// whichever RPC it called.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, ErrUnknownClient), errors.Is(err, tlsutil.ErrNoPeerCertificate), errors.Is(err, tlsutil.ErrBadIdentity), errors.Is(err, errNotClient):
		code = codes.PermissionDenied
	case errors.Is(err, ErrNotKeyHolder):
		code = codes.PermissionDenied
	case errors.Is(err, ErrDuplicate):
		code = codes.AlreadyExists
	case errors.Is(err, ErrWrongStudy), errors.Is(err, ErrWrongRound), errors.Is(err, ErrWrongParent),
		errors.Is(err, ErrRoundClosed), errors.Is(err, ErrNotAssigned), errors.Is(err, errStudyOver):
		code = codes.FailedPrecondition
	case errors.Is(err, ErrBadUpdate), errors.Is(err, aggregation.ErrUpdate), errors.Is(err, chunk.ErrChunk), errors.Is(err, ErrBadSignature), errors.Is(err, ErrBadShare),
		errors.Is(err, chunk.ErrHashMismatch):
		code = codes.InvalidArgument
	case errors.Is(err, chunk.ErrTooLarge):
		code = codes.ResourceExhausted
	case errors.Is(err, ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, ErrCorrupt):
		code = codes.DataLoss
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}
