package opstatus_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/opstatus"
	"github.com/catacloud/epoch/internal/opstatus/opstatustest"
	"github.com/catacloud/epoch/internal/testdb"
)

// With no relay running, the status counts the outbox's events, names the
// open writing transaction, and reads each subscriber's position (inbox or
// watermark, whichever is higher) and dead letters.
func TestReadWithoutRelay(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	names := []string{"storage", "billing"}

	s, err := opstatus.Read(ctx, pool, names)
	require.NoError(t, err)
	require.Equal(t, opstatus.Outbox{BlockedBy: []opstatus.Transaction{}}, s.Outbox)
	require.Equal(t, []opstatus.Subscriber{{Name: "storage"}, {Name: "billing"}}, s.Subscribers)

	events := append(opstatustest.Write(t, pool, 3), opstatustest.Write(t, pool, 1)...)
	pid := opstatustest.HoldOpen(t, pool)
	opstatustest.DeadLetters(t, pool, "storage", 2)
	opstatustest.DeadLetters(t, pool, "billing", 1)
	// storage applied the first two events; billing's inbox was pruned
	// below its watermark.
	_, err = pool.Exec(ctx, `INSERT INTO inbox (subscriber, event_id, position) VALUES ('storage', $1, $2), ('storage', $3, $4), ('billing', $1, $2)`,
		events[0].ID, events[0].Position, events[1].ID, events[1].Position)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO inbox_watermarks (subscriber, applied_through) VALUES ('billing', $1)`, events[3].Position)
	require.NoError(t, err)

	s, err = opstatus.Read(ctx, pool, names)
	require.NoError(t, err)
	require.EqualValues(t, 4, s.Outbox.Pending, "the held transaction's row is not visible yet")
	require.Greater(t, s.Outbox.OldestAgeSeconds, 0.0)
	require.Len(t, s.Outbox.BlockedBy, 1)
	require.Equal(t, pid, s.Outbox.BlockedBy[0].PID)
	require.Equal(t, "idle in transaction", s.Outbox.BlockedBy[0].State)
	require.Greater(t, s.Outbox.BlockedBy[0].AgeSeconds, 0.0)
	require.Equal(t, []opstatus.Subscriber{
		{Name: "storage", AppliedPosition: events[1].Position, DeadLetters: 2},
		{Name: "billing", AppliedPosition: events[3].Position, DeadLetters: 1},
	}, s.Subscribers)
}
