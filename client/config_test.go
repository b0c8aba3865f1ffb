package client

import (
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedledger/fedledger/client/train"
	"github.com/fedledger/fedledger/internal/tlsutil"
)

func testConfig(t *testing.T) Config {
	t.Helper()
	ca, err := tlsutil.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ca.Issue("cleveland", tlsutil.RoleClient, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.CoordinatorAddr = "127.0.0.1:1"
	cfg.TLS = tlsutil.ClientConfig(id, ca.Pool(), "127.0.0.1")
	return cfg
}

func TestNewRejectsBadConfig(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	missing := filepath.Join(t.TempDir(), "no-such-export.csv")
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"missing data file", func(c *Config) {
			c.Data.CSV = &train.CSVConfig{Path: missing, LabelColumn: "y", Numeric: []string{"x"}}
		}, "no-such-export.csv"},
		{"unknown hospital", func(c *Config) { c.Data.Heart = "atlantis" }, "atlantis"},
		{"no data", func(c *Config) {}, "no local data"},
		{"no TLS", func(c *Config) { c.Data.Heart = "va"; c.TLS = nil }, "mutual TLS"},
		{"no address", func(c *Config) { c.Data.Heart = "va"; c.CoordinatorAddr = "" }, "coordinator address"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t)
			tc.edit(&cfg)
			_, err := New(cfg, quiet)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

func TestNewLoadsHeartData(t *testing.T) {
	cfg := testConfig(t)
	cfg.Data.Heart = "cleveland"
	c, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if c.train.Len() == 0 || c.test.Len() == 0 || len(c.train.Features) != 13 {
		t.Fatalf("train %d test %d features %d", c.train.Len(), c.test.Len(), len(c.train.Features))
	}
}
