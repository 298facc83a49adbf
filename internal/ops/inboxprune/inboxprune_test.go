package inboxprune_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/inboxprune"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

var movable = subscribers.Movable()

// history appends uploads and deletions of files of a few owners (and a
// job event, which neither subscriber takes) and returns them.
func history(t *testing.T, ctx context.Context, pool *pgxpool.Pool, files int) []eventstore.Event {
	t.Helper()
	owners := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	at := time.Now().Add(-time.Hour).Truncate(time.Microsecond)
	var all []eventstore.Event
	for i := range files {
		id, owner := uuid.New(), owners[i%len(owners)]
		up, err := eventstore.New(domain.StreamFile, id, 1, domain.FileUploaded,
			domain.FileUploadedData{OwnerID: owner, Name: "f", SizeBytes: int64(1000 + i), ContentType: "text/plain"}, at.Add(time.Duration(i)*time.Second))
		require.NoError(t, err)
		evs := []eventstore.Event{up}
		if i%3 == 0 {
			del, err := eventstore.New(domain.StreamFile, id, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: owner}, at.Add(time.Duration(i)*time.Second+time.Minute))
			require.NoError(t, err)
			evs = append(evs, del)
		}
		if i%5 == 0 {
			job, err := eventstore.New(domain.StreamJob, uuid.New(), 1, domain.JobCreated, domain.JobCreatedData{OwnerID: owner, Name: "j"}, at)
			require.NoError(t, err)
			evs = append(evs, job)
		}
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, evs) }))
		all = append(all, evs...)
	}
	return all
}

func deliver(t *testing.T, ctx context.Context, pool *pgxpool.Pool, events []eventstore.Event) {
	t.Helper()
	for _, sub := range movable {
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return dispatch.Deliver(ctx, tx, sub, events) }))
	}
}

// rows is every row both subscribers keep, as text, in a fixed order.
func rows(t *testing.T, ctx context.Context, pool *pgxpool.Pool) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"storage_files", "billing_files"} {
		r, err := pool.Query(ctx, "SELECT t::text FROM "+table+" t ORDER BY t::text")
		require.NoError(t, err)
		got, err := pgx.CollectRows(r, pgx.RowTo[string])
		require.NoError(t, err)
		out = append(out, got...)
	}
	require.NotEmpty(t, out)
	return out
}

func inboxRows(t *testing.T, ctx context.Context, pool *pgxpool.Pool, subscriber string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE subscriber = $1", subscriber).Scan(&n))
	return n
}

func sweep(t *testing.T, ctx context.Context, pool *pgxpool.Pool, sub dispatch.Subscriber) inboxprune.Result {
	t.Helper()
	res, err := inboxprune.Sweep(ctx, pool, sub)
	require.NoError(t, err)
	return res
}

// adoptUntil sweeps until the watermark reaches want. Snapshots span the
// whole server, so a transaction of a test running beside this one may
// hold a proposal back for a while.
func adoptUntil(t *testing.T, ctx context.Context, pool *pgxpool.Pool, sub dispatch.Subscriber, want int64) inboxprune.Result {
	t.Helper()
	var res inboxprune.Result
	var pruned int64
	require.Eventually(t, func() bool {
		res = sweep(t, ctx, pool, sub)
		pruned += res.Pruned
		return res.Watermark == want
	}, 30*time.Second, 20*time.Millisecond, "%s: watermark %d, want %d", sub.Name(), res.Watermark, want)
	res.Pruned = pruned
	return res
}

func TestRedeliveryAfterPruningChangesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	events := history(t, ctx, pool, 60)
	deliver(t, ctx, pool, events)
	before := rows(t, ctx, pool)
	head := events[len(events)-1].Position

	for _, sub := range movable {
		first := sweep(t, ctx, pool, sub)
		require.Zero(t, first.Watermark, "a proposal is never adopted in the sweep that makes it")
		require.Equal(t, head, first.Proposed)
		require.Positive(t, adoptUntil(t, ctx, pool, sub, head).Pruned)
		require.Zero(t, inboxRows(t, ctx, pool, sub.Name()), sub.Name())
	}

	// Every event of the history again, shuffled, in batches of all sizes,
	// some twice in a batch.
	again := append([]eventstore.Event(nil), events...)
	again = append(again, events[:10]...)
	rand.Shuffle(len(again), func(i, j int) { again[i], again[j] = again[j], again[i] })
	for len(again) > 0 {
		n := min(len(again), 1+rand.IntN(17))
		deliver(t, ctx, pool, again[:n])
		again = again[n:]
	}
	require.Equal(t, before, rows(t, ctx, pool))
	for _, sub := range movable {
		require.Zero(t, inboxRows(t, ctx, pool, sub.Name()), "a redelivery below the watermark claims no inbox row")
	}

	// Past the watermark, events still apply once.
	more := history(t, ctx, pool, 4)
	deliver(t, ctx, pool, more)
	grown := rows(t, ctx, pool)
	require.NotEqual(t, before, grown)
	deliver(t, ctx, pool, more)
	require.Equal(t, grown, rows(t, ctx, pool))
}

// A transaction that drew a position before a proposal and commits after it
// holds the watermark back until its event is applied.
func TestWatermarkWaitsForLateCommits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	sub := storage.Subscriber{}

	late, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = late.Rollback(ctx) }()
	up, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: uuid.New(), Name: "late", SizeBytes: 7, ContentType: "text/plain"}, time.Now())
	require.NoError(t, err)
	lateEvents := []eventstore.Event{up}
	require.NoError(t, eventstore.Append(ctx, late, lateEvents))

	events := history(t, ctx, pool, 5)
	deliver(t, ctx, pool, events)
	head := events[len(events)-1].Position
	require.Less(t, lateEvents[0].Position, events[0].Position)

	require.Equal(t, head, sweep(t, ctx, pool, sub).Proposed, "the open transaction's event is not visible yet")
	res := sweep(t, ctx, pool, sub)
	require.Zero(t, res.Watermark, "not adopted while a transaction running at the proposal is still open")

	require.NoError(t, late.Commit(ctx))
	res = sweep(t, ctx, pool, sub)
	require.Zero(t, res.Watermark, "not adopted: the late event is not applied")
	require.Equal(t, lateEvents[0].Position-1, res.Proposed)

	deliver(t, ctx, pool, lateEvents)
	adoptUntil(t, ctx, pool, sub, head)
	require.Zero(t, inboxRows(t, ctx, pool, sub.Name()))

	// The late event was applied exactly once.
	var files int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM storage_files WHERE file_id = $1", lateEvents[0].StreamID).Scan(&files))
	require.Equal(t, 1, files)
	deliver(t, ctx, pool, lateEvents)
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM storage_files WHERE file_id = $1", lateEvents[0].StreamID).Scan(&files))
	require.Equal(t, 1, files)
}
