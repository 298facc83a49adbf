package outbox

import (
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// A run covers only positions of its own command and partition: it breaks
// where the partition changes or a position was skipped (another
// transaction may own it), and events are taken in position order.
func TestRunsSplitOnPartitionAndGap(t *testing.T) {
	a := uuid.New()
	b := uuid.New()
	for PartitionOf(b) == PartitionOf(a) {
		b = uuid.New()
	}
	pa, pb := PartitionOf(a), PartitionOf(b)
	ev := func(stream uuid.UUID, pos int64) eventstore.Event {
		return eventstore.Event{StreamID: stream, Position: pos}
	}
	got := runs([]eventstore.Event{
		ev(a, 10), ev(a, 11), ev(a, 12), // one run
		ev(b, 13),            // another partition
		ev(a, 14),            // back: a new run, 13 lies between
		ev(a, 16), ev(a, 17), // 15 was skipped
		ev(b, 19), ev(b, 18), // out of order in the slice
	})
	require.Equal(t, &dbsqlc.OutboxInsertParams{
		FirstPositions: []int64{10, 13, 14, 16, 18},
		LastPositions:  []int64{12, 13, 14, 17, 19},
		Partitions:     []int16{pa, pb, pa, pa, pb},
	}, got)
}
