// Package operator is the operator's path: what the admin calls of the
// operations API do, apart from how HTTP carries them. It lists, replays
// and discards a subscriber's dead letters, starts redrives and rebuilds as
// operations (internal/platform/operations runs them), and creates users and
// rotates their tokens. The HTTP layer reads requests and writes answers;
// the transactions are opened here, and a replayed event that fails again
// is isolated the way the consumer isolates a failing delivery
// (dispatch.Isolate).
package operator

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/operations"
)

// Config is what an Operator works with.
type Config struct {
	// Pool serves the calls that answer at once (dead letters, users).
	Pool *pgxpool.Pool
	// Background runs the operations, which outlive their request.
	Background *pgxpool.Pool
	// Subscribers are the subscribers it acts on: a replay or a redrive
	// hands events to these very implementations.
	Subscribers []dispatch.Subscriber
	// Timeout bounds each transaction of a replay of every dead letter.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Operator does the operator's calls.
type Operator struct {
	cfg  Config
	subs map[string]dispatch.Subscriber
	ops  *operations.Runner
}

// New makes an Operator.
func New(cfg Config) *Operator {
	subs := make(map[string]dispatch.Subscriber, len(cfg.Subscribers))
	for _, sub := range cfg.Subscribers {
		subs[sub.Name()] = sub
	}
	return &Operator{cfg: cfg, subs: subs, ops: operations.NewRunner(cfg.Background, cfg.Logger)}
}

// Subscriber finds a subscriber it acts on by name.
func (o *Operator) Subscriber(name string) (dispatch.Subscriber, bool) {
	sub, ok := o.subs[name]
	return sub, ok
}

// unreachable says the database could not be reached in time: the work
// stops rather than counting the event as failed.
func unreachable(ctx context.Context, err error) bool {
	return database.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) || ctx.Err() != nil
}
