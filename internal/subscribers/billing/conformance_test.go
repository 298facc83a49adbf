package billing_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/subscribertest"
)

// The billing subscriber gives the same rows inline and remote, in any
// order, with duplicates and redeliveries, once its pending ledger changes
// are folded (before a fold they follow the batches they came in).
func TestBillingConforms(t *testing.T) {
	t.Parallel()
	subscribertest.Run(t, subscribertest.Features{
		New: func() dispatch.Subscriber { return billing.Subscriber{} },
		Settle: func(ctx context.Context, pool *pgxpool.Pool) error {
			_, err := billing.Fold(ctx, pool)
			return err
		},
	})
}
