// Command epochctl is the operator's command line over Epoch's admin HTTP
// API (package cli): status, dead letters, redrive, rebuilds, verifies,
// users and prices. `epochctl --help` lists the commands, the environment
// (EPOCH_URL, EPOCH_ADMIN_TOKEN) and the exit codes.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/catacloud/epoch/cmd/epochctl/cli"
)

func main() {
	// An interrupt while an operation is followed stops the following, not
	// the operation: the api runs it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.Options{
		Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr,
		StderrIsTerminal: isTerminal(os.Stderr),
	})
	stop()
	os.Exit(code)
}

// isTerminal reports whether f is a character device (a terminal), where
// the progress line is rewritten in place.
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
