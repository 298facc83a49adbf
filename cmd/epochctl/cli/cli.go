// Package cli is epochctl, the operator's command line over Epoch's admin
// HTTP API (DESIGN.md, "Operations", and the billing admin calls): it only
// speaks HTTP to an api process, as an operator's script would, so what it
// shows is what the API answers. Tables for people, --json for scripts (the
// API's JSON as it answered), and an exit code that says what failed.
//
// The commands that start an operation (redrive, rebuild, projections
// verify and rebuild, statements verify) follow it to its end by polling
// GET /v1/admin/operations/{id}, with a progress line on stderr, so a
// script can wait for a redrive with nothing but the exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// Exit codes: each says what failed, so a script can tell a mistake of its
// own from an api that is down or an operation that failed.
const (
	ExitOK = 0
	// ExitUsage: bad input, found before anything was sent (a missing or
	// malformed argument or flag, no admin token, a bad --url).
	ExitUsage = 1
	// ExitRefused: the api answered 4xx (unknown subscriber, dead letter,
	// user or operation; invalid input; a wrong token; an operation of the
	// same target running). The message is the API's.
	ExitRefused = 2
	// ExitUnavailable: the api could not be reached, answered 5xx, or
	// answered something that is not its JSON.
	ExitUnavailable = 3
	// ExitFailed: the operation followed ended failed.
	ExitFailed = 4
	// ExitDifferences: a verify (projections verify, statements verify)
	// ended done but found differences.
	ExitDifferences = 5
	// ExitInterrupted: stopped by a signal while following an operation,
	// which goes on in the api.
	ExitInterrupted = 130
)

// DefaultURL is the api's default address (its EPOCH_HTTP_ADDR is :8080)
// on this machine.
const DefaultURL = "http://127.0.0.1:8080"

// Environment variables read when the flags are not given.
const (
	EnvURL   = "EPOCH_URL"
	EnvToken = "EPOCH_ADMIN_TOKEN"
)

// requestTimeout bounds one call to the api; the api bounds its own
// database work by less (EPOCH_DB_TIMEOUT), so a call that takes longer is
// an api that does not answer.
const requestTimeout = 30 * time.Second

// DefaultPollInterval is how often a followed operation is read again.
const DefaultPollInterval = 250 * time.Millisecond

// exitError is an error with the exit code that says what failed.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return e.msg }

func usageError(format string, a ...any) error {
	return &exitError{code: ExitUsage, msg: fmt.Sprintf(format, a...)}
}

// Options are what Main runs with besides its arguments: where it reads
// its environment and writes its output (nil: the process's), and how
// often it reads a followed operation (0: DefaultPollInterval).
type Options struct {
	Getenv       func(string) string
	Stdout       io.Writer
	Stderr       io.Writer
	PollInterval time.Duration
	// StderrIsTerminal rewrites the progress line in place instead of
	// writing a line per change.
	StderrIsTerminal bool
}

// Main runs epochctl with args (without the program's name) and returns
// its exit code; an error is one line on stderr.
func Main(ctx context.Context, args []string, opts Options) int {
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	if opts.Stdout == nil {
		opts.Stdout = os.Stdout
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	a := &app{opts: opts}
	root := a.root()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	code := ExitUsage // cobra's own errors: unknown command or flag, wrong arguments
	var e *exitError
	if errors.As(err, &e) {
		code = e.code
	}
	msg := strings.Join(strings.Fields(err.Error()), " ")
	if code == ExitUsage && !errors.As(err, &e) {
		msg += " (see epochctl --help)"
	}
	fmt.Fprintln(opts.Stderr, "epochctl: "+msg)
	return code
}

// app is one run: the flags, and the client made from them.
type app struct {
	opts  Options
	url   string
	token string
	json  bool
}

const rootHelp = `epochctl is the operator's command line over Epoch's admin HTTP API.

Configuration:
  EPOCH_URL          the api's URL (default ` + DefaultURL + `); --url overrides it
  EPOCH_ADMIN_TOKEN  the api's admin token; --token overrides it (prefer the
                     variable: a flag shows in the process list)

Output: tables for people; --json prints the API's JSON as it answered.
Commands that start an operation follow it to its end, with a progress
line on stderr.

Exit codes:
  0    done
  1    bad input: a missing or malformed argument or flag, no admin token
  2    the api refused the call (4xx: unknown subscriber, dead letter, user
       or operation, invalid input, wrong token, an operation of the same
       target running); the message is the API's
  3    the api is unavailable: not reachable, 5xx, or not its JSON
  4    the operation ended failed
  5    a verify ended done but found differences
  130  interrupted while following an operation (it goes on in the api)`

func (a *app) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "epochctl",
		Short:         "Operate Epoch through its admin API",
		Long:          rootHelp,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(a.opts.Stdout)
	root.SetErr(a.opts.Stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", "", "the api's URL (default $"+EnvURL+", else "+DefaultURL+")")
	pf.StringVar(&a.token, "token", "", "the admin token (default $"+EnvToken+")")
	pf.BoolVar(&a.json, "json", false, "print the API's JSON as it answered, for scripts")
	root.AddCommand(a.statusCmd(), a.deadLettersCmd(), a.redriveCmd(), a.rebuildCmd(), a.projectionsCmd(),
		a.operationsCmd(), a.usersCmd(), a.pricesCmd(), a.statementsCmd())
	return root
}

// group is a command that only holds others: without one of them, or
// with a name none has, it is bad input (exit 1), not cobra's help and 0,
// so a script's typo does not pass for done.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		RunE: func(cmd *cobra.Command, args []string) error {
			names := make([]string, 0, len(cmd.Commands()))
			for _, c := range cmd.Commands() {
				names = append(names, c.Name())
			}
			if len(args) == 0 {
				return usageError("%s needs a command: %s", cmd.CommandPath(), strings.Join(names, ", "))
			}
			return usageError("unknown command %q for %q (its commands: %s)", args[0], cmd.CommandPath(), strings.Join(names, ", "))
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

// client is the api client the flags and the environment name.
func (a *app) client() (*client, error) {
	base := a.url
	if base == "" {
		base = a.opts.Getenv(EnvURL)
	}
	if base == "" {
		base = DefaultURL
	}
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, usageError("the api's URL %q is not an http:// or https:// URL with a host", base)
	}
	token := a.token
	if token == "" {
		token = a.opts.Getenv(EnvToken)
	}
	if token == "" {
		return nil, usageError("no admin token: set %s or give --token", EnvToken)
	}
	return &client{base: strings.TrimSuffix(u.String(), "/"), token: token,
		http: &http.Client{Timeout: requestTimeout}}, nil
}

// printJSON writes an answer's body as it came, ending in a newline.
func (a *app) printJSON(body []byte) {
	w := a.opts.Stdout
	_, _ = w.Write(body)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		_, _ = io.WriteString(w, "\n")
	}
}
