package outbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/dbsqlc"
)

// Waker tells the relays, in every process, that commands have committed
// outbox rows: a NOTIFY on NotifyChannel sent after those commits, in a
// transaction of its own (see OutboxWake for why not inside them). Wake
// only asks for one; a single goroutine sends them, so wake-ups asked for
// while one is on its way share the next: at most one NOTIFY per round
// trip, however many commands commit.
//
// A wake-up is a hint. One lost (the process died after its command
// committed, or Postgres was away) leaves the rows to the relays' poll.
//
// It sends on a connection of its own, taken out of the pool: behind the
// commands queueing for a pooled connection under load, a wake-up would
// come late, and its lateness is the relays'.
type Waker struct {
	pool   *pgxpool.Pool
	logger *slog.Logger
	asked  chan struct{}
}

// NewWaker makes a Waker sending through pool; Run sends.
func NewWaker(pool *pgxpool.Pool, logger *slog.Logger) *Waker {
	return &Waker{pool: pool, logger: logger, asked: make(chan struct{}, 1)}
}

// Wake asks for a wake-up after the caller's commit. It never blocks. A
// nil Waker does nothing.
func (w *Waker) Wake() {
	if w == nil {
		return
	}
	select {
	case w.asked <- struct{}{}:
	default: // one is already asked for and will cover this commit too
	}
}

// Run sends the wake-ups asked for until ctx ends.
func (w *Waker) Run(ctx context.Context) {
	q := dbsqlc.New()
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			_ = conn.Close(context.WithoutCancel(ctx))
		}
	}()
	var lastLogged time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.asked:
		}
		// A connection that broke since the last wake-up fails this one:
		// it is sent again on a fresh connection.
		var err error
		for attempt := 0; attempt < 2; attempt++ {
			sendCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			if conn == nil {
				var pooled *pgxpool.Conn
				if pooled, err = w.pool.Acquire(sendCtx); err == nil {
					conn = pooled.Hijack()
				}
			}
			if conn != nil {
				if err = q.OutboxWake(sendCtx, conn); err != nil {
					_ = conn.Close(context.WithoutCancel(ctx))
					conn = nil
				}
			}
			cancel()
			if err == nil || ctx.Err() != nil {
				break
			}
		}
		if err == nil {
			continue
		}
		if ctx.Err() == nil && time.Since(lastLogged) > time.Minute {
			// Once a minute at most: during an outage every command asks.
			w.logger.Warn("outbox: could not wake the relays; they will find the rows when they poll", "error", err)
			lastLogged = time.Now()
		}
	}
}
