// Package version holds the binary's version, set at build time with
// -ldflags "-X github.com/fedledger/fedledger/internal/version.Version=...".
// It is recorded in every model update and (later) every audit record, so a
// regulator can tell which code produced a model.
package version

import "runtime/debug"

// Version is the release or git description of this build.
var Version = "dev"

// String returns Version, falling back to the module's VCS revision when the
// binary was built without -ldflags (e.g. `go run`).
func String() string {
	if Version != "dev" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return Version
}
