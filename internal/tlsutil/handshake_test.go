package tlsutil

import (
	"bytes"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// TestRefusedHandshakeLogIsRateLimited: within a window the logger writes
// at most a burst of lines but counts every refusal; the first line of the
// next window says how many were not logged. The clock is the test's.
func TestRefusedHandshakeLogIsRateLimited(t *testing.T) {
	var out bytes.Buffer
	counted := 0
	h := NewHandshakeLogger(slog.New(slog.NewTextHandler(&out, nil)), func(string) { counted++ })
	clock := time.Unix(1e9, 0)
	h.now = func() time.Time { return clock }
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	const attempts = 40
	for i := 0; i < attempts; i++ {
		h.Refused(addr, errors.New("remote error: tls: unknown certificate authority"))
	}
	lines := strings.Count(out.String(), "refused TLS handshake")
	if counted != attempts || lines != h.burst {
		t.Fatalf("%d refusals: counted %d, logged %d lines, want %d and the burst of %d", attempts, counted, lines, attempts, h.burst)
	}
	clock = clock.Add(h.every)
	h.Refused(addr, errors.New("remote error: tls: unknown certificate authority"))
	if !strings.Contains(out.String(), "not_logged_before="+itoa(attempts-h.burst)) {
		t.Fatalf("the next window's line does not say how many were not logged:\n%s", out.String())
	}
}

func itoa(n int) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + n%10)}, b...)
		if n /= 10; n == 0 {
			return string(b)
		}
	}
}
