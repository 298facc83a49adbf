package opstatus_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/opstatus"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/opstatustest"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// With no relay running, the status counts the outbox's events, names the
// open writing transaction, and reads each subscriber's position (inbox or
// watermark, whichever is higher) and dead letters.
func TestReadWithoutRelay(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	names := subscribers.Movable()

	s, err := opstatus.Read(ctx, pool, names)
	require.NoError(t, err)
	require.Equal(t, opstatus.Outbox{BlockedBy: []opstatus.Transaction{}}, s.Outbox)
	var idle []opstatus.Subscriber
	for _, name := range names.Names() {
		idle = append(idle, opstatus.Subscriber{Name: name})
	}
	require.Equal(t, idle, s.Subscribers)

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
	// storage is behind by the third and fourth events, billing not at all.
	byName := map[string]opstatus.Subscriber{}
	for _, sub := range s.Subscribers {
		byName[sub.Name] = sub
	}
	require.Len(t, byName, len(names))
	lagging := byName["storage"]
	require.Greater(t, lagging.LagSeconds, 0.0)
	require.Less(t, lagging.LagSeconds, 60.0)
	lagging.LagSeconds = 0
	require.Equal(t, opstatus.Subscriber{Name: "storage", AppliedPosition: events[1].Position, DeadLetters: 2, LagPositions: events[3].Position - events[1].Position}, lagging)
	require.Equal(t, opstatus.Subscriber{Name: "billing", AppliedPosition: events[3].Position, DeadLetters: 1}, byName["billing"])
}

// The lag is read from the event store: a subscriber nothing consumes for
// is behind by the newest event of its types, for as long as the oldest
// one it has not applied is old; what healing handed it shows too.
func TestLagAndHealsFromTheStore(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	subs := []dispatch.Subscriber{storage.Subscriber{}}

	old, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded, map[string]any{"v": 1}, time.Now().Add(-90*time.Second))
	require.NoError(t, err)
	job, err := eventstore.New(domain.StreamJob, uuid.New(), 1, domain.JobCreated, map[string]any{"v": 1}, time.Now())
	require.NoError(t, err)
	events := []eventstore.Event{old}
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, events) }))
	newer := opstatustest.Write(t, pool, 2)
	jobs := []eventstore.Event{job}
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, jobs) }))

	s, err := opstatus.Read(ctx, pool, subs)
	require.NoError(t, err)
	got := s.Subscribers[0]
	require.Equal(t, newer[1].Position, got.LagPositions, "behind by the newest event of its types, not by the job event after it")
	require.InDelta(t, 90, got.LagSeconds, 10, "for as long as its oldest unapplied event is old")
	require.Zero(t, got.Healed)
	require.Nil(t, got.LastHealedAt)

	_, err = pool.Exec(ctx, `INSERT INTO inbox (subscriber, event_id, position) VALUES ('storage', $1, $2)`, events[0].ID, events[0].Position)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO heals (subscriber, healed, last_position) VALUES ('storage', 1, $1)`, events[0].Position)
	require.NoError(t, err)
	s, err = opstatus.Read(ctx, pool, subs)
	require.NoError(t, err)
	got = s.Subscribers[0]
	require.Equal(t, newer[1].Position-events[0].Position, got.LagPositions)
	require.Less(t, got.LagSeconds, 30.0, "now as old as the oldest of the newer events")
	require.Equal(t, int64(1), got.Healed)
	require.NotNil(t, got.LastHealedAt)
}
