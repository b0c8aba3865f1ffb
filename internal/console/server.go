package console

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/fedledger/fedledger/internal/tlsutil"
)

// Errors of serving and of access.
var (
	// ErrNotLoopback: a console without a consortium identity was asked
	// to listen where others could reach it.
	ErrNotLoopback = errors.New("console: without mutual TLS the console serves only a loopback address")
	// ErrNoCertificate: the caller presented no client certificate.
	ErrNoCertificate = errors.New("console: no client certificate")
	// ErrNotConsortium: the caller's certificate is not a valid consortium
	// identity (another CA, expired, malformed).
	ErrNotConsortium = errors.New("console: the client certificate is not a valid consortium identity")
	// ErrRole: the caller's role may not read the console.
	ErrRole = errors.New("console: this role may not read the console")
)

// Readers are the roles that may read a console.
var Readers = []tlsutil.Role{tlsutil.RoleObserver, tlsutil.RoleAdmin}

// ServerConfig says where and to whom a console is served.
type ServerConfig struct {
	// Addr is the host:port to listen on (port 0: any free port).
	Addr string
	// Identity is the server's consortium certificate and Roots the
	// consortium CA. With both, the console is served over TLS 1.3 and
	// every request needs a client certificate the CA issued to a reader
	// (Readers). With neither, it is plain HTTP on a loopback Addr only:
	// the demo's console.
	Identity *tlsutil.Identity
	Roots    *x509.CertPool
	Logger   *slog.Logger
}

// Validate checks the configuration.
func (c ServerConfig) Validate() error {
	host, _, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("console: address %q: %w", c.Addr, err)
	}
	if (c.Identity == nil) != (c.Roots == nil) {
		return errors.New("console: mutual TLS needs both the server's identity and the consortium CA")
	}
	if c.Identity == nil && !loopbackHost(host) {
		return fmt.Errorf("%w: %q", ErrNotLoopback, c.Addr)
	}
	return nil
}

// loopbackHost reports whether host names only this machine: localhost,
// or a loopback IP. An empty host (every interface) is not.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Server is a running console.
type Server struct {
	srv  *http.Server
	lis  net.Listener
	url  string
	done chan error
}

// Start serves h as cfg says until Close. Every response carries headers
// that forbid scripts, frames and outside resources.
func Start(cfg ServerConfig, h http.Handler) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	lis, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("console: listen on %s: %w", cfg.Addr, err)
	}
	scheme := "https"
	if cfg.Identity == nil {
		// A name that resolved to something else must not slip through.
		if a, ok := lis.Addr().(*net.TCPAddr); !ok || !a.IP.IsLoopback() {
			lis.Close()
			return nil, fmt.Errorf("%w: %s listens on %s", ErrNotLoopback, cfg.Addr, lis.Addr())
		}
		scheme = "http"
		h = loopbackHostHeader(h)
	} else {
		h = requireReader(h, cfg.Roots, time.Now, logger)
	}
	s := &Server{
		srv: &http.Server{
			Handler:           secureHeaders(h),
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       2 * time.Minute, // a model upload
			WriteTimeout:      2 * time.Minute, // verifying a long log
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		},
		lis:  lis,
		url:  scheme + "://" + lis.Addr().String() + "/",
		done: make(chan error, 1),
	}
	if cfg.Identity != nil {
		s.srv.TLSConfig = &tls.Config{
			MinVersion:   tls.VersionTLS13,
			Certificates: []tls.Certificate{cfg.Identity.TLSCert},
			// Any certificate, or none, completes the handshake; the
			// handler checks it and answers 403 with the reason, which
			// a refused handshake could not tell the caller.
			ClientAuth: tls.RequestClientCert,
		}
		go func() { s.done <- s.srv.ServeTLS(lis, "", "") }()
	} else {
		go func() { s.done <- s.srv.Serve(lis) }()
	}
	logger.Info("serving the web console", slog.String("url", s.url), slog.Bool("mutual_tls", cfg.Identity != nil))
	return s, nil
}

// URL is the console's base URL, ending in "/".
func (s *Server) URL() string { return s.url }

// Close stops serving, giving requests in flight two seconds.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if e := <-s.done; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}

// Reader authorises a request: the verified consortium identity of its
// client certificate, which must have one of Readers' roles. The error
// says why not, naming the certificate when there is one.
func Reader(r *http.Request, roots *x509.CertPool, now time.Time) (tlsutil.Peer, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return tlsutil.Peer{}, fmt.Errorf("%w: the console needs a consortium certificate with the %s role", ErrNoCertificate, roleList())
	}
	leaf := r.TLS.PeerCertificates[0]
	p, err := tlsutil.VerifyPeerCertificate(leaf.Raw, roots, now)
	if err != nil {
		return tlsutil.Peer{}, fmt.Errorf("%w: %q: %v", ErrNotConsortium, leaf.Subject.CommonName, err)
	}
	if !slices.Contains(Readers, p.Role) {
		return p, fmt.Errorf("%w: %q has the %s role; the console is for the %s roles", ErrRole, p.ID, p.Role, roleList())
	}
	return p, nil
}

func roleList() string {
	s := ""
	for i, r := range Readers {
		if i > 0 {
			s += " or "
		}
		s += string(r)
	}
	return s
}

type peerKey struct{}

// viewer is the reader of a request, when the console checks them.
func viewer(r *http.Request) (tlsutil.Peer, bool) {
	p, ok := r.Context().Value(peerKey{}).(tlsutil.Peer)
	return p, ok
}

// requireReader answers 403 Forbidden, naming the reason, to any caller
// Reader refuses, and logs the refusal.
func requireReader(next http.Handler, roots *x509.CertPool, now func() time.Time, logger *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := Reader(r, roots, now())
		if err != nil {
			logger.Warn("refused console reader", slog.String("remote", r.RemoteAddr), slog.String("peer", p.ID),
				slog.String("path", r.URL.Path), slog.Any("err", err))
			renderError(w, r, http.StatusForbidden, err.Error())
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), peerKey{}, p)))
	})
}

// secureHeaders forbids what the console never needs: scripts, frames,
// and anything from another origin; and caching of what it shows.
func secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// loopbackHostHeader refuses a request to a plain-HTTP console whose Host
// is not a loopback name: a page of another site that rebinds its own
// name to 127.0.0.1 must not read the console through the browser.
func loopbackHostHeader(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
		if !loopbackHost(strings.Trim(host, "[]")) {
			renderError(w, r, http.StatusMisdirectedRequest, fmt.Sprintf("this console answers only on a loopback address, not %q", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}
