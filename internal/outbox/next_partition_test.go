package outbox

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/dbsqlc"
)

// A lane's next cycle starts past the furthest partition it worked on,
// counting round from where it started, so lanes taking a share at a time
// come round to every partition.
func TestNextPartitionGoesRound(t *testing.T) {
	t.Parallel()
	rows := func(partitions ...int16) []*dbsqlc.OutboxLockAndClaimRow {
		out := make([]*dbsqlc.OutboxLockAndClaimRow, len(partitions))
		for i, p := range partitions {
			out[i] = &dbsqlc.OutboxLockAndClaimRow{Partition: p}
		}
		return out
	}
	require.EqualValues(t, 11, nextPartition(0, rows(3, 10, 7)))
	require.EqualValues(t, 2, nextPartition(60, rows(62, 1, 63)), "wraps past the last partition")
	require.EqualValues(t, 0, nextPartition(50, rows(63)))
	require.EqualValues(t, 6, nextPartition(5, rows(5)))
}
