package config

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// NewLogger builds the process logger: text for humans, json for machines.
func NewLogger(w io.Writer, lf LogFile) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(lf.Level)); err != nil {
		return nil, fmt.Errorf("%w: log.level %q: want debug, info, warn or error", ErrConfig, lf.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(lf.Format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("%w: log.format %q: want text or json", ErrConfig, lf.Format)
	}
}
