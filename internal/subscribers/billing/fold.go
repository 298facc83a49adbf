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

// FoldBatch is how many pending changes one fold statement takes.
const FoldBatch = 20000

// Fold moves every pending ledger change (billing_pending) into the owners'
// ledgers (billing_levels), FoldBatch at a time in a transaction each, and
// returns how many it moved. No read changes: reads add the pending
// changes. Folding keeps what a read adds short, and does for many batches
// at once what each batch would otherwise do alone: rewrite its owners'
// ledger rows from its earliest change on.
func Fold(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	return foldAll(func() (n int64, err error) {
		err = database.InTx(ctx, pool, func(tx *database.Tx) (err error) {
			n, err = foldOnce(ctx, tx)
			return err
		})
		return n, err
	})
}

// Settle implements dispatch.Settler: every pending change is folded, in
// tx, into the tables its search_path finds first.
func (Subscriber) Settle(ctx context.Context, tx *database.Tx) error {
	_, err := foldAll(func() (int64, error) { return foldOnce(ctx, tx) })
	return err
}

// foldAll runs step, which folds at most FoldBatch pending changes, until
// a step takes fewer, and returns how many they took.
func foldAll(step func() (int64, error)) (int64, error) {
	var total int64
	for {
		n, err := step()
		total += n
		if err != nil {
			return total, fmt.Errorf("billing fold: %w", err)
		}
		if n < FoldBatch {
			return total, nil
		}
	}
}

// foldOnce folds at most FoldBatch pending changes in tx.
func foldOnce(ctx context.Context, tx *database.Tx) (int64, error) {
	q := dbsqlc.New()
	q.BillingPreferIndexes(ctx, tx, []string{"off"})
	if err := q.BillingFoldLock(ctx, tx, foldLockKey); err != nil {
		return 0, err
	}
	return q.BillingFold(ctx, tx, FoldBatch)
}
