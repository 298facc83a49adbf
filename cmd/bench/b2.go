package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
)

// b2 fills the outbox with a backlog of file events while no relay runs,
// then times a relay worker draining it (every row confirmed and deleted).
// Its ceiling is raw amqp091-go publishing of the same messages with
// pipelined confirms to quorum queues bound the same way. The backlog it
// leaves in catacloud.storage and catacloud.billing is what B8 drains.
func (b *bench) b2(ctx context.Context) error {
	e := b.env
	// Earlier figures ran without a relay: drop their rows, and the dead
	// tuples that leaves, so the relay starts on this backlog alone.
	if _, err := e.pool.Exec(ctx, "DELETE FROM outbox"); err != nil {
		return err
	}
	if _, err := e.pool.Exec(ctx, "VACUUM outbox"); err != nil {
		return err
	}
	from, err := maxPosition(ctx, e)
	if err != nil {
		return err
	}
	if err := fillOutbox(ctx, e, b.sz.b2Events); err != nil {
		return err
	}
	events, err := eventsAfter(ctx, e, from)
	if err != nil {
		return err
	}
	if len(events) != b.sz.b2Events {
		return fmt.Errorf("B2: %d events inserted, want %d", len(events), b.sz.b2Events)
	}

	cpu := sampleCPU(b.pids())
	rawRate, err := rawPublish(ctx, e, events)
	if err != nil {
		return fmt.Errorf("raw ceiling: %w", err)
	}
	rawLimited := cpuSince(cpu, b.pids())

	start := time.Now()
	cpu = sampleCPU(b.pids())
	worker, err := e.startWorker(ctx, "relay")
	if err != nil {
		return err
	}
	defer worker.stop()
	waitProfile := b.profile(ctx, worker, "B2", b.sz.drainBudget/60)
	if err := waitFor(ctx, b.sz.drainBudget, 20*time.Millisecond, func() (bool, error) {
		var left bool
		err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox)").Scan(&left)
		return !left, err
	}); err != nil {
		return fmt.Errorf("relay did not drain the outbox: %w\n%s", err, worker.tail())
	}
	elapsed := time.Since(start)
	limited := cpuSince(cpu, b.pids(worker))
	rss, err := worker.peakRSS()
	if err != nil {
		return err
	}
	waitProfile()
	worker.stop()
	queued := map[string]int{}
	for _, q := range []string{"catacloud.storage", "catacloud.billing"} {
		n, err := queueMessages(ctx, e, q)
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

// fillOutbox inserts n file events (uploads of n/2 files, then their
// deletes) of a few owners, and their outbox rows, as the api would have:
// one row per event, since each of those commands writes one event.
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
	rows := make([][]any, 0, n)
	for i, f := range files {
		data, _ := json.Marshal(map[string]any{"owner_id": owners[i%len(owners)], "name": fmt.Sprintf("file-%d.bin", i),
			"size_bytes": 1000 + i, "content_type": "application/octet-stream"})
		rows = append(rows, []any{eventstore.ID(f, 1), domain.StreamFile, f, int32(1), domain.FileUploaded, data, at.Add(time.Duration(i) * time.Microsecond)})
	}
	for i, f := range files {
		data, _ := json.Marshal(map[string]any{"owner_id": owners[i%len(owners)]})
		rows = append(rows, []any{eventstore.ID(f, 2), domain.StreamFile, f, int32(2), domain.FileDeleted, data, at.Add(time.Minute + time.Duration(i)*time.Microsecond)})
	}
	for len(rows) < n { // an odd n: one more upload
		f := uuid.Must(uuid.NewV7())
		data, _ := json.Marshal(map[string]any{"owner_id": owners[0], "name": "odd.bin", "size_bytes": 1, "content_type": "application/octet-stream"})
		rows = append(rows, []any{eventstore.ID(f, 1), domain.StreamFile, f, int32(1), domain.FileUploaded, data, at})
	}
	return database.InTx(ctx, e.pool, func(tx *database.Tx) error {
		var from int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(position), 0) FROM events").Scan(&from); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"events"},
			[]string{"id", "stream_type", "stream_id", "version", "type", "data", "occurred_at"}, pgx.CopyFromRows(rows)); err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		streams := make([]uuid.UUID, 0, len(files)+1)
		parts := make([]int16, 0, len(files)+1)
		seen := map[uuid.UUID]bool{}
		for _, r := range rows {
			id := r[2].(uuid.UUID)
			if !seen[id] {
				seen[id] = true
				streams = append(streams, id)
				parts = append(parts, outbox.PartitionOf(id))
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO outbox (position, partition, last_position)
			SELECT e.position, p.partition, e.position
			FROM events e JOIN unnest($1::uuid[], $2::smallint[]) AS p(stream_id, partition) ON p.stream_id = e.stream_id
			WHERE e.position > $3`, streams, parts, from)
		return err
	})
}

func maxPosition(ctx context.Context, e *env) (int64, error) {
	var p int64
	err := e.pool.QueryRow(ctx, "SELECT coalesce(max(position), 0) FROM events").Scan(&p)
	return p, err
}

func eventsAfter(ctx context.Context, e *env, after int64) ([]eventstore.Event, error) {
	rows, err := e.pool.Query(ctx, `SELECT position, id, stream_type, stream_id, version, type, data, occurred_at
		FROM events WHERE position > $1 ORDER BY position`, after)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (eventstore.Event, error) {
		var ev eventstore.Event
		err := r.Scan(&ev.Position, &ev.ID, &ev.StreamType, &ev.StreamID, &ev.Version, &ev.Type, &ev.Data, &ev.OccurredAt)
		return ev, err
	})
}

// rawWindow is how many deferred confirms the raw publisher leaves
// outstanding.
const rawWindow = 1000

// rawPublish publishes the events' messages with pipelined confirms to a
// topic exchange feeding two quorum queues, and returns messages per second
// from the first publish to the last confirm. It removes what it declared.
func rawPublish(ctx context.Context, e *env, events []eventstore.Event) (float64, error) {
	conn, err := amqp.Dial(e.amqpURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	const exchange = "bench.raw.events"
	queues := []string{"bench.raw.storage", "bench.raw.billing"}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return 0, err
	}
	for _, q := range queues {
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{
			amqp.QueueTypeArg: amqp.QueueTypeQuorum, "x-delivery-limit": int64(20),
		}); err != nil {
			return 0, err
		}
		if err := ch.QueueBind(q, "file.*", exchange, false, nil); err != nil {
			return 0, err
		}
	}
	defer func() {
		for _, q := range queues {
			_, _ = ch.QueueDelete(q, false, false, false)
		}
		_ = ch.ExchangeDelete(exchange, false, false)
	}()
	return rawPublishOn(ctx, ch, exchange, events)
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

// queueMessages is a queue's ready messages, exactly, from a passive
// declare (the management API's counts lag by seconds).
func queueMessages(ctx context.Context, e *env, queue string) (int, error) {
	return queueMessagesAt(e.amqpURL, queue)
}

// queueMessagesAt is queueMessages on the broker (one node's URL) of
// amqpURL.
func queueMessagesAt(amqpURL, queue string) (int, error) {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	if err != nil {
		return 0, fmt.Errorf("inspect %s: %w", queue, err)
	}
	return q.Messages, nil
}

// waitFor polls cond every interval until it holds, it errs, or d passes.
func waitFor(ctx context.Context, d, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
