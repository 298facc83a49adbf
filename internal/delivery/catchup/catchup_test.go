package catchup_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/catchup"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

func TestWait(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	owner, other := uuid.New(), uuid.New()

	upload := func(o uuid.UUID) eventstore.Event {
		e, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
			domain.FileUploadedData{OwnerID: o, Name: "f", SizeBytes: 1, ContentType: "text/plain"}, time.Now())
		require.NoError(t, err)
		evs := []eventstore.Event{e}
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
			return eventstore.Append(ctx, tx, evs)
		}))
		return evs[0]
	}
	deliver := func(e eventstore.Event) {
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
			return dispatch.Deliver(ctx, tx, storage.Subscriber{}, []eventstore.Event{e})
		}))
	}

	mine1, theirs, mine2 := upload(owner), upload(other), upload(owner)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	watchers := map[string]*catchup.Watcher{}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	for _, name := range subscribers.Movable().Names() {
		w := catchup.NewWatcher(pool, name, catchup.WatcherConfig{}, logger)
		watchers[name] = w
		go w.Run(runCtx)
	}
	wait := func(n int64, timeout time.Duration) error {
		return watchers[storage.Name].Wait(ctx, pool, owner, n, timeout)
	}

	require.NoError(t, wait(0, time.Second), "nothing asked")
	require.ErrorIs(t, wait(mine2.Position+1, time.Second), catchup.ErrBeyondHead)

	start := time.Now()
	require.ErrorIs(t, wait(mine1.Position, 100*time.Millisecond), catchup.ErrTimeout)
	require.Less(t, time.Since(start), time.Second)

	deliver(mine1)
	require.NoError(t, wait(mine1.Position, time.Second))
	// Another user's event is not the caller's to wait for.
	require.NoError(t, wait(theirs.Position, time.Second))
	require.ErrorIs(t, wait(mine2.Position, 50*time.Millisecond), catchup.ErrTimeout)
	// Another subscriber's progress does not count.
	require.ErrorIs(t, watchers["billing"].Wait(ctx, pool, owner, mine1.Position, 50*time.Millisecond), catchup.ErrTimeout)

	// A waiter returns as soon as the subscriber catches up.
	done := make(chan error, 1)
	go func() { done <- wait(mine2.Position, 5*time.Second) }()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned before the event was applied: %v", err)
	default:
	}
	applied := time.Now()
	deliver(mine2)
	watchers[storage.Name].Wake() // as the api does on the subscriber's NOTIFY
	select {
	case err := <-done:
		require.NoError(t, err)
		require.Less(t, time.Since(applied), time.Second)
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not return after the event was applied")
	}
}
