package heal

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/consumer"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// recorder is a subscriber of the file events that remembers what it
// applied (by position, committed or not) and fails on the events of
// failing.
type recorder struct {
	mu      sync.Mutex
	applied map[int64]int
	failing map[uuid.UUID]bool
}

func newRecorder() *recorder {
	return &recorder{applied: map[int64]int{}, failing: map[uuid.UUID]bool{}}
}

func (r *recorder) Name() string         { return "healtest" }
func (r *recorder) EventTypes() []string { return domain.FileEventTypes }

func (r *recorder) Handle(_ context.Context, _ *database.Tx, events []eventstore.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		if r.failing[e.ID] {
			return errors.New("cannot apply " + e.ID.String())
		}
	}
	for _, e := range events {
		r.applied[e.Position]++
	}
	return nil
}

func (r *recorder) positions() []int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int64
	for p, n := range r.applied {
		for range n {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// clock is a healer's time, moved by the test.
type clock struct {
	mu sync.Mutex
	at time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at = c.at.Add(d)
}

type fixture struct {
	pool  *pgxpool.Pool
	sub   *recorder
	clock *clock
	reg   *prometheus.Registry
	h     *Healer
}

func setup(t *testing.T, pool *pgxpool.Pool) *fixture {
	t.Helper()
	f := &fixture{pool: pool, sub: newRecorder(), clock: &clock{at: time.Unix(1_000_000, 0)}, reg: prometheus.NewRegistry()}
	h, err := New(pool, f.sub, Config{After: 30 * time.Second}, slog.New(slog.DiscardHandler), f.reg)
	require.NoError(t, err)
	h.now = f.clock.now
	f.h = h
	return f
}

// uploads appends n file uploads (and a job event, which the subscriber
// does not take) in one transaction and returns the uploads.
func uploads(t *testing.T, pool *pgxpool.Pool, n int) []eventstore.Event {
	t.Helper()
	owner := uuid.New()
	var evs []eventstore.Event
	for i := range n {
		e, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
			domain.FileUploadedData{OwnerID: owner, Name: "f", SizeBytes: int64(100 + i), ContentType: "text/plain"}, time.Now())
		require.NoError(t, err)
		evs = append(evs, e)
	}
	job, err := eventstore.New(domain.StreamJob, uuid.New(), 1, domain.JobCreated, domain.JobCreatedData{OwnerID: owner, Name: "j"}, time.Now())
	require.NoError(t, err)
	all := append(slices.Clone(evs), job)
	require.NoError(t, database.InTx(t.Context(), pool, func(tx *database.Tx) error { return eventstore.Append(t.Context(), tx, all) }))
	return all[:n]
}

// deliver applies events as a delivery would.
func (f *fixture) deliver(t *testing.T, events []eventstore.Event) {
	t.Helper()
	require.NoError(t, database.InTx(t.Context(), f.pool, func(tx *database.Tx) error {
		return dispatch.Deliver(t.Context(), tx, f.sub, events)
	}))
}

func (f *fixture) pass(t *testing.T) Result {
	t.Helper()
	res, err := f.h.Pass(t.Context())
	require.NoError(t, err)
	return res
}

// settle passes, at the same time, until every position up to head has
// committed or rolled back as the healer sees it. Snapshots span the whole
// server, so a transaction of a test running beside this one may hold that
// back for a while.
func (f *fixture) settle(t *testing.T, head int64) {
	t.Helper()
	require.Eventually(t, func() bool {
		f.pass(t)
		return f.h.settled >= head
	}, 30*time.Second, 20*time.Millisecond, "settled %d, want %d", f.h.settled, head)
}

func (f *fixture) healedRow(t *testing.T) int64 {
	t.Helper()
	var n int64
	err := f.pool.QueryRow(t.Context(), "SELECT healed FROM heals WHERE subscriber = $1", f.sub.Name()).Scan(&n)
	if errors.Is(database.NotFound(err), database.ErrNotFound) {
		return 0
	}
	require.NoError(t, err)
	return n
}

func positions(events ...eventstore.Event) []int64 {
	out := make([]int64, len(events))
	for i, e := range events {
		out[i] = e.Position
	}
	slices.Sort(out)
	return out
}

func TestHealsWhatWasNotAppliedOnceItIsDue(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	f := setup(t, pool)
	require.Zero(t, testutil.ToFloat64(f.h.applied), "the counter is there, at 0, before any heal")

	evs := uploads(t, pool, 20)
	lost := []eventstore.Event{evs[0], evs[7], evs[8], evs[19]}
	var delivered []eventstore.Event
	for _, e := range evs {
		if !slices.ContainsFunc(lost, func(l eventstore.Event) bool { return l.ID == e.ID }) {
			delivered = append(delivered, e)
		}
	}
	f.deliver(t, delivered)
	head := evs[len(evs)-1].Position + 1 // the job event

	first := f.pass(t)
	require.Zero(t, first.Missing, "nothing committed %s ago as far as the healer knows", f.h.cfg.After)
	f.settle(t, head)
	require.Less(t, f.h.cursor, evs[0].Position, "nothing due was looked at")

	f.clock.add(29 * time.Second)
	require.Zero(t, f.pass(t).Missing, "not yet: seen %s ago at most", 29*time.Second)

	f.clock.add(time.Second)
	res := f.pass(t)
	require.Equal(t, Result{Missing: 4, Healed: 4, Cursor: evs[0].Position - 1}, res, "the cursor stops below the first missing event")
	require.Equal(t, positions(evs...), f.sub.positions(), "each event applied once")
	require.Equal(t, int64(4), f.healedRow(t))
	require.Equal(t, 4.0, testutil.ToFloat64(f.h.applied))

	again := f.pass(t)
	require.Zero(t, again.Missing)
	require.Equal(t, head, again.Cursor, "all applied: the cursor is at the head")
	require.Equal(t, 4.0, testutil.ToFloat64(f.h.applied))
	require.Equal(t, positions(evs...), f.sub.positions())
}

func TestPassWithNothingMissingIsOneStatement(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	trips := &testdb.Trips{Name: testdb.StatementName}
	traced := testdb.Traced(t, pool, trips)
	f := setup(t, traced)

	evs := uploads(t, pool, 30)
	f.deliver(t, evs)
	f.settle(t, evs[len(evs)-1].Position+1)
	for range 3 {
		more := uploads(t, pool, 10)
		f.deliver(t, more)
		head := more[len(more)-1].Position + 1
		f.settle(t, head)
		f.clock.add(f.h.cfg.After)
		trips.Take()
		for range 5 {
			res := f.pass(t)
			require.Zero(t, res.Missing)
			require.Equal(t, head, res.Cursor, "the pass read up to what is due")
		}
		require.Equal(t, slices.Repeat([][]string{{"HealScan"}}, 5), trips.Take(), "one statement per pass")
	}
	require.Zero(t, testutil.ToFloat64(f.h.applied))
}

// The consumer's dead letters of a genuine event whose application failed
// keep it from healing; those of a forged or altered copy under a real
// event's id do not.
func TestFailedEventsWaitForTheOperatorForgedCopiesDoNot(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	f := setup(t, pool)
	evs := uploads(t, pool, 4)
	failed, mismatched, unknown, plain := evs[0], evs[1], evs[2], evs[3]
	p := &dbsqlc.DeadLetterRecordParams{Subscriber: f.sub.Name()}
	for _, d := range []struct {
		e      eventstore.Event
		reason string
	}{{failed, consumer.ReasonFailed}, {mismatched, consumer.ReasonMismatch}, {unknown, consumer.ReasonUnknownEvent}} {
		p.EventIds = append(p.EventIds, d.e.ID.String())
		p.Positions = append(p.Positions, d.e.Position+1000) // a forger's claim
		p.Reasons = append(p.Reasons, d.reason)
		p.Bodies = append(p.Bodies, []byte(`{"forged":true}`))
	}
	_, err := dbsqlc.New().DeadLetterRecord(t.Context(), pool, p)
	require.NoError(t, err)

	f.settle(t, plain.Position+1)
	f.clock.add(f.h.cfg.After)
	res := f.pass(t)
	require.Equal(t, 3, res.Missing, "a failed dead letter is not missing: it waits for the operator")
	require.Equal(t, 3, res.Healed)
	require.Equal(t, positions(mismatched, unknown, plain), f.sub.positions())
	require.Equal(t, plain.Position+1, f.pass(t).Cursor, "the cursor passes the failed one")

	// The operator's replay applies it once, and healing never again.
	f.deliver(t, []eventstore.Event{failed})
	f.clock.add(f.h.cfg.After)
	require.Zero(t, f.pass(t).Healed)
	require.Equal(t, positions(evs...), f.sub.positions())
}

// An event that fails to apply when healed is kept as a dead letter with
// reason failed, once; the others of its pass are healed.
func TestAnEventThatFailsWhenHealedIsDeadLettered(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	f := setup(t, pool)
	evs := uploads(t, pool, 5)
	bad := evs[2]
	f.sub.failing[bad.ID] = true
	f.pass(t)
	f.settle(t, evs[4].Position+1)
	f.clock.add(f.h.cfg.After)
	res := f.pass(t)
	require.Equal(t, 5, res.Missing)
	require.Equal(t, 4, res.Healed)
	require.Equal(t, positions(evs[0], evs[1], evs[3], evs[4]), f.sub.positions())

	var reason string
	var deaths int
	var body []byte
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT reason, deaths, body FROM dead_letters WHERE subscriber = $1 AND event_id = $2",
		f.sub.Name(), bad.ID.String()).Scan(&reason, &deaths, &body))
	require.Equal(t, consumer.ReasonFailed, reason)
	require.Equal(t, 1, deaths)
	require.True(t, json.Valid(body), "the stored event's message: %s", body)

	f.clock.add(f.h.cfg.After)
	next := f.pass(t)
	require.Zero(t, next.Missing, "left to the operator")
	require.Equal(t, evs[4].Position+1, next.Cursor)
}

// A transaction that drew a position and has not committed holds the
// cursor below it, however many commit after it; once it commits, its
// event is healed After later, not before.
func TestAnEventCommittedLateIsHealedAfterItsOwnCommit(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	f := setup(t, pool)
	before := uploads(t, pool, 3)
	f.deliver(t, before)

	late, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: uuid.New(), Name: "late", SizeBytes: 7, ContentType: "text/plain"}, time.Now())
	require.NoError(t, err)
	drawn, commit := make(chan struct{}), make(chan struct{})
	committed := make(chan error, 1)
	go func() {
		committed <- database.InTx(context.Background(), pool, func(tx *database.Tx) error {
			evs := []eventstore.Event{late}
			if err := eventstore.Append(context.Background(), tx, evs); err != nil {
				return err
			}
			late = evs[0]
			close(drawn)
			<-commit
			return nil
		})
	}()
	<-drawn
	after := uploads(t, pool, 3)
	f.deliver(t, after)
	for range 10 {
		res := f.pass(t)
		require.Less(t, res.Cursor, late.Position, "the cursor never passes a position still held")
		require.Zero(t, res.Missing)
	}
	f.clock.add(10 * f.h.cfg.After)
	require.Zero(t, f.pass(t).Missing)

	close(commit)
	require.NoError(t, <-committed)
	require.Zero(t, f.pass(t).Missing, "committed just now")
	f.settle(t, after[2].Position+1)
	f.clock.add(f.h.cfg.After - time.Second)
	require.Zero(t, f.pass(t).Missing, "committed less than %s ago", f.h.cfg.After)
	f.clock.add(time.Second)
	require.Equal(t, 1, f.pass(t).Healed)
	require.Equal(t, positions(append(append(before, after...), late)...), f.sub.positions())
	require.Equal(t, after[2].Position+1, f.pass(t).Cursor)
}

// While the consumer works through a backlog, what is due waits for it.
func TestHealingWaitsWhileTheQueueBringsABacklog(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	f := setup(t, pool)
	var backlog sync.Mutex
	held := true
	f.h.cfg.Hold = func() bool {
		backlog.Lock()
		defer backlog.Unlock()
		return held
	}
	evs := uploads(t, pool, 3)
	f.pass(t)
	f.settle(t, evs[2].Position+1)
	f.clock.add(f.h.cfg.After)
	res := f.pass(t)
	require.Zero(t, res.Healed, "held back")
	require.Zero(t, res.Missing, "a held pass does not look")
	require.Less(t, res.Cursor, evs[0].Position, "a held pass moves the cursor past nothing it did not look at")
	f.deliver(t, evs[:1]) // the queue brings one

	backlog.Lock()
	held = false
	backlog.Unlock()
	res = f.pass(t)
	require.Equal(t, 2, res.Healed)
	require.Equal(t, positions(evs...), f.sub.positions())
}

// A transaction that wrote in another database of the server, however
// long it stays open, holds nothing of this one back.
func TestATransactionOfAnotherDatabaseHoldsNothingBack(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	other, _ := testdb.New(t)
	held := testdb.Hold(t, other)
	var xid string
	require.NoError(t, held.Tx.QueryRow(t.Context(), "SELECT pg_current_xact_id()::text").Scan(&xid))

	f := setup(t, pool)
	evs := uploads(t, pool, 2)
	f.settle(t, evs[1].Position+1)
	f.clock.add(f.h.cfg.After)
	require.Equal(t, 2, f.pass(t).Healed, "while transaction %s stays open in another database", xid)
}

// A pass far below what is due walks up to it ScanSpan positions at a
// time; once caught up, it reads in one pass whatever became due since
// the last, however much that is.
func TestAPassReadsAtMostTheSpanBeyondWhatBecameDue(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	f := setup(t, pool)
	f.h.cfg.ScanSpan = 5
	evs := uploads(t, pool, 20)
	lost := evs[15]
	f.deliver(t, slices.Concat(evs[:15], evs[16:]))
	head := evs[19].Position + 1
	f.settle(t, head)
	f.clock.add(f.h.cfg.After)

	start := f.h.cursor
	var passes int
	for cursor := start; cursor < head; passes++ {
		require.Less(t, passes, 100, "the cursor stopped at %d, below %d", cursor, head)
		res := f.pass(t)
		require.LessOrEqual(t, res.Cursor-cursor, int64(f.h.cfg.ScanSpan), "a pass reads at most the span")
		if res.Healed > 0 {
			require.Equal(t, Result{Missing: 1, Healed: 1, Cursor: lost.Position - 1}, res)
			require.LessOrEqual(t, lost.Position-cursor, int64(f.h.cfg.ScanSpan), "found within the span")
		}
		cursor = res.Cursor
	}
	require.GreaterOrEqual(t, passes, int((head-start)/int64(f.h.cfg.ScanSpan)))
	require.Equal(t, positions(evs...), f.sub.positions(), "each event applied once")

	more := uploads(t, pool, 30)
	f.deliver(t, more)
	head = more[29].Position + 1
	f.settle(t, head)
	f.clock.add(f.h.cfg.After)
	require.Equal(t, head, f.pass(t).Cursor, "what became due since the last pass, in one pass")
}
