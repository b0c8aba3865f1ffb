// Command fedledger is the one binary of the fedledger federation, with a
// subcommand per role, each in its own file: provision (consortium CA and
// kits), coordinator, client, audit-node, study (sign, create, list,
// status, start), trust, verify (a regulator's offline check) and demo.
//
// This package only parses flags and configuration and calls the packages'
// Run functions; see cmd/fedledger/internal/config for how files, FEDLEDGER_* variables
// and flags combine.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/fedledger/fedledger/cmd/fedledger/internal/config"
)

func main() { os.Exit(runMain()) }

// runMain runs the command line and returns the exit status: 0 success,
// 2 a configuration or usage error, 1 anything else (including a model
// that fails verification).
func runMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fedledger:", err)
		if errors.Is(err, config.ErrConfig) {
			return 2
		}
		return 1
	}
	return 0
}
