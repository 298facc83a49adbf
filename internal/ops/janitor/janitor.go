// Package janitor deletes what the system keeps only for a while: the
// idempotency keys past their 24 hours, and the inbox rows behind each
// deduplicated subscriber's watermark (internal/ops/inboxprune). It runs in the
// api.
package janitor

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/inboxprune"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// batch bounds one DELETE, so a large backlog is worked off in short
// statements that never hold many row locks.
const batch = 5000

// Sweep deletes every expired idempotency key, batch by batch, and returns
// how many it deleted.
func Sweep(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	var total int64
	for {
		n, err := dbsqlc.New().IdempotencyDeleteExpired(ctx, pool, batch)
		total += n
		if err != nil || n < batch {
			return total, err
		}
	}
}

// Run sweeps every interval until ctx ends: the expired idempotency keys,
// then the inbox of each of subscribers. Errors are logged, not fatal:
// Postgres being away for a while only delays the cleanup.
func Run(ctx context.Context, pool *pgxpool.Pool, interval time.Duration, logger *slog.Logger, subscribers []dispatch.Subscriber) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		n, err := Sweep(ctx, pool)
		if err != nil && ctx.Err() == nil {
			logger.Warn("janitor: sweep failed", "error", err)
		} else if n > 0 {
			logger.Info("janitor: expired idempotency keys deleted", "count", n)
		}
		for _, sub := range subscribers {
			res, err := inboxprune.Sweep(ctx, pool, sub)
			if err != nil && ctx.Err() == nil {
				logger.Warn("janitor: inbox prune failed", "subscriber", sub.Name(), "error", err)
			} else if res.Pruned > 0 {
				logger.Info("janitor: inbox pruned", "subscriber", sub.Name(), "rows", res.Pruned, "watermark", res.Watermark)
			}
		}
	}
}
