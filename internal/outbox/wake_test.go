package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/eventstore"
	"github.com/catacloud/epoch/internal/outbox"
	"github.com/catacloud/epoch/internal/testbroker"
	"github.com/catacloud/epoch/internal/testdb"
)

// startWaker runs a Waker on pool until the test ends.
func startWaker(t *testing.T, pool *pgxpool.Pool) *outbox.Waker {
	t.Helper()
	waker := outbox.NewWaker(pool, testLogger(t))
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go waker.Run(ctx)
	return waker
}

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

// A command's transaction queues its rows without a NOTIFY (which would
// serialise every command's commit); the Waker's, sent after, wakes a relay
// that would otherwise sleep through its poll interval.
func TestWakerWakesTheRelayAfterTheCommit(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "file.uploaded")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)
	startRelay(t, e, outbox.Config{PollInterval: time.Hour}, nil)
	waker := startWaker(t, e.pool)
	notified := listenForWakeUps(t, e.pool)

	// Let the relay's first cycle (it wakes once on start) pass.
	time.Sleep(300 * time.Millisecond)
	events := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")}
	write(t, ctx, e.pool, events)
	require.False(t, notified(300*time.Millisecond), "the command's own transaction sent a NOTIFY")
	require.False(t, rec.has(events[0].ID), "relayed without a wake-up")

	for range 3 { // asked for at once, they may share one NOTIFY
		waker.Wake()
	}
	require.True(t, notified(5*time.Second), "no NOTIFY after Wake")
	rec.waitAll(t, events, 5*time.Second)
	var nilWaker *outbox.Waker
	nilWaker.Wake() // a nil Waker does nothing
}

// The waker's connection killed between two wake-ups: the next one is sent
// on a fresh connection, not lost.
func TestWakerSurvivesALostConnection(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	ctx := context.Background()
	waker := startWaker(t, pool)
	notified := listenForWakeUps(t, pool)

	waker.Wake()
	require.True(t, notified(5*time.Second), "no NOTIFY after the first Wake")
	var killed int
	require.NoError(t, pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE '%name: OutboxWake%' AND pid <> pg_backend_pid()`).Scan(&killed))
	require.Equal(t, 1, killed, "the waker's connection")
	waker.Wake()
	require.True(t, notified(5*time.Second), "the wake-up after the connection loss was lost")
}

// Wake never blocks, even while nothing sends (the waker's Run is not
// running): the asks fold into one.
func TestWakeNeverBlocks(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	waker := outbox.NewWaker(pool, testLogger(t))
	done := make(chan struct{})
	go func() {
		for range 1000 {
			waker.Wake()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Wake blocked")
	}
}
