package tlsutil

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Reasons a server refuses a TLS handshake, as [HandshakeReason] names
// them (they are also the label values of the counter hook).
const (
	ReasonUnknownCA      = "unknown_ca"          // client certificate from another CA
	ReasonExpired        = "expired_certificate" // client certificate expired (or not yet valid)
	ReasonNoCertificate  = "no_certificate"      // client presented none
	ReasonBadCertificate = "bad_certificate"     // any other client-certificate failure
	ReasonPeerAlert      = "peer_alert"          // the client refused this server (e.g. distrusts its CA)
	ReasonNotTLS         = "not_tls"             // not a TLS client at all (plain HTTP, a scanner)
	ReasonTimeout        = "timeout"             // the handshake did not finish in time
	ReasonClosed         = "closed"              // the client hung up mid-handshake (port scans, probes)
	ReasonOther          = "other"
)

// HandshakeReason classifies a server-side TLS handshake error.
func HandshakeReason(err error) string {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		record    tls.RecordHeaderError
		op        *net.OpError
		netErr    net.Error
	)
	switch {
	case err == nil:
		return ""
	case errors.As(err, &unknownCA):
		return ReasonUnknownCA
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return ReasonExpired
	case errors.As(err, &verify), errors.As(err, &invalid):
		return ReasonBadCertificate
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		// crypto/tls has no exported error for this.
		return ReasonNoCertificate
	case errors.As(err, &op) && op.Op == "remote error":
		return ReasonPeerAlert
	case errors.As(err, &record):
		return ReasonNotTLS
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		return ReasonClosed
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return ReasonTimeout
	}
	return ReasonOther
}

// HandshakeLogger reports TLS handshakes a server refused: every refusal
// goes to the counter hook, and at most Burst per Every are logged at warn
// with the remote address, the reason and the error, so a port scan
// cannot flood the log. The first line after a quiet window says how many
// were not logged. It is safe for concurrent use.
type HandshakeLogger struct {
	log       *slog.Logger
	onRefused func(reason string)
	every     time.Duration
	burst     int
	now       func() time.Time // for tests

	mu          sync.Mutex
	windowStart time.Time
	logged      int
	suppressed  int
}

// NewHandshakeLogger logs to log (nil: nowhere) and calls onRefused (may
// be nil) with the reason of every refused handshake, typically to
// increment a counter labelled by reason. It logs at most 10 lines a
// minute.
func NewHandshakeLogger(log *slog.Logger, onRefused func(reason string)) *HandshakeLogger {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &HandshakeLogger{log: log, onRefused: onRefused, every: time.Minute, burst: 10, now: time.Now}
}

// Refused records one refused handshake from remote.
func (h *HandshakeLogger) Refused(remote net.Addr, err error) {
	reason := HandshakeReason(err)
	if h.onRefused != nil {
		h.onRefused(reason)
	}
	h.mu.Lock()
	now := h.now()
	if now.Sub(h.windowStart) >= h.every {
		h.windowStart, h.logged = now, 0
	}
	if h.logged >= h.burst {
		h.suppressed++
		h.mu.Unlock()
		return
	}
	h.logged++
	skipped := h.suppressed
	h.suppressed = 0
	h.mu.Unlock()
	addr := "unknown"
	if remote != nil {
		addr = remote.String()
	}
	attrs := []any{slog.String("remote", addr), slog.String("reason", reason), slog.Any("err", err)}
	if skipped > 0 {
		attrs = append(attrs, slog.Int("not_logged_before", skipped))
	}
	h.log.Warn("refused TLS handshake", attrs...)
}
