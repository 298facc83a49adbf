package billing_test

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
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// TestStatementWaitsForATransactionOpenAcrossTheEnd: an upload whose event
// is written before a period's end, in a transaction held open past the
// end, is in that period's statement, and the statement does not close
// before that transaction commits; billing applied everything else long
// before.
func TestStatementWaitsForATransactionOpenAcrossTheEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	const period = 3 * time.Second
	settings, err := billing.NewSettings(period.String(), "UTC", "0.00003", "USD")
	require.NoError(t, err)
	closer := billing.NewCloser(pool, billing.CloserConfig{Settings: settings}, logger)
	owner := uuid.New()

	upload := func(tx *database.Tx, size int64) []eventstore.Event {
		e, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
			domain.FileUploadedData{OwnerID: owner, Name: "f", SizeBytes: size, ContentType: "a/b"}, time.Time{})
		require.NoError(t, err)
		evs := []eventstore.Event{e}
		require.NoError(t, eventstore.Append(ctx, tx, evs))
		return evs
	}
	apply := func(evs []eventstore.Event) {
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
			return dispatch.Deliver(ctx, tx, billing.Subscriber{}, evs)
		}))
	}
	clock := func() time.Time {
		var now time.Time
		require.NoError(t, pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now))
		return now
	}
	// Start early in a period, so the held write lands well before its end.
	for now := clock(); now.Sub(now.Truncate(period)) > period/3; now = clock() {
		time.Sleep(50 * time.Millisecond)
	}
	var first []eventstore.Event
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { first = upload(tx, 1000); return nil }))
	apply(first)
	end := first[0].OccurredAt.Truncate(period).Add(period)

	// The held transaction: its event is written now, before the end.
	held, err := pool.Begin(ctx)
	require.NoError(t, err)
	defer held.Rollback(ctx)
	heldEvent, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: owner, Name: "late", SizeBytes: 7, ContentType: "a/b"}, time.Time{})
	require.NoError(t, err)
	heldEvents := []eventstore.Event{heldEvent}
	require.NoError(t, eventstore.Append(ctx, held, heldEvents))
	require.True(t, heldEvents[0].OccurredAt.Before(end))

	// Past the end, with the closer ticking and billing caught up on all
	// else: no statement closes for the period.
	for clock().Before(end.Add(time.Second)) {
		require.NoError(t, closer.Tick(ctx))
		time.Sleep(100 * time.Millisecond)
	}
	for range 10 {
		require.NoError(t, closer.Tick(ctx))
	}
	var closed int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM billing_statements").Scan(&closed))
	require.Zero(t, closed, "a statement closed while a transaction that wrote an event of its period was open")

	require.NoError(t, held.Commit(ctx))
	apply(heldEvents)
	deadline := time.Now().Add(10 * time.Second)
	for closed == 0 && time.Now().Before(deadline) {
		require.NoError(t, closer.Tick(ctx))
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM billing_statements").Scan(&closed))
		time.Sleep(50 * time.Millisecond)
	}
	require.Equal(t, 1, closed)
	sts, _, err := billing.Statements(ctx, pool, owner, time.Time{}, 10, settings)
	require.NoError(t, err)
	st := sts[len(sts)-1]
	require.Equal(t, billing.StateClosed, st.State)
	require.Equal(t, end, st.PeriodEnd)
	require.Equal(t, heldEvents[0].Position, *st.CoveredPosition, "the held event is in the statement")
	// Byte-seconds of both uploads from their times to the end.
	want := billing.FormatDecimal(bsUpTo(first[0].OccurredAt, end, 1000), 6)
	got := bsUpTo(heldEvents[0].OccurredAt, end, 7)
	got.Add(got, rat(want))
	require.Equal(t, billing.FormatDecimal(got, 6), st.ByteSeconds)
}

// TestAdvanceClosesNothing: Advance folds the pending ledger changes and
// moves billing's progress past what it applied, and closes no statement,
// even of a period that ended; the next look closes it.
func TestAdvanceClosesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	settings, err := billing.NewSettings("1h", "UTC", "0.00003", "USD")
	require.NoError(t, err)
	closer := billing.NewCloser(pool, billing.CloserConfig{Settings: settings}, slog.New(slog.DiscardHandler))
	owner := uuid.New()
	// In the last period that ended.
	at := time.Now().UTC().Truncate(time.Hour).Add(-30 * time.Minute)
	e, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: owner, Name: "f", SizeBytes: 1000, ContentType: "a/b"}, at)
	require.NoError(t, err)
	evs := []eventstore.Event{e}
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
		if err := eventstore.Append(ctx, tx, evs); err != nil {
			return err
		}
		return dispatch.Deliver(ctx, tx, billing.Subscriber{}, evs)
	}))
	count := func(query string) (n int64) {
		require.NoError(t, pool.QueryRow(ctx, query).Scan(&n))
		return n
	}
	require.Equal(t, int64(1), count("SELECT count(*) FROM billing_pending"))

	require.NoError(t, closer.Advance(ctx))
	require.Zero(t, count("SELECT count(*) FROM billing_pending"), "folded")
	// Progress moves in two looks (proposed, then taken once the
	// transactions running at the first have ended).
	require.Eventually(t, func() bool {
		require.NoError(t, closer.Advance(ctx))
		return count("SELECT complete_through FROM billing_progress") >= evs[0].Position
	}, 10*time.Second, 20*time.Millisecond)
	require.Zero(t, count("SELECT count(*) FROM billing_statements"), "Advance closes nothing")

	require.Eventually(t, func() bool {
		require.NoError(t, closer.Tick(ctx))
		return count("SELECT count(*) FROM billing_statements") == 1
	}, 10*time.Second, 20*time.Millisecond, "the next looks close the ended period")
}
