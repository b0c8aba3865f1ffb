package cluster

import (
	"bytes"
	"context"
	"log/slog"

	"github.com/hashicorp/go-hclog"
)

// raftLogger routes hashicorp/raft's hclog output into the node's slog
// logger, one record per line, at the matching level.
func raftLogger(log *slog.Logger, level slog.Level) hclog.Logger {
	hl := hclog.Info
	switch {
	case level <= slog.LevelDebug:
		hl = hclog.Debug
	case level >= slog.LevelError:
		hl = hclog.Error
	case level >= slog.LevelWarn:
		hl = hclog.Warn
	}
	return hclog.New(&hclog.LoggerOptions{
		Name: "raft", Level: hl, Output: slogWriter{log.With(slog.String("component", "raft"))}, DisableTime: true,
	})
}

type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		level, msg := slog.LevelInfo, line
		for prefix, l := range map[string]slog.Level{"[TRACE]": slog.LevelDebug, "[DEBUG]": slog.LevelDebug, "[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERROR]": slog.LevelError} {
			if i := bytes.Index(line, []byte(prefix)); i >= 0 {
				level, msg = l, bytes.TrimSpace(line[i+len(prefix):])
				break
			}
		}
		w.log.Log(context.Background(), level, string(msg))
	}
	return len(p), nil
}
