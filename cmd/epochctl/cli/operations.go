package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/spf13/cobra"
)

// operation is what GET /v1/admin/operations/{id} answers.
type operation struct {
	ID            string     `json:"id"`
	Kind          string     `json:"kind"`
	Target        string     `json:"target"`
	State         string     `json:"state"`
	EventsApplied int64      `json:"events_applied"`
	Differences   int64      `json:"differences"`
	Error         *string    `json:"error"`
	StartedAt     time.Time  `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at"`
}

// The states of an operation.
const (
	stateRunning = "running"
	stateDone    = "done"
	stateFailed  = "failed"
)

// verify says whether differences found make a done operation a failure
// of what the operator asked (ExitDifferences): a verify's, where they are
// what it looks for; a rebuild's or a redrive's are repairs.
type verify bool

// start sends the request that starts an operation (202 with its body and
// Location) and follows it to its end.
func (a *app) start(cmd *cobra.Command, path string, body any, v verify) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	ans, err := c.do(ctx, "POST", path, body)
	if err != nil {
		return err
	}
	var op operation
	if err := ans.decode(&op); err != nil {
		return err
	}
	location := ans.header.Get("Location")
	if location == "" {
		location = "/v1/admin/operations/" + op.ID
	}
	return a.follow(ctx, c, location, op, ans.body, v)
}

// follow polls the operation at path until it is no longer running, with
// a progress line on stderr, then prints it and says how it ended.
func (a *app) follow(ctx context.Context, c *client, path string, op operation, raw []byte, v verify) error {
	p := &progress{w: a.opts.Stderr, terminal: a.opts.StderrIsTerminal, since: time.Now()}
	interrupted := func() error {
		p.end()
		return &exitError{code: ExitInterrupted, msg: fmt.Sprintf(
			"interrupted; operation %s goes on in the api: epochctl operations wait %s", op.ID, op.ID)}
	}
	for op.State == stateRunning {
		p.show(op)
		select {
		case <-ctx.Done():
			return interrupted()
		case <-time.After(a.opts.PollInterval):
		}
		ans, err := c.do(ctx, "GET", path, nil)
		if err != nil && ctx.Err() != nil {
			return interrupted()
		}
		if err != nil {
			p.end()
			return err
		}
		if err := ans.decode(&op); err != nil {
			p.end()
			return err
		}
		raw = ans.body
	}
	p.show(op)
	p.end()
	return a.ended(op, raw, v)
}

// ended prints an operation that ended and returns the error its end
// makes of it.
func (a *app) ended(op operation, raw []byte, v verify) error {
	if a.json {
		a.printJSON(raw)
	} else {
		a.operationTable(op)
	}
	switch {
	case op.State == stateFailed:
		why := "no reason given"
		if op.Error != nil {
			why = *op.Error
		}
		return &exitError{code: ExitFailed, msg: fmt.Sprintf("operation %s (%s %s) failed: %s", op.ID, op.Kind, op.Target, why)}
	case op.State != stateDone:
		return &exitError{code: ExitUnavailable, msg: fmt.Sprintf("operation %s ended in a state epochctl does not know: %q", op.ID, op.State)}
	case bool(v) && op.Differences > 0:
		return &exitError{code: ExitDifferences, msg: fmt.Sprintf("operation %s (%s %s) found %d differences", op.ID, op.Kind, op.Target, op.Differences)}
	}
	return nil
}

// progress is the progress line of a followed operation on stderr: on a
// terminal one line rewritten in place, elsewhere (a log, a test) a line
// each time what it says changes.
type progress struct {
	w        io.Writer
	terminal bool
	since    time.Time
	last     string
	shown    bool
}

func (p *progress) show(op operation) {
	line := fmt.Sprintf("%s %s: %s, %d events applied, %d differences", op.Kind, op.Target, op.State,
		op.EventsApplied, op.Differences)
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s (%s)", line, time.Since(p.since).Round(100*time.Millisecond))
		p.shown = true
		return
	}
	if line != p.last {
		fmt.Fprintln(p.w, line)
		p.last = line
	}
}

// end ends the line a terminal kept rewriting.
func (p *progress) end() {
	if p.terminal && p.shown {
		fmt.Fprintln(p.w)
		p.shown = false
	}
}

func (a *app) operationsCmd() *cobra.Command {
	get := func(cmd *cobra.Command, id string) (*client, operation, answer, error) {
		if _, err := uuid.Parse(id); err != nil {
			return nil, operation{}, answer{}, usageError("operation id %q is not a UUID", id)
		}
		c, err := a.client()
		if err != nil {
			return nil, operation{}, answer{}, err
		}
		ans, err := c.do(cmd.Context(), "GET", "/v1/admin/operations/"+id, nil)
		if err != nil {
			return nil, operation{}, answer{}, err
		}
		var op operation
		if err := ans.decode(&op); err != nil {
			return nil, operation{}, answer{}, err
		}
		return c, op, ans, nil
	}
	show := &cobra.Command{
		Use:   "show OPERATION_ID",
		Short: "Show an operation as it stands (GET /v1/admin/operations/{id})",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, op, ans, err := get(cmd, args[0])
			if err != nil {
				return err
			}
			if a.json {
				a.printJSON(ans.body)
			} else {
				a.operationTable(op)
			}
			return nil
		},
	}
	wait := &cobra.Command{
		Use:   "wait OPERATION_ID",
		Short: "Follow an operation to its end; exit 4 when it ends failed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, op, ans, err := get(cmd, args[0])
			if err != nil {
				return err
			}
			return a.follow(cmd.Context(), c, "/v1/admin/operations/"+args[0], op, ans.body, false)
		},
	}
	return group("operations", "Read or follow an operation (redrive, rebuild, verify) by its id", show, wait)
}
