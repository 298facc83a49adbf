// Package operations runs the operator's long actions (redrive, rebuild,
// projection verify) in the background of the api and keeps their state in
// Postgres, where GET /v1/admin/operations/{id} reads it: progress, the
// differences found, and how it ended. At most one runs per target. A
// runner holds a session advisory lock while it runs, so an operation
// whose process stopped is seen as such (its lock is free) and ends failed;
// running it again is safe, since every operation only ever applies events
// through the subscribers' inboxes or rebuilds from the event store.
package operations

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// States of an operation.
const (
	StateRunning = "running"
	StateDone    = "done"
	StateFailed  = "failed"
)

// ErrRunning: an operation of the same target is running (a 409).
var ErrRunning = errors.New("an operation of this target is running")

// Operation is what GET /v1/admin/operations/{id} answers.
type Operation struct {
	ID            uuid.UUID  `json:"id"`
	Kind          string     `json:"kind"`
	Target        string     `json:"target"`
	State         string     `json:"state"`
	EventsApplied int64      `json:"events_applied"`
	Differences   int64      `json:"differences"`
	Error         *string    `json:"error"`
	StartedAt     time.Time  `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at"`
}

// Progress is what a running operation reports; safe for concurrent use.
type Progress struct {
	applied, differences atomic.Int64
}

// Applied adds n events applied.
func (p *Progress) Applied(n int) { p.applied.Add(int64(n)) }

// Differences adds n rows found different.
func (p *Progress) Differences(n int) { p.differences.Add(int64(n)) }

// Counts is what was reported so far: events applied, rows different.
func (p *Progress) Counts() (applied, differences int64) {
	return p.applied.Load(), p.differences.Load()
}

// Work is an operation's body. It returns nil when done.
type Work func(ctx context.Context, progress *Progress) error

// Runner starts operations on pool, each on a connection of its own.
type Runner struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	// ProgressEvery is how often a running operation's progress is saved.
	ProgressEvery time.Duration
}

// NewRunner makes a runner.
func NewRunner(pool *pgxpool.Pool, logger *slog.Logger) *Runner {
	return &Runner{pool: pool, logger: logger, ProgressEvery: 250 * time.Millisecond}
}

// Start records (within ctx) a running operation of kind on target and
// runs work in the background until it returns or life ends (the process
// stops: the operation then reads failed). It answers the operation as
// recorded, or ErrRunning.
func (r *Runner) Start(ctx, life context.Context, kind, target string, work Work) (Operation, error) {
	q := dbsqlc.New()
	if err := q.OperationFailAbandoned(ctx, r.pool, target); err != nil {
		return Operation{}, fmt.Errorf("operations: %w", err)
	}
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return Operation{}, fmt.Errorf("operations: %w", err)
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	key := int64(binary.BigEndian.Uint64(b[:]))
	// Locked before the row exists: no one can see it running and its lock
	// free.
	if err := q.OperationLock(ctx, conn, key); err != nil {
		conn.Release()
		return Operation{}, fmt.Errorf("operations: lock: %w", err)
	}
	row, err := q.OperationStart(ctx, conn, &dbsqlc.OperationStartParams{ID: uuid.New(), Kind: kind, Target: target, LockKey: key})
	if err != nil {
		r.unlock(conn, key)
		if database.IsUniqueViolation(err, "operations_one_running_idx") {
			return Operation{}, ErrRunning
		}
		return Operation{}, fmt.Errorf("operations: start: %w", err)
	}
	op := fromRow(row)
	go r.run(life, conn, key, op, work)
	return op, nil
}

func (r *Runner) unlock(conn *pgxpool.Conn, key int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := dbsqlc.New().OperationUnlock(ctx, conn, key); err != nil {
		// The lock stays with the connection: close it rather than hand it
		// back to the pool holding it.
		_ = conn.Conn().Close(ctx)
	}
	conn.Release()
}

func (r *Runner) run(ctx context.Context, conn *pgxpool.Conn, key int64, op Operation, work Work) {
	defer r.unlock(conn, key)
	q := dbsqlc.New()
	progress := &Progress{}
	done := make(chan error, 1)
	go func() { done <- work(ctx, progress) }()
	tick := time.NewTicker(r.ProgressEvery)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := q.OperationProgress(ctx, conn, &dbsqlc.OperationProgressParams{
				ID: op.ID, EventsApplied: progress.applied.Load(), Differences: progress.differences.Load(),
			}); err != nil && ctx.Err() == nil {
				r.logger.Warn("operation: progress not saved", "id", op.ID, "error", err)
			}
		case err := <-done:
			state, msg := StateDone, ""
			if err != nil {
				state, msg = StateFailed, err.Error()
				r.logger.Error("operation failed", "id", op.ID, "kind", op.Kind, "target", op.Target, "error", err)
			} else {
				r.logger.Info("operation done", "id", op.ID, "kind", op.Kind, "target", op.Target,
					"events_applied", progress.applied.Load(), "differences", progress.differences.Load())
			}
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			if err := q.OperationFinish(fctx, conn, &dbsqlc.OperationFinishParams{
				ID: op.ID, State: state, Error: msg,
				EventsApplied: progress.applied.Load(), Differences: progress.differences.Load(),
			}); err != nil {
				r.logger.Error("operation: end not saved (it will read failed)", "id", op.ID, "error", err)
			}
			return
		}
	}
}

// Get reads an operation (database.ErrNotFound when there is none); one
// whose runner is gone reads failed.
func Get(ctx context.Context, db *pgxpool.Pool, id uuid.UUID) (Operation, error) {
	q := dbsqlc.New()
	row, err := q.OperationGet(ctx, db, id)
	if err != nil {
		return Operation{}, fmt.Errorf("operations: %w", database.NotFound(err))
	}
	if row.State == StateRunning {
		if err := q.OperationFailAbandoned(ctx, db, row.Target); err != nil {
			return Operation{}, fmt.Errorf("operations: %w", err)
		}
		if row, err = q.OperationGet(ctx, db, id); err != nil {
			return Operation{}, fmt.Errorf("operations: %w", err)
		}
	}
	return fromRow(row), nil
}

func fromRow(r *dbsqlc.Operation) Operation {
	op := Operation{ID: r.ID, Kind: r.Kind, Target: r.Target, State: r.State, EventsApplied: r.EventsApplied,
		Differences: r.Differences, StartedAt: r.StartedAt.UTC()}
	if r.Error.Valid {
		op.Error = &r.Error.String
	}
	if r.FinishedAt != nil {
		f := r.FinishedAt.UTC()
		op.FinishedAt = &f
	}
	return op
}
