package billing

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// foldLockKey is the transaction lock that lets one fold at a time write
// the owners' ledgers.
const foldLockKey = 0x6570_6f66_6f6c_6473 // "epofolds"

// FoldBatch is how many pending changes one fold transaction takes.
const FoldBatch = 20000

// Fold moves every pending ledger change (billing_pending) into the owners'
// ledgers (billing_levels), FoldBatch at a time, and returns how many it
// moved. No read changes: reads add the pending changes. Folding keeps what
// a read adds short, and does for many batches at once what each batch
// would otherwise do alone: rewrite its owners' ledger rows from its
// earliest change on.
func Fold(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	q := dbsqlc.New()
	var total int64
	for {
		var n int64
		err := database.InTx(ctx, pool, func(tx *database.Tx) error {
			q.BillingPreferIndexes(ctx, tx, []string{"off"})
			if err := q.BillingFoldLock(ctx, tx, foldLockKey); err != nil {
				return err
			}
			var err error
			n, err = q.BillingFold(ctx, tx, FoldBatch)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("billing fold: %w", err)
		}
		total += n
		if n < FoldBatch {
			return total, nil
		}
	}
}
