package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// b2 fills the outbox with a backlog of file events while no relay runs,
// then times a relay worker draining it (every row confirmed and deleted).
// Its ceiling is raw amqp091-go publishing of the same messages with
// pipelined confirms to quorum queues bound the same way. The backlog it
// leaves in catacloud.storage and catacloud.billing is what B8 drains.
func (b *bench) b2(ctx context.Context) error {
	e := b.env
	events, err := b.backlog(ctx, "B2", b.sz.b2Events)
	if err != nil {
		return err
	}

	cpu := harness.SampleCPU(b.pids())
	rawRate, err := rawPublish(ctx, e, events)
	if err != nil {
		return fmt.Errorf("raw ceiling: %w", err)
	}
	rawLimited := cpu.Since(b.pids())

	start := time.Now()
	cpu = harness.SampleCPU(b.pids())
	worker, err := e.startWorker(ctx, "relay")
	if err != nil {
		return err
	}
	defer harness.Stop(worker)
	waitProfile := b.profile(ctx, worker, "B2", b.sz.drainBudget/60)
	if err := harness.WaitFor(ctx, b.sz.drainBudget, 20*time.Millisecond, func() (bool, error) {
		var left bool
		err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox)").Scan(&left)
		return !left, err
	}); err != nil {
		return fmt.Errorf("relay did not drain the outbox: %w\n%s", err, worker.Tail(3000))
	}
	elapsed := time.Since(start)
	limited := cpu.Since(b.pids(worker))
	rss, err := worker.PeakRSS()
	if err != nil {
		return err
	}
	waitProfile()
	harness.Stop(worker)
	queued := map[string]int{}
	for _, q := range []string{"catacloud.storage", "catacloud.billing"} {
		n, err := harness.QueueMessages(e.Vhost.URL, q)
		if err != nil {
			return err
		}
		// At least once: a republished batch (after a nack or a lost
		// connection) may add duplicates, never lose a message.
		if n < len(events) {
			return fmt.Errorf("B2: %s holds %d messages after the relay, want %d", q, n, len(events))
		}
		queued[q] = n
	}
	b.relayRate = float64(len(events)) / elapsed.Seconds()
	b.b2Messages = len(events)
	b.r.add((&figure{Figure: "B2", Name: "relay_msgs_per_s", Value: b.relayRate, Unit: "msg/s", LimitedBy: limited,
		Detail: map[string]any{"messages": len(events), "seconds": round3(elapsed.Seconds()), "raw_cpu": rawLimited,
			"timed": "from starting the worker process to an empty outbox", "queued": queued}}).
		withCeiling(rawRate).judge(">=0.6", b.relayRate >= 0.6*rawRate))
	b.r.add((&figure{Figure: "B5", Name: "worker_peak_rss_during_B2", Value: float64(rss) / (1 << 20), Unit: "MiB",
		Detail: map[string]any{"source": "VmHWM of the relay worker"}}).judge("<100 MiB", rss < 100<<20))
	b.note("B2: %d file events (%d files uploaded then deleted, 8 owners) are inserted with COPY into events and outbox while no relay runs; the relay's time includes its process start. The raw ceiling publishes the same messages (same bodies and properties, persistent, mandatory) from one channel with a sliding window of %d unconfirmed deferred confirms to a topic exchange with two quorum queues, as the relay's exchange routes each file event to catacloud.storage and catacloud.billing.", len(events), len(events)/2, rawWindow)
	return nil
}

// backlog empties the outbox and fills it with n file events (fillOutbox)
// for a relay to drain, and returns them. Earlier figures ran without a
// relay: their rows go, and the dead tuples that leaves, so the relay
// starts on this backlog alone.
func (b *bench) backlog(ctx context.Context, fig string, n int) ([]eventstore.Event, error) {
	e := b.env
	for _, stmt := range []string{"DELETE FROM outbox", "VACUUM outbox"} {
		if _, err := e.pool.Exec(ctx, stmt); err != nil {
			return nil, err
		}
	}
	from, err := dbsqlc.New().EventMaxPosition(ctx, e.pool)
	if err != nil {
		return nil, err
	}
	if err := fillOutbox(ctx, e, n); err != nil {
		return nil, err
	}
	events, err := eventstore.After(ctx, e.pool, from, int32(n)+1)
	if err != nil {
		return nil, err
	}
	if len(events) != n {
		return nil, fmt.Errorf("%s: %d events inserted, want %d", fig, len(events), n)
	}
	return events, nil
}

// fillOutbox inserts n file events (uploads of n/2 files, then their
// deletes) of a few owners with COPY (eventstore.Copy), and their outbox
// rows, as the api would have: one row per event, since each of those
// commands writes one event.
func fillOutbox(ctx context.Context, e *env, n int) error {
	owners := make([]uuid.UUID, 8)
	for i := range owners {
		owners[i] = uuid.New()
	}
	files := make([]uuid.UUID, n/2)
	for i := range files {
		files[i] = uuid.Must(uuid.NewV7())
	}
	at := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
	events := make([]eventstore.Event, 0, n)
	var err error
	add := func(f uuid.UUID, version int32, typ string, data map[string]any, at time.Time) {
		ev, evErr := eventstore.New(domain.StreamFile, f, version, typ, data, at)
		events, err = append(events, ev), errors.Join(err, evErr)
	}
	for i, f := range files {
		add(f, 1, domain.FileUploaded, map[string]any{"owner_id": owners[i%len(owners)], "name": fmt.Sprintf("file-%d.bin", i),
			"size_bytes": 1000 + i, "content_type": "application/octet-stream"}, at.Add(time.Duration(i)*time.Microsecond))
	}
	for i, f := range files {
		add(f, 2, domain.FileDeleted, map[string]any{"owner_id": owners[i%len(owners)]}, at.Add(time.Minute+time.Duration(i)*time.Microsecond))
	}
	if len(events) < n { // an odd n: one more upload
		add(uuid.Must(uuid.NewV7()), 1, domain.FileUploaded, map[string]any{"owner_id": owners[0], "name": "odd.bin", "size_bytes": 1, "content_type": "application/octet-stream"}, at)
	}
	if err != nil {
		return err
	}
	return database.InTx(ctx, e.pool, func(tx *database.Tx) error {
		if err := eventstore.Copy(ctx, tx, events); err != nil {
			return err
		}
		return queueEach(ctx, tx, events)
	})
}

// tracedBacklog: the backlog's outbox rows keep a sampled trace context
// each, as the api's rows do when it traces every request (-traces), so
// the relay and the subscribers do all their tracing work on them.
var tracedBacklog bool

// queueEach writes an outbox row for each of events (positions set).
func queueEach(ctx context.Context, db database.DBTX, events []eventstore.Event) error {
	positions := make([]int64, len(events))
	parts := make([]int16, len(events))
	var traceparents []string
	for i, ev := range events {
		positions[i], parts[i] = ev.Position, outbox.PartitionOf(ev.StreamID)
		if tracedBacklog {
			// A trace of its own per row, as each command's request has.
			traceparents = append(traceparents, "00-"+harness.RandomHex(16)+"-"+harness.RandomHex(8)+"-01")
		}
	}
	_, err := db.Exec(ctx, `INSERT INTO outbox (position, partition, last_position, traceparent)
		SELECT p.position, p.partition, p.position, p.traceparent
		FROM unnest($1::bigint[], $2::smallint[], $3::text[]) AS p(position, partition, traceparent)`,
		positions, parts, traceparents)
	return err
}

// rawWindow is how many deferred confirms the raw publisher leaves
// outstanding.
const rawWindow = 1000

// rawPublish publishes the events' messages with pipelined confirms to a
// topic exchange feeding two quorum queues, and returns messages per second
// from the first publish to the last confirm. It removes what it declared.
func rawPublish(ctx context.Context, e *env, events []eventstore.Event) (rate float64, err error) {
	err = harness.WithChannel(e.Vhost.URL, func(ch *amqp.Channel) error {
		const exchange = "bench.raw.events"
		queues := []string{"bench.raw.storage", "bench.raw.billing"}
		if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return err
		}
		for _, q := range queues {
			if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{
				amqp.QueueTypeArg: amqp.QueueTypeQuorum, "x-delivery-limit": int64(20),
			}); err != nil {
				return err
			}
			if err := ch.QueueBind(q, "file.*", exchange, false, nil); err != nil {
				return err
			}
		}
		defer func() {
			for _, q := range queues {
				_, _ = ch.QueueDelete(q, false, false, false)
			}
			_ = ch.ExchangeDelete(exchange, false, false)
		}()
		rate, err = rawPublishOn(ctx, ch, exchange, events)
		return err
	})
	return rate, err
}

// rawPublishOn publishes the events' messages, persistent and mandatory, to
// exchange on ch with a sliding window of rawWindow deferred confirms, and
// returns messages per second from the first publish to the last confirm.
// A nack or a returned message fails it.
func rawPublishOn(ctx context.Context, ch *amqp.Channel, exchange string, events []eventstore.Event) (float64, error) {
	if err := ch.Confirm(false); err != nil {
		return 0, err
	}
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	msgs := make([]amqp.Publishing, len(events))
	keys := make([]string, len(events))
	for i, ev := range events {
		m, err := outbox.Message(ev)
		if err != nil {
			return 0, err
		}
		msgs[i], keys[i] = m.Publishing, m.RoutingKey
	}
	start := time.Now()
	pending := make([]*amqp.DeferredConfirmation, 0, rawWindow)
	wait := func(c *amqp.DeferredConfirmation) error {
		ok, err := c.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("raw publish nacked (tag %d)", c.DeliveryTag)
		}
		return nil
	}
	for i := range msgs {
		if len(pending) == rawWindow {
			if err := wait(pending[0]); err != nil {
				return 0, err
			}
			pending = pending[1:]
		}
		c, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, keys[i], true, false, msgs[i])
		if err != nil {
			return 0, err
		}
		pending = append(pending, c)
	}
	for _, c := range pending {
		if err := wait(c); err != nil {
			return 0, err
		}
	}
	elapsed := time.Since(start)
	select {
	case r := <-returns:
		return 0, fmt.Errorf("raw publish returned: %s", r.ReplyText)
	default:
	}
	return float64(len(msgs)) / elapsed.Seconds(), nil
}
