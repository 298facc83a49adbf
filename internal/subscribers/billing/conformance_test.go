package billing_test

import (
	"testing"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/subscribertest"
)

// The billing subscriber gives the same rows inline and remote, in any
// order, with duplicates and redeliveries, once its pending ledger changes
// are folded (its Settle: before a fold they follow the batches they came
// in).
func TestBillingConforms(t *testing.T) {
	t.Parallel()
	subscribertest.Run(t, subscribertest.Features{New: func() dispatch.Subscriber { return billing.Subscriber{} }})
}
