// Package subscribertest is the conformance suite every movable subscriber
// (a dispatch.Subscriber that runs inline or remote) must pass, as every
// Watermill adapter runs pubsub/tests: the subscriber's package calls Run
// with its Features, one call per subscriber.
//
// The suite makes histories of events and delivers them both ways the
// system does: inline, with dispatch.Deliver in a transaction (what a
// command's Dispatch does for an inline subscriber), and remote, as the
// messages the relay publishes (outbox.Message of the stored events) on a
// RabbitMQ queue of the test's own vhost, applied by internal/delivery/consumer. It
// delivers them in any order, with duplicates (within a batch and across
// batches), cut into batches anywhere, and after every batch compares the
// subscriber's rows with a reference: the events delivered so far, each
// applied once and alone, in position order, to empty tables of a database
// of their own. The rows compared are every column of every row of the
// subscriber's tables, so a subscriber's rows must follow from its events
// alone (no clock, no serial ids), which is what lets it move between the
// two paths.
//
// The histories and orders come from one seed, logged when a test fails;
// EPOCH_SUBSCRIBERTEST_SEED replays it.
package subscribertest

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// Features describes a movable subscriber to the suite.
type Features struct {
	// New makes the subscriber under test (required). Each path, each
	// consumer and the reference get one of their own: nothing it keeps
	// in memory is shared between them.
	New func() dispatch.Subscriber
	// Tables are the tables its rows live in, compared whole. Default:
	// its Tables() when it is a dispatch.Rebuildable.
	Tables []string
	// Prepare, when set, runs on every database the suite makes, before
	// any event: for a subscriber whose tables are not in schema/ (one a
	// test defines).
	Prepare func(ctx context.Context, db database.DBTX) error
	// Settle, when set, runs on a database before its rows are read for a
	// comparison, the reference's too: for a subscriber that moves some
	// of its rows on later, away from Handle (billing folds its pending
	// ledger changes), so that the rows compared are the settled ones.
	// Default: its Settle when it is a dispatch.Settler.
	Settle func(ctx context.Context, pool *pgxpool.Pool) error
	// History makes one history of new streams (default FileHistory). It
	// may hold events of types the subscriber does not handle: they must
	// change nothing. Every history must give the subscriber rows to
	// write, or the suite would compare nothing.
	History func(r *rand.Rand) []eventstore.Event
	// Rounds is how many histories each test delivers (default 6). The
	// first three rounds of AnyOrder are the fixed edge cases (anyOrder).
	Rounds int
}

// Run runs the suite on the subscriber f describes, each test in parallel
// on its own database (and vhost):
//
//   - InlineAnyOrder, RemoteAnyOrder: each round's history delivered in
//     any order, with duplicates, in batches cut anywhere; after every
//     batch the rows are the reference's rows of the events delivered so
//     far.
//   - InlineRedelivery, RemoteRedelivery: each round's history delivered
//     once in order, then again in any order with duplicates: after every
//     batch of the redelivery the rows are as they were, and no event
//     reached the subscriber's Handle again.
//   - Moved: commands commit the history with the subscriber inline or
//     remote, its placement changing between commands as a configuration
//     change would, while the relay publishes what committed, some of it
//     more than once; after every step the rows are the reference's rows
//     of what either path applied, and each event reached exactly one of
//     the two Handles.
func Run(t *testing.T, f Features) {
	t.Helper()
	s := newSuite(t, f)
	for _, tc := range []struct {
		name string
		run  func(t *testing.T, e *env)
	}{
		{"InlineAnyOrder", func(t *testing.T, e *env) { testAnyOrder(t, e, e.inline()) }},
		{"RemoteAnyOrder", func(t *testing.T, e *env) { testAnyOrder(t, e, e.remote(t)) }},
		{"InlineRedelivery", func(t *testing.T, e *env) { testRedelivery(t, e, e.inline()) }},
		{"RemoteRedelivery", func(t *testing.T, e *env) { testRedelivery(t, e, e.remote(t)) }},
		{"Moved", testMoved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(t, s.env(t))
		})
	}
}

// testAnyOrder: the same rows from the same events, whatever their order,
// repetition and batching.
func testAnyOrder(t *testing.T, e *env, p path) {
	for n := range e.s.f.Rounds {
		rd := e.newRound(t, n)
		e.append(t, rd, rd.all(), nil)
		plan := anyOrder(e.r, n, len(rd.made))
		applied := map[int]bool{}
		for b, batch := range plan {
			e.deliver(t, p, rd, batch)
			for _, i := range batch {
				applied[i] = true
			}
			e.requireRows(t, rd, applied, fmt.Sprintf("%s, round %d, after batch %d of %v", p, n, b+1, plan))
		}
	}
}

// testRedelivery: once its rows exist, an event delivered again changes
// nothing and never reaches Handle.
func testRedelivery(t *testing.T, e *env, p path) {
	for n := range e.s.f.Rounds {
		rd := e.newRound(t, n)
		all := rd.all()
		e.append(t, rd, all, nil)
		for _, batch := range commands(e.r, len(all)) {
			e.deliver(t, p, rd, batch)
		}
		applied := map[int]bool{}
		for _, i := range all {
			applied[i] = true
		}
		want := e.requireRows(t, rd, applied, fmt.Sprintf("%s, round %d, after the first delivery, in order", p, n))
		handled := p.handled().total()
		plan := shuffled(e.r, all)
		for b, batch := range plan {
			e.deliver(t, p, rd, batch)
			if got := e.rows(t); !slices.Equal(got, want) {
				t.Fatal(e.mismatch(rd, applied, fmt.Sprintf("%s, round %d, redelivery batch %d of %v changed the rows", p, n, b+1, plan), got, want))
			}
		}
		require.Equal(t, handled, p.handled().total(), "%s, round %d: redelivered events reached Handle again (plan %v)", p, n, plan)
	}
}

// testMoved: a subscriber moved between inline and remote while events
// flow keeps the rows it would have kept in one place.
func testMoved(t *testing.T, e *env) {
	in, out := e.inline(), e.remote(t)
	placed := func(inline bool) *dispatch.Dispatcher {
		var names []string
		if inline {
			names = []string{e.s.name}
		}
		d, err := dispatch.New(nil, []dispatch.Subscriber{in.sub}, names)
		require.NoError(t, err)
		return d
	}
	atCommand, atWorker := placed(true), placed(false)
	for n := range e.s.f.Rounds {
		rd := e.newRound(t, n)
		applied := map[int]bool{}
		var committed, ranInline []int
		inline := e.r.IntN(2) == 0
		for c, cmd := range commands(e.r, len(rd.made)) {
			if e.r.IntN(3) == 0 {
				inline = !inline // EPOCH_INLINE_SUBSCRIBERS changed, and the api restarted
			}
			d := atWorker
			if inline {
				d = atCommand
				ranInline = append(ranInline, cmd...)
				for _, i := range cmd {
					applied[i] = true
				}
			}
			e.append(t, rd, cmd, d)
			committed = append(committed, cmd...)
			step := fmt.Sprintf("moved, round %d, command %d %v (inline %v)", n, c+1, cmd, inline)
			if e.r.IntN(2) == 0 {
				// The relay publishes some of what committed, some of it
				// again (a relay that died before deleting its rows).
				burst := make([]int, 1+e.r.IntN(len(committed)))
				for k := range burst {
					burst[k] = committed[e.r.IntN(len(committed))]
				}
				e.deliver(t, out, rd, burst)
				for _, i := range burst {
					applied[i] = true
				}
				step += fmt.Sprintf(", then the relay published %v", burst)
			}
			e.requireRows(t, rd, applied, step)
		}
		// In the end the relay has published every event, some twice.
		plan := shuffled(e.r, rd.all())
		for b, batch := range plan {
			e.deliver(t, out, rd, batch)
			for _, i := range batch {
				applied[i] = true
			}
			e.requireRows(t, rd, applied, fmt.Sprintf("moved, round %d, the relay's batch %d of %v", n, b+1, plan))
		}
		for i, ev := range rd.stored {
			if !slices.Contains(e.s.types, ev.Type) {
				continue
			}
			wasInline := slices.Contains(ranInline, i)
			require.Equal(t, wasInline, in.handled().has(ev.ID), "round %d: event #%d (its command ran inline: %v) reached the inline Handle", n, i, wasInline)
			require.Equal(t, !wasInline, out.handled().has(ev.ID), "round %d: event #%d (its command ran inline: %v) reached the consumers' Handle", n, i, wasInline)
		}
	}
}

// suite is one Run: the subscriber described, and the reference all its
// tests compare with.
type suite struct {
	f     Features
	name  string
	types []string
	seed  uint64
	ref   *reference
}

func newSuite(t *testing.T, f Features) *suite {
	t.Helper()
	if f.New == nil {
		t.Fatal("subscribertest: Features.New is required")
	}
	sub := f.New()
	if f.Tables == nil {
		if rb, ok := sub.(dispatch.Rebuildable); ok {
			f.Tables = rb.Tables()
		}
	}
	if s, ok := sub.(dispatch.Settler); ok && f.Settle == nil {
		f.Settle = func(ctx context.Context, pool *pgxpool.Pool) error {
			return database.InTx(ctx, pool, func(tx *database.Tx) error { return s.Settle(ctx, tx) })
		}
	}
	if len(f.Tables) == 0 {
		t.Fatal("subscribertest: no tables to compare: set Features.Tables, or make the subscriber a dispatch.Rebuildable")
	}
	if f.History == nil {
		f.History = FileHistory
	}
	if f.Rounds == 0 {
		f.Rounds = 6
	}
	s := &suite{f: f, name: sub.Name(), types: sub.EventTypes(), seed: runSeed(t)}
	pool, _ := testdb.New(t)
	s.prepare(t, pool)
	s.ref = &reference{pool: pool, sub: f.New(), tables: f.Tables, settle: f.Settle}
	return s
}

func (s *suite) prepare(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	if s.f.Prepare != nil {
		require.NoError(t, s.f.Prepare(t.Context(), pool), "subscribertest: Features.Prepare")
	}
}

// seedOnce is the seed of this process's runs: EPOCH_SUBSCRIBERTEST_SEED,
// or the clock.
var seedOnce = sync.OnceValues(func() (uint64, error) {
	if v := os.Getenv("EPOCH_SUBSCRIBERTEST_SEED"); v != "" {
		return strconv.ParseUint(v, 10, 64)
	}
	return uint64(time.Now().UnixNano()), nil
})

func runSeed(t *testing.T) uint64 {
	t.Helper()
	seed, err := seedOnce()
	require.NoError(t, err, "EPOCH_SUBSCRIBERTEST_SEED")
	return seed
}

// env is one test's own database and random source. The source depends
// only on the seed and the test's name, so a failing test replays alone.
type env struct {
	s    *suite
	r    *rand.Rand
	pool *pgxpool.Pool

	// What the test did, logged at its end (go test -v).
	events, batches, deliveries, checks int
}

func (s *suite) env(t *testing.T) *env {
	t.Helper()
	pool, _ := testdb.New(t)
	s.prepare(t, pool)
	h := fnv.New64a()
	_, _ = h.Write([]byte(t.Name()))
	e := &env{s: s, r: rand.New(rand.NewPCG(s.seed, h.Sum64())), pool: pool}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("subscribertest: replay with EPOCH_SUBSCRIBERTEST_SEED=%d go test -run '^%s$'", s.seed, regexp.QuoteMeta(t.Name()))
			return
		}
		t.Logf("%d rounds, %d events, %d deliveries in %d batches, rows compared %d times", s.f.Rounds, e.events, e.deliveries, e.batches, e.checks)
	})
	return e
}

// round is one history: the events as the commands made them (what inline
// subscribers get) and, once appended, as the event store holds them
// (what the relay publishes and the reference applies).
type round struct {
	made   []eventstore.Event
	stored []eventstore.Event
}

// newRound makes round n's history and empties the subscriber's tables:
// each round starts from no rows, as the reference does. Nothing is
// delivered between rounds, so no consumer is writing then.
func (e *env) newRound(t *testing.T, n int) *round {
	t.Helper()
	_, err := e.pool.Exec(t.Context(), truncate(e.s.f.Tables))
	require.NoError(t, err)
	made := e.s.f.History(e.r)
	require.NotEmpty(t, made, "round %d: Features.History made no events", n)
	e.events += len(made)
	return &round{made: made, stored: make([]eventstore.Event, len(made))}
}

func (rd *round) all() []int {
	all := make([]int, len(rd.made))
	for i := range all {
		all[i] = i
	}
	return all
}

// append commits the events of rd at idx (consecutive) as a command does:
// appended, then handed to d (when not nil) in the same transaction. It
// reads them back as stored.
func (e *env) append(t *testing.T, rd *round, idx []int, d *dispatch.Dispatcher) {
	t.Helper()
	ctx := t.Context()
	events := make([]eventstore.Event, len(idx))
	for k, i := range idx {
		events[k] = rd.made[i]
	}
	require.NoError(t, database.InTx(ctx, e.pool, func(tx *database.Tx) error {
		if err := eventstore.Append(ctx, tx, events); err != nil {
			return err
		}
		if d == nil {
			return nil
		}
		return d.Dispatch(ctx, tx, events)
	}))
	stored, err := eventstore.After(ctx, e.pool, events[0].Position-1, int32(len(events)))
	require.NoError(t, err)
	require.Len(t, stored, len(events))
	for k, i := range idx {
		require.Equal(t, events[k].ID, stored[k].ID)
		rd.made[i], rd.stored[i] = events[k], stored[k]
	}
}

// deliver hands batch to p, counting.
func (e *env) deliver(t *testing.T, p path, rd *round, batch []int) {
	t.Helper()
	e.batches++
	e.deliveries += len(batch)
	p.deliver(t, rd, batch)
}

// requireRows fails t unless the subscriber's rows are the reference's
// rows of the events applied, and returns them.
func (e *env) requireRows(t *testing.T, rd *round, applied map[int]bool, when string) []string {
	t.Helper()
	var events []eventstore.Event
	for i, ev := range rd.stored {
		if applied[i] {
			events = append(events, ev)
		}
	}
	want := e.s.ref.rows(t, events)
	if len(events) == len(rd.stored) && len(want) == 0 {
		t.Fatalf("%s: a whole history gave the subscriber no rows to write: the suite compares nothing (see Features.History)", when)
	}
	got := e.rows(t)
	if !slices.Equal(got, want) {
		t.Fatal(e.mismatch(rd, applied, when, got, want))
	}
	return want
}

// rows are the subscriber's rows in the test's database.
func (e *env) rows(t *testing.T) []string {
	t.Helper()
	e.checks++
	settle(t, e.s.f.Settle, e.pool)
	return dump(t, e.pool, e.s.f.Tables)
}
