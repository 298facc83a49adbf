package operator

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/operations"
)

// redrivePage is how many stored events one transaction of a redrive reads
// and hands over.
const redrivePage = 1000

// A redrive hands a subscriber the stored events again, straight from
// the event store: it recovers messages that never arrived (a purged queue,
// a lost dead letter) and backfills a subscriber added later. Events go
// through the subscriber's inbox, so what it applied already is a no-op,
// and to that subscriber alone: nothing is published.
//
// redrive hands sub every stored event of its types with a position ≥ from, in
// position order, redrivePage at a time, each page in one transaction, and
// reports how many were new to it. It reads up to the head as it finds it
// when it gets there, so events committed meanwhile are included.
func redrive(ctx context.Context, pool *pgxpool.Pool, sub dispatch.Subscriber, from int64, progress *operations.Progress) error {
	after := max(from, 1) - 1
	for {
		page, err := eventstore.After(ctx, pool, after, redrivePage)
		if err != nil {
			return fmt.Errorf("redrive %s: %w", sub.Name(), err)
		}
		if len(page) == 0 {
			return nil
		}
		after = page[len(page)-1].Position
		var fresh int
		err = database.InTx(ctx, pool, func(tx *database.Tx) (err error) {
			if fresh, err = dispatch.DeliverCount(ctx, tx, sub, page); err != nil || fresh == 0 {
				return err
			}
			return dispatch.Announce(ctx, tx, sub.Name())
		})
		if err != nil {
			return fmt.Errorf("redrive %s after position %d: %w", sub.Name(), after, err)
		}
		progress.Applied(fresh)
	}
}
