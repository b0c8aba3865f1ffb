package console

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

// ProxyConfig is a reader's way into a console served over mutual TLS.
type ProxyConfig struct {
	// Target is the console's URL: https://host:port/.
	Target *url.URL
	// TLS presents the reader's certificate and trusts the consortium CA
	// (tlsutil.ClientConfig); its ServerName is set from Target.
	TLS    *tls.Config
	Logger *slog.Logger
}

// Validate checks the configuration.
func (c ProxyConfig) Validate() error {
	if c.Target == nil || c.Target.Scheme != "https" || c.Target.Host == "" {
		return fmt.Errorf("console: proxy target %v: want https://host:port/", c.Target)
	}
	if c.TLS == nil || len(c.TLS.Certificates) == 0 || c.TLS.RootCAs == nil {
		return errors.New("console: the proxy needs the reader's certificate and the consortium CA")
	}
	return nil
}

// NewProxy forwards a browser's requests to a console over mutual TLS
// with the reader's own certificate. Browsers do not speak Ed25519 in TLS,
// and consortium certificates are Ed25519, so this is how a person reads a
// deployment's console: serve the proxy with Start and no identity (plain
// HTTP on loopback, on their own machine) and open it. Anyone who can
// reach that loopback address reads the console as them while it runs.
func NewProxy(cfg ProxyConfig) (http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	tlsCfg := cfg.TLS.Clone()
	tlsCfg.ServerName = cfg.Target.Hostname()
	target := *cfg.Target
	target.Path, target.RawQuery, target.Fragment = "", "", ""
	return &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&target)
			r.Out.Host = target.Host
		},
		Transport: &http.Transport{
			TLSClientConfig:     tlsCfg,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     time.Minute,
			DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			logger.Warn("console proxy", slog.String("target", target.String()), slog.String("path", r.URL.Path), slog.Any("err", err))
			renderError(w, r, http.StatusBadGateway, fmt.Sprintf("the console at %s could not be reached: %v", target.String(), err))
		},
	}, nil
}
