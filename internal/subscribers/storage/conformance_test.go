package storage_test

import (
	"testing"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/subscribertest"
)

// The storage subscriber gives the same rows inline and remote, in any
// order, with duplicates and redeliveries.
func TestStorageConforms(t *testing.T) {
	t.Parallel()
	subscribertest.Run(t, subscribertest.Features{New: func() dispatch.Subscriber { return storage.Subscriber{} }})
}
