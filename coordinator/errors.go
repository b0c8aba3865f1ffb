package coordinator

import (
	"context"
	"errors"

	"github.com/fedledger/fedledger/coordinator/study"

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
	case errors.Is(err, study.ErrUnknownClient), errors.Is(err, tlsutil.ErrNoPeerCertificate), errors.Is(err, tlsutil.ErrBadIdentity),
		errors.Is(err, errNotClient), errors.Is(err, study.ErrNotKeyHolder), errors.Is(err, study.ErrExcluded):
		code = codes.PermissionDenied
	case errors.Is(err, study.ErrDuplicate):
		code = codes.AlreadyExists
	case errors.Is(err, errWrongStudy), errors.Is(err, study.ErrWrongRound), errors.Is(err, study.ErrWrongParent), errors.Is(err, study.ErrWrongObject),
		errors.Is(err, study.ErrRoundClosed), errors.Is(err, study.ErrNotAssigned), errors.Is(err, study.ErrStudyOver):
		code = codes.FailedPrecondition
	case errors.Is(err, study.ErrBadUpdate), errors.Is(err, aggregation.ErrUpdate), errors.Is(err, chunk.ErrChunk), errors.Is(err, study.ErrBadSignature),
		errors.Is(err, errBadPayload), errors.Is(err, chunk.ErrHashMismatch):
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
