// Package opstatustest sets up, in a test's database, what opstatus
// reports: outbox rows no relay took, a writing transaction held open, and
// dead letters.
package opstatustest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// Events makes n events of one new file stream, versions 1 to n.
func Events(t testing.TB, n int) []eventstore.Event {
	t.Helper()
	stream := uuid.New()
	events := make([]eventstore.Event, n)
	for i := range events {
		e, err := eventstore.New("file", stream, int32(i+1), domain.FileEventTypes[0], map[string]any{"v": i + 1}, time.Now())
		require.NoError(t, err)
		events[i] = e
	}
	return events
}

// Write stores n events and queues them for the relay, committed, the way
// a command does.
func Write(t testing.TB, pool *pgxpool.Pool, n int) []eventstore.Event {
	t.Helper()
	events := Events(t, n)
	require.NoError(t, database.InTx(context.Background(), pool, func(tx *database.Tx) error {
		return appendAndEnqueue(tx, events)
	}))
	return events
}

// HoldOpen stores and queues an event in a transaction it leaves open
// until t ends, and returns that transaction's backend pid.
func HoldOpen(t testing.TB, pool *pgxpool.Pool) int32 {
	t.Helper()
	held := testdb.Hold(t, pool)
	require.NoError(t, appendAndEnqueue(held.Tx, Events(t, 1)))
	var pid int32
	require.NoError(t, held.Tx.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid))
	return pid
}

func appendAndEnqueue(tx *database.Tx, events []eventstore.Event) error {
	ctx := context.Background()
	if err := eventstore.Append(ctx, tx, events); err != nil {
		return err
	}
	if err := outbox.Enqueue(ctx, tx, events); err != nil {
		return err
	}
	return tx.Flush(ctx)
}

// DeadLetters keeps n dead letters for subscriber, and a second death of
// the first one (which must not count twice).
func DeadLetters(t testing.TB, pool *pgxpool.Pool, subscriber string, n int) {
	t.Helper()
	p := &dbsqlc.DeadLetterRecordParams{Subscriber: subscriber}
	for i := range n {
		p.EventIds = append(p.EventIds, fmt.Sprintf("%s-%d-%s", subscriber, i, uuid.NewString()))
		p.Positions = append(p.Positions, 0)
		p.Reasons = append(p.Reasons, "malformed")
		p.Bodies = append(p.Bodies, []byte("{"))
	}
	ctx := context.Background()
	_, err := dbsqlc.New().DeadLetterRecord(ctx, pool, p)
	require.NoError(t, err)
	if n > 0 {
		again := *p
		again.EventIds, again.Positions, again.Reasons, again.Bodies = p.EventIds[:1], p.Positions[:1], p.Reasons[:1], p.Bodies[:1]
		_, err = dbsqlc.New().DeadLetterRecord(ctx, pool, &again)
		require.NoError(t, err)
	}
}
