package billing_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// BenchmarkApply is the billing subscriber's side of a drain: batches of
// 500 file events of 8 owners (uploads of files, then their deletes, in
// time order, as a backlog holds them) applied as deliveries, each batch in
// its transaction with its inbox rows, out of order within windows of two
// batches.
// go test -run '^$' -bench Apply -benchtime 20x ./internal/subscribers/billing
func BenchmarkApply(b *testing.B) {
	pool, _ := testdb.New(b)
	ctx := b.Context()
	owners := make([]uuid.UUID, 8)
	for i := range owners {
		owners[i] = uuid.New()
	}
	const files, batch = 5000, 500
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	position := int64(0)
	applied := 0
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		var evs []eventstore.Event
		var deletes []eventstore.Event
		for i := range files {
			del := at.Add(time.Minute)
			for _, e := range events(b, file{id: uuid.New(), owner: owners[i%len(owners)], size: int64(1000 + i), uploaded: at, deleted: &del}) {
				position++
				e.Position = position
				if e.Version == 1 {
					evs = append(evs, e)
				} else {
					deletes = append(deletes, e)
				}
			}
			at = at.Add(time.Microsecond)
		}
		evs = append(evs, deletes...)
		// The relay publishes its partitions side by side, so a queue
		// holds the events out of time order within a window.
		for from := 0; from < len(evs); from += 2 * batch {
			w := evs[from:min(from+2*batch, len(evs))]
			rand.Shuffle(len(w), func(i, j int) { w[i], w[j] = w[j], w[i] })
		}
		b.StartTimer()
		for from := 0; from < len(evs); from += batch {
			if err := database.InTx(ctx, pool, func(tx *database.Tx) error {
				return dispatch.Deliver(ctx, tx, billing.Subscriber{}, evs[from:min(from+batch, len(evs))])
			}); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		applied += len(evs)
		at = at.Add(2 * time.Minute) // after this round's deletes
	}
	b.ReportMetric(float64(applied)/b.Elapsed().Seconds(), "events/s")
}
