package outbox_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/syncbuf"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// probe is the subscription of the test consumer.
const probe = "probe"

type env struct {
	pool    *pgxpool.Pool
	amqpURL string
}

func setup(t *testing.T, amqpURL string, eventTypes ...string) env {
	t.Helper()
	pool, _ := testdb.New(t)
	declare(t, amqpURL, eventTypes...)
	return env{pool: pool, amqpURL: amqpURL}
}

// declare declares the topology with the probe queue bound to eventTypes.
func declare(t *testing.T, amqpURL string, eventTypes ...string) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, broker.DeclareTopology(ch, []broker.Subscription{{Name: probe, EventTypes: eventTypes}}, broker.DefaultDeliveryLimit))
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// startRelay runs a relay until the test ends, and returns its publisher.
func startRelay(t *testing.T, e env, cfg outbox.Config, reg prometheus.Registerer) *broker.Publisher {
	t.Helper()
	pub, err := broker.NewPublisher(broker.PublisherConfig{
		URL: e.amqpURL, ConnectionName: "relay-test", MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond,
	}, testLogger(t))
	require.NoError(t, err)
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 50 * time.Millisecond
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 500*time.Millisecond
	}
	r, err := outbox.NewRelay(e.pool, []*broker.Publisher{pub}, cfg, testLogger(t), reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Error("relay did not stop")
		}
	})
	return pub
}

func newEvent(t *testing.T, stream uuid.UUID, version int32, eventType string) eventstore.Event {
	t.Helper()
	e, err := eventstore.New("file", stream, version, eventType, map[string]any{"v": version}, time.Now())
	require.NoError(t, err)
	return e
}

// write appends and enqueues events in one committed transaction.
func write(t *testing.T, ctx context.Context, pool *pgxpool.Pool, events []eventstore.Event) {
	t.Helper()
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
		if err := eventstore.Append(ctx, tx, events); err != nil {
			return err
		}
		return outbox.Enqueue(ctx, tx, events)
	}))
}

// recorder consumes the probe queue, reconnecting when the broker drops it,
// and keeps every delivery in arrival order.
type recorder struct {
	mu         sync.Mutex
	deliveries []eventstore.Event
	first      map[uuid.UUID]amqp.Delivery
}

func consume(t *testing.T, amqpURL string) *recorder {
	t.Helper()
	rec := &recorder{first: make(map[uuid.UUID]amqp.Delivery)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			rec.consumeOnce(ctx, t, amqpURL)
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return rec
}

func (r *recorder) consumeOnce(ctx context.Context, t *testing.T, amqpURL string) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return
	}
	if err := ch.Qos(1000, 0, false); err != nil {
		return
	}
	msgs, err := ch.Consume(broker.QueueName(probe), "", false, false, false, false, nil)
	if err != nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-msgs:
			if !ok {
				return
			}
			e, err := outbox.DecodeMessage(d.Body)
			if err != nil {
				t.Errorf("undecodable message %q: %v", d.Body, err)
			} else {
				r.mu.Lock()
				r.deliveries = append(r.deliveries, e)
				if _, ok := r.first[e.ID]; !ok {
					r.first[e.ID] = d
				}
				r.mu.Unlock()
			}
			_ = d.Ack(false)
		}
	}
}

func (r *recorder) has(id uuid.UUID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.first[id]
	return ok
}

func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.first)
}

// waitAll waits until every event arrived at least once.
func (r *recorder) waitAll(t *testing.T, events []eventstore.Event, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		missing := 0
		for _, e := range events {
			if !r.has(e.ID) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events never arrived", missing, len(events))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requireStreamOrder checks that a consumer saw each stream's versions in
// order: the first delivery of version v comes after the first of v-1.
// Redeliveries of a batch whose confirm failed may repeat versions later;
// that is at-least-once, not disorder.
func (r *recorder) requireStreamOrder(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	next := make(map[uuid.UUID]int32)
	for _, e := range r.deliveries {
		want := next[e.StreamID] + 1
		switch {
		case e.Version == want:
			next[e.StreamID] = want
		case e.Version > want:
			t.Fatalf("stream %s: version %d arrived before version %d", e.StreamID, e.Version, want)
		}
	}
}

// streamInPartition returns a new stream id of the given outbox partition.
func streamInPartition(partition int16) uuid.UUID {
	for {
		if id := uuid.New(); outbox.PartitionOf(id) == partition {
			return id
		}
	}
}

func requireOutboxEmpty(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	require.Eventually(t, func() bool {
		n, _, err := outbox.Backlog(context.Background(), pool)
		return err == nil && n == 0
	}, 30*time.Second, 20*time.Millisecond, "outbox rows left after every event arrived")
}

func TestRelayOutOfOrderCommitsAndRollback(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "#")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)

	// A takes the lower position but commits last.
	heldA := testdb.Hold(t, e.pool)
	txA := heldA.Tx
	evA := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")}
	require.NoError(t, eventstore.Append(ctx, txA, evA))
	require.NoError(t, outbox.Enqueue(ctx, txA, evA))
	var pidA int32
	require.NoError(t, txA.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidA))

	// C rolls back: its event must never be published.
	heldC := testdb.Hold(t, e.pool)
	txC := heldC.Tx
	evC := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")}
	require.NoError(t, eventstore.Append(ctx, txC, evC))
	require.NoError(t, outbox.Enqueue(ctx, txC, evC))

	evB := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded"), newEvent(t, uuid.New(), 1, "job.created")}
	write(t, ctx, e.pool, evB)
	require.Greater(t, evB[0].Position, evA[0].Position)
	require.NoError(t, heldC.Rollback())

	startRelay(t, e, outbox.Config{}, nil)
	rec.waitAll(t, evB, 30*time.Second)
	require.False(t, rec.has(evA[0].ID), "an uncommitted event was published")

	// The relay can name what holds it back.
	pid, age, ok, err := outbox.OldestOpenTransaction(ctx, e.pool)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, pidA, pid)
	require.Greater(t, age, time.Duration(0))

	require.NoError(t, heldA.Commit())
	rec.waitAll(t, evA, 30*time.Second)
	requireOutboxEmpty(t, e.pool)
	_, _, ok, err = outbox.OldestOpenTransaction(ctx, e.pool)
	require.NoError(t, err)
	require.False(t, ok)

	// Give the relay more cycles: the rolled-back event stays unpublished.
	time.Sleep(300 * time.Millisecond)
	require.False(t, rec.has(evC[0].ID), "a rolled-back event was published")
	require.Equal(t, 3, rec.distinct())

	// The message contract.
	rec.mu.Lock()
	d := rec.first[evB[1].ID]
	rec.mu.Unlock()
	require.Equal(t, broker.Exchange, d.Exchange)
	require.Equal(t, "job.created", d.RoutingKey)
	require.Equal(t, "job.created", d.Type)
	require.Equal(t, evB[1].ID.String(), d.MessageId)
	require.Equal(t, "application/json", d.ContentType)
	require.Equal(t, amqp.Persistent, d.DeliveryMode)
	require.Equal(t, evB[1].OccurredAt.Truncate(time.Second).Unix(), d.Timestamp.Unix())
	got, err := outbox.DecodeMessage(d.Body)
	require.NoError(t, err)
	require.Equal(t, evB[1].OccurredAt, got.OccurredAt)
	require.JSONEq(t, string(evB[1].Data), string(got.Data))
	require.Equal(t, evB[1].Position, got.Position)
}

func TestRelayNamesTheTransactionHoldingItBack(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "#")
	ctx := context.Background()

	tx := testdb.Hold(t, e.pool).Tx
	ev := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")}
	require.NoError(t, eventstore.Append(ctx, tx, ev))
	require.NoError(t, outbox.Enqueue(ctx, tx, ev))
	var pid int32
	require.NoError(t, tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))

	logs := &syncbuf.Buffer{}
	pub, err := broker.NewPublisher(broker.PublisherConfig{URL: e.amqpURL}, testLogger(t))
	require.NoError(t, err)
	reg := prometheus.NewRegistry()
	r, err := outbox.NewRelay(e.pool, []*broker.Publisher{pub}, outbox.Config{
		PollInterval: 20 * time.Millisecond, MonitorInterval: 20 * time.Millisecond, HeldBackAfter: 200 * time.Millisecond,
	}, slog.New(slog.NewJSONHandler(logs, nil)), reg)
	require.NoError(t, err)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Run(runCtx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	require.Eventually(t, func() bool {
		return strings.Contains(logs.String(), fmt.Sprintf(`"pid":%d`, pid))
	}, 30*time.Second, 20*time.Millisecond, "no log names the open transaction")
	require.Equal(t, float64(pid), gauge(t, reg, "epoch_outbox_oldest_open_transaction_pid"))
	require.GreaterOrEqual(t, gauge(t, reg, "epoch_outbox_oldest_open_transaction_age_seconds"), 0.2)
}

func TestThreeRelaysKeepStreamOrder(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "#")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)
	for range 3 {
		startRelay(t, e, outbox.Config{BatchSize: 200, PartitionShare: 0.34}, nil)
	}

	// 500 streams of 20 versions, written while the relays run, by four
	// writers at once: one version of 125 streams per transaction.
	const streams, versions, writers = 500, 20, 4
	ids := make([]uuid.UUID, streams)
	for i := range ids {
		ids[i] = uuid.New()
	}
	var all []eventstore.Event
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mine := ids[w*streams/writers : (w+1)*streams/writers]
			for v := int32(1); v <= versions; v++ {
				batch := make([]eventstore.Event, len(mine))
				for i, s := range mine {
					batch[i] = newEvent(t, s, v, "file.uploaded")
				}
				write(t, ctx, e.pool, batch)
				mu.Lock()
				all = append(all, batch...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Len(t, all, streams*versions)
	rec.waitAll(t, all, 60*time.Second)
	rec.requireStreamOrder(t)
	requireOutboxEmpty(t, e.pool)

	// Nothing failed, so nothing was sent twice: relays taking turns on a
	// partition never resend what the one before had just deleted.
	time.Sleep(300 * time.Millisecond) // let any stray copy arrive
	rec.mu.Lock()
	delivered := len(rec.deliveries)
	rec.mu.Unlock()
	require.Equal(t, len(all), delivered, "deliveries, with no fault injected")
}

func TestRelaySurvivesClosedConnections(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "#")
	rec := consume(t, e.amqpURL)
	startRelay(t, e, outbox.Config{BatchSize: 50}, nil)

	all := writeWhile(t, e.pool, func() {
		for range 4 {
			time.Sleep(150 * time.Millisecond)
			testbroker.CloseConnections(t, e.amqpURL)
		}
	})
	rec.waitAll(t, all, 60*time.Second)
	rec.requireStreamOrder(t)
	requireOutboxEmpty(t, e.pool)
}

func TestRelaySurvivesPostgresConnectionLoss(t *testing.T) {
	t.Parallel()
	pool, dbURL := testdb.New(t)
	amqpURL := testbroker.New(t)
	declare(t, amqpURL, "#")
	// The relay gets a pool of its own, named, so the fault hits only it.
	relayPool, err := pgxpool.New(context.Background(), dbURL+"&application_name=epoch-relay-test")
	require.NoError(t, err)
	t.Cleanup(relayPool.Close)
	rec := consume(t, amqpURL)
	startRelay(t, env{pool: relayPool, amqpURL: amqpURL}, outbox.Config{BatchSize: 50}, nil)

	terminated := 0
	all := writeWhile(t, pool, func() {
		for range 5 {
			time.Sleep(150 * time.Millisecond)
			var n int
			require.NoError(t, pool.QueryRow(context.Background(), `
				SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
				WHERE datname = current_database() AND application_name = 'epoch-relay-test'`).Scan(&n))
			terminated += n
		}
	})
	require.Positive(t, terminated, "no relay connection was there to terminate")
	rec.waitAll(t, all, 60*time.Second)
	rec.requireStreamOrder(t)
	requireOutboxEmpty(t, pool)
}

// writeWhile writes events on 20 streams, one version of each stream per
// transaction, every 20ms until fault returns, and returns them.
func writeWhile(t *testing.T, pool *pgxpool.Pool, fault func()) []eventstore.Event {
	t.Helper()
	ctx := context.Background()
	stop := make(chan struct{})
	done := make(chan []eventstore.Event)
	go func() {
		streams := make([]uuid.UUID, 20)
		for i := range streams {
			streams[i] = uuid.New()
		}
		var all []eventstore.Event
		for v := int32(1); ; v++ {
			batch := make([]eventstore.Event, len(streams))
			for i, s := range streams {
				batch[i] = newEvent(t, s, v, "file.uploaded")
			}
			write(t, ctx, pool, batch)
			all = append(all, batch...)
			select {
			case <-stop:
				done <- all
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	fault()
	close(stop)
	all := <-done
	require.Greater(t, len(all), 100, "too few events written during the fault")
	return all
}

func TestUnroutableMessageStays(t *testing.T) {
	t.Parallel()
	// The probe queue takes only file.uploaded: job.created routes nowhere.
	e := setup(t, testbroker.New(t), "file.uploaded")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)
	reg := prometheus.NewRegistry()
	startRelay(t, e, outbox.Config{}, reg)

	// Both streams in one partition: the command's three events share one
	// outbox row, which ends up partly confirmed.
	fine := uuid.New()
	stuck := streamInPartition(outbox.PartitionOf(fine))
	all := []eventstore.Event{
		newEvent(t, fine, 1, "file.uploaded"),
		newEvent(t, stuck, 1, "job.created"), newEvent(t, stuck, 2, "file.uploaded"),
	}
	write(t, ctx, e.pool, all)
	routed, held := all[:1], all[1:]
	rec.waitAll(t, routed, 30*time.Second)
	require.Eventually(t, func() bool { return counter(t, reg, "epoch_relay_failed_total") >= 3 },
		30*time.Second, 20*time.Millisecond, "the relay keeps retrying the returned message")
	// Every cycle that found rows went through each timed phase.
	for _, phase := range []string{"claim", "publish", "settle"} {
		require.Positive(t, phaseCount(t, reg, phase), "cycles timed in phase %s", phase)
	}
	// Each of them recorded how long its row had waited to be claimed
	// (counted first: a cycle records the wait before it publishes).
	published := phaseCount(t, reg, "publish")
	waits := series(t, reg, "epoch_relay_claim_wait_seconds")
	require.Len(t, waits, 1)
	require.GreaterOrEqual(t, waits[0].GetHistogram().GetSampleCount(), published)
	require.Positive(t, waits[0].GetHistogram().GetSampleSum())

	// Neither the returned event nor the later one of its stream is gone:
	// the row now starts at the returned one.
	var first, last int64
	require.NoError(t, e.pool.QueryRow(ctx, "SELECT position, last_position FROM outbox").Scan(&first, &last))
	require.Equal(t, []int64{held[0].Position, held[1].Position}, []int64{first, last})

	// Once a queue takes it, the stream flows again. (The probe queue may
	// have seen version 2 already: pipelined publishing sends it before the
	// return of version 1 arrives, and it is sent again after version 1.)
	declare(t, e.amqpURL, "file.uploaded", "job.created")
	rec.waitAll(t, held, 30*time.Second)
	requireOutboxEmpty(t, e.pool)
}

// series returns the series of the metric called name (none if absent).
func series(t *testing.T, reg *prometheus.Registry, name string) []*dto.Metric {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()
		}
	}
	return nil
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	if s := series(t, reg, name); len(s) > 0 {
		return s[0].GetGauge().GetValue()
	}
	return 0
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	if s := series(t, reg, name); len(s) > 0 {
		return s[0].GetCounter().GetValue()
	}
	return 0
}

// phaseCount is how many relay cycles were timed in phase.
func phaseCount(t *testing.T, reg *prometheus.Registry, phase string) uint64 {
	t.Helper()
	for _, m := range series(t, reg, "epoch_relay_cycle_phase_seconds") {
		for _, l := range m.GetLabel() {
			if l.GetName() == "phase" && l.GetValue() == phase {
				return m.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

// The relay vacuums the outbox after VacuumAfter deleted rows, so a queue
// table that turns over constantly does not fill with dead tuples.
func TestRelayVacuumsTheOutbox(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "file.uploaded")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)
	startRelay(t, e, outbox.Config{VacuumAfter: 100}, nil)

	// One event per transaction, as 300 uploads: 300 outbox rows.
	var events []eventstore.Event
	for range 300 {
		ev := newEvent(t, uuid.New(), 1, "file.uploaded")
		write(t, ctx, e.pool, []eventstore.Event{ev})
		events = append(events, ev)
	}
	rec.waitAll(t, events, 30*time.Second)
	requireOutboxEmpty(t, e.pool)
	require.Eventually(t, func() bool {
		var vacuums int64
		err := e.pool.QueryRow(ctx, "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'").Scan(&vacuums)
		return err == nil && vacuums > 0
	}, 30*time.Second, 100*time.Millisecond, "the relay never vacuumed the outbox")
}

// A command's events in one partition are one outbox row, however many:
// the relay takes such a row whole even when it holds more events than a
// batch, keeps each stream in order, and empties the outbox.
func TestRelayTakesLargeRowsWhole(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "file.uploaded", "job.file_linked")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)

	job := uuid.New()
	var all []eventstore.Event
	for v := range int32(250) {
		all = append(all, newEvent(t, job, v+1, "job.file_linked"))
	}
	// Small commands on the same partition, before and after the large one.
	before, after := streamInPartition(outbox.PartitionOf(job)), streamInPartition(outbox.PartitionOf(job))
	first := []eventstore.Event{newEvent(t, before, 1, "file.uploaded")}
	last := []eventstore.Event{newEvent(t, after, 1, "file.uploaded")}
	write(t, ctx, e.pool, first)
	write(t, ctx, e.pool, all)
	write(t, ctx, e.pool, last)
	var rows int
	require.NoError(t, e.pool.QueryRow(ctx, "SELECT count(*) FROM outbox WHERE last_position - position + 1 = 250").Scan(&rows))
	require.Equal(t, 1, rows, "the 250 events of one command and stream are one row")
	// Started once the rows are counted: a relay running already could
	// have taken them before the count.
	startRelay(t, e, outbox.Config{BatchSize: 10}, nil)

	all = append(append(all, first...), last...)
	rec.waitAll(t, all, 30*time.Second)
	rec.requireStreamOrder(t)
	requireOutboxEmpty(t, e.pool)

	// Waiting for work, the relay holds no partition: another relay could
	// take any of them at once.
	require.Eventually(t, func() bool {
		var held int
		err := e.pool.QueryRow(ctx, `SELECT count(*) FROM pg_locks
			WHERE locktype = 'advisory' AND classid = $1 AND objsubid = 2 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`,
			uint32(0x0e0c0b01)).Scan(&held)
		return err == nil && held == 0
	}, 10*time.Second, 20*time.Millisecond, "an idle relay still holds partitions")
}

// The claim reads each row's events by a range of positions. Planned
// once on a nearly empty events table and cached, that read stays a
// sequential scan of the whole table as it grows (until an ANALYZE): the
// relay plans its statements with sequential scans off
// (OutboxPreferIndexes).
func TestClaimKeepsUsingTheIndexAsEventsGrow(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "file.uploaded")
	ctx := context.Background()
	rec := consume(t, e.amqpURL)
	startRelay(t, e, outbox.Config{}, nil)
	relayOne := func() {
		events := []eventstore.Event{newEvent(t, uuid.New(), 1, "file.uploaded")}
		write(t, ctx, e.pool, events)
		rec.waitAll(t, events, 10*time.Second)
	}
	addEvents := func(n int) {
		_, err := e.pool.Exec(ctx, `INSERT INTO events (id, stream_type, stream_id, version, type, data, occurred_at)
			SELECT gen_random_uuid(), 'file', gen_random_uuid(), 1, 'file.uploaded', '{}', now() FROM generate_series(1, $1::int)`, n)
		require.NoError(t, err)
	}
	// A new database's first rows, analyzed (autovacuum does it after 50):
	// the planner now knows events as a table of one page.
	addEvents(100)
	_, err := e.pool.Exec(ctx, "ANALYZE events")
	require.NoError(t, err)
	for range 40 { // past the five runs (on each pooled connection) after which Postgres may cache a generic plan
		relayOne()
	}
	addEvents(20000)
	// Statistics reach pg_stat_user_tables within about a second of each
	// backend's transaction; the relay's keep coming while it polls.
	seqRead := func() int64 {
		time.Sleep(1500 * time.Millisecond)
		var n int64
		require.NoError(t, e.pool.QueryRow(ctx, "SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = 'events'").Scan(&n))
		return n
	}
	before := seqRead()
	for range 10 {
		relayOne()
	}
	read := seqRead() - before
	require.Less(t, read, int64(20000), "the relay scanned the whole events table (%d rows read)", read)
}
