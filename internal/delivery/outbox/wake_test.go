package outbox_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/projection"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// listenForWakeUps LISTENs on the relays' channel and returns a wait that
// reports whether a wake-up came within the time given.
func listenForWakeUps(t *testing.T, pool *pgxpool.Pool) func(within time.Duration) bool {
	t.Helper()
	ctx := context.Background()
	listener, err := pool.Acquire(ctx)
	require.NoError(t, err)
	t.Cleanup(listener.Release)
	_, err = listener.Exec(ctx, "LISTEN "+outbox.NotifyChannel)
	require.NoError(t, err)
	return func(within time.Duration) bool {
		waitCtx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		_, err := listener.Conn().WaitForNotification(waitCtx)
		if pgconn.Timeout(err) {
			return false
		}
		require.NoError(t, err)
		return true
	}
}

// A command's wake-up NOTIFY follows its COMMIT, in the COMMIT's round
// trip but as a transaction of its own (one inside would make every
// command's commit wait for the one before), and wakes a relay that would
// otherwise sleep through its poll interval.
func TestEnqueueWakesTheRelaysAfterTheCommit(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "file.uploaded")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)
	startRelay(t, e, outbox.Config{PollInterval: time.Hour}, nil)
	notified := listenForWakeUps(t, e.pool)
	trips := &testdb.Trips{Name: testdb.StatementName}
	traced := testdb.Traced(t, e.pool, trips)

	// Let the relay's first cycle (it wakes once on start) pass.
	time.Sleep(300 * time.Millisecond)
	events := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")}
	write(t, ctx, traced, events)
	require.True(t, notified(5*time.Second), "no NOTIFY after the commit")
	rec.waitAll(t, events, 5*time.Second)
	require.Equal(t, [][]string{
		{"BEGIN", "EventAppend"},
		{"OutboxInsert", "COMMIT", "OutboxWake"},
	}, trips.Take())
}

// A command that rolls back wakes no one.
func TestRolledBackCommandWakesNoOne(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	notified := listenForWakeUps(t, pool)
	boom := errors.New("boom")
	events := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")}
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		if err := eventstore.Append(ctx, tx, events); err != nil {
			return err
		}
		if err := outbox.Enqueue(ctx, tx, events); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.False(t, notified(300*time.Millisecond), "a NOTIFY for a rolled-back command")
}

// Every transaction that writes outbox rows is followed by a wake-up once
// it committed: a command's (its NOTIFY after the COMMIT, in the COMMIT's
// round trip), and the migrations', whose transactions goose begins and
// commits, so the api sends one wake-up once migrate applied them (none
// when there was nothing to apply: cmd/api's
// TestMigrationsWakeTheRelaysOnce).
func TestEveryOutboxWriteWakesTheRelaysAfterItsCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("command", func(t *testing.T) {
		t.Parallel()
		pool, _ := testdb.New(t)
		notified := listenForWakeUps(t, pool)
		trips := &testdb.Trips{Name: testdb.StatementName}
		d, err := dispatch.New([]dispatch.Subscriber{projection.Subscriber{}}, nil, nil)
		require.NoError(t, err)
		svc := command.NewService(testdb.Traced(t, pool, trips), d)
		require.NoError(t, svc.Run(ctx, func(tx *database.Tx) error {
			_, err := svc.CreateJob(ctx, tx, uuid.New(), "j")
			return err
		}))
		require.True(t, notified(5*time.Second), "no NOTIFY after the command's commit")
		sent := trips.Take()
		require.Equal(t, []string{"COMMIT", "OutboxWake"}, sent[len(sent)-1][len(sent[len(sent)-1])-2:])
	})
}
