package main

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/outbox"
)

// b11 is B2 on the three-node cluster: a backlog of file events in the
// outbox drained by a relay worker whose EPOCH_AMQP_URL lists the three
// nodes, beside raw confirmed publishing of the same messages into the
// same topology on the same cluster, measured just before.
func (b *bench) b11(ctx context.Context) error {
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	events, err := b.clusterBacklog(ctx, "B11", b.sz.b2Events)
	if err != nil {
		return err
	}
	pids := c.pids(b.pids())
	cpu := sampleCPU(pids)
	rawRate, err := c.rawPublish(ctx, events)
	if err != nil {
		return fmt.Errorf("raw ceiling on the cluster: %w", err)
	}
	rawLimited := cpuSince(cpu, pids)
	d, err := b.clusterDrain(ctx, c, "B11", events, 1)
	if err != nil {
		return err
	}
	b.r.add((&figure{Figure: "B11", Name: "cluster_relay_msgs_per_s", Value: d.rate, Unit: "msg/s", LimitedBy: d.limited,
		Detail: map[string]any{"messages": len(events), "seconds": round3(d.elapsed.Seconds()), "raw_cpu": rawLimited,
			"timed": "from starting the worker process to an empty outbox", "queued": d.queued,
			"placement": d.placement, "raw_via": "rabbit_a, where the bench declared the queues (their leaders)"}}).
		withCeiling(rawRate).judge(">=0.6", d.rate >= 0.6*rawRate))
	b.note("B11: B2 on the three-node cluster (scripts/rabbitmq-cluster, quorum queues on all three nodes): %d file events inserted as in B2, drained by one relay worker whose EPOCH_AMQP_URL lists the three nodes (its lanes' connections go where broker.Dial puts them; the detail's placement says where). The bench declares the topology first, from rabbit_a, with broker.DeclareTopology as the worker does, so the queues' leaders are on rabbit_a. The raw ceiling publishes the same messages from one channel on rabbit_a, with a window of %d deferred confirms, to catacloud.events and so into the same two queues, which are purged before the relay starts.", len(events), rawWindow)
	return nil
}

// cluster is the run's cluster, opened on first use. The single-node
// worker stops first: its relay would claim the outbox rows meant for the
// cluster.
func (b *bench) cluster(ctx context.Context) (*cluster, error) {
	if b.worker != nil {
		b.worker.stop()
		b.worker = nil
	}
	return b.clusterOnce.get(ctx, b.log, b.env.root)
}

// clusterBacklog empties the outbox and fills it with n file events, as B2
// does, for relays on the cluster to drain.
func (b *bench) clusterBacklog(ctx context.Context, fig string, n int) ([]eventstore.Event, error) {
	e := b.env
	if _, err := e.pool.Exec(ctx, "DELETE FROM outbox"); err != nil {
		return nil, err
	}
	if _, err := e.pool.Exec(ctx, "VACUUM outbox"); err != nil {
		return nil, err
	}
	from, err := maxPosition(ctx, e)
	if err != nil {
		return nil, err
	}
	if err := fillOutbox(ctx, e, n); err != nil {
		return nil, err
	}
	events, err := eventsAfter(ctx, e, from)
	if err != nil {
		return nil, err
	}
	if len(events) != n {
		return nil, fmt.Errorf("%s: %d events inserted, want %d", fig, len(events), n)
	}
	return events, nil
}

// requeue queues the same events again, one outbox row each as fillOutbox
// does, so a second drain works off the very backlog of the first.
func requeue(ctx context.Context, e *env, events []eventstore.Event) error {
	if _, err := e.pool.Exec(ctx, "VACUUM outbox"); err != nil {
		return err
	}
	positions := make([]int64, len(events))
	parts := make([]int16, len(events))
	for i, ev := range events {
		positions[i], parts[i] = ev.Position, outbox.PartitionOf(ev.StreamID)
	}
	_, err := e.pool.Exec(ctx, `INSERT INTO outbox (position, partition, last_position)
		SELECT p.position, p.partition, p.position FROM unnest($1::bigint[], $2::smallint[]) AS p(position, partition)`,
		positions, parts)
	return err
}

// rawPublish publishes the events' messages raw (rawPublishOn) from
// rabbit_a into the topology the worker uses, checks that both subscriber
// queues hold them, and purges the queues again.
func (c *cluster) rawPublish(ctx context.Context, events []eventstore.Event) (float64, error) {
	if err := c.purge(); err != nil {
		return 0, err
	}
	conn, err := amqp.Dial(c.urls[0])
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	rate, err := rawPublishOn(ctx, ch, broker.Exchange, events)
	if err != nil {
		return 0, err
	}
	for _, s := range clusterSubscriptions() {
		q := broker.QueueName(s.Name)
		n, err := c.queueMessages(q)
		if err != nil {
			return 0, err
		}
		if n != len(events) {
			return 0, fmt.Errorf("%s holds %d messages after the raw publish, want %d", q, n, len(events))
		}
	}
	return rate, c.purge()
}

// drainTime is one timed drain of the outbox by relays on the cluster.
type drainTime struct {
	rate      float64
	elapsed   time.Duration
	limited   string
	queued    map[string]int
	placement map[string]any
}

// clusterDrain starts workers relay-only worker processes on the cluster
// at once and times them from the start to an empty outbox; each
// process's start is part of the time, as in B2. The subscriber queues
// must then hold every event (duplicates allowed: at least once); they are
// purged for the next drain.
func (b *bench) clusterDrain(ctx context.Context, c *cluster, fig string, events []eventstore.Event, workers int) (drainTime, error) {
	e := b.env
	if err := c.purge(); err != nil {
		return drainTime{}, err
	}
	start := time.Now()
	cpu := sampleCPU(c.pids(b.pids()))
	procs := make([]*proc, workers)
	errs := make(chan error, workers)
	for i := range procs {
		go func() {
			var err error
			procs[i], err = e.startWorkerOn(ctx, fmt.Sprintf("cluster%d", i+1), "relay", c.url)
			errs <- err
		}()
	}
	var startErr error
	for range procs {
		if err := <-errs; err != nil && startErr == nil {
			startErr = err
		}
	}
	defer func() {
		for _, p := range procs {
			if p != nil {
				p.stop()
			}
		}
	}()
	if startErr != nil {
		return drainTime{}, startErr
	}
	var waits []func()
	for _, p := range procs {
		waits = append(waits, b.profile(ctx, p, fig, b.sz.drainBudget/60))
	}
	if err := waitFor(ctx, b.sz.drainBudget, 20*time.Millisecond, func() (bool, error) {
		var left bool
		err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox)").Scan(&left)
		return !left, err
	}); err != nil {
		return drainTime{}, fmt.Errorf("%d relay worker(s) on the cluster did not drain the outbox: %w\n%s", workers, err, procs[0].tail())
	}
	d := drainTime{elapsed: time.Since(start)}
	pids := c.pids(b.pids(procs...))
	d.limited = cpuSince(cpu, pids)
	d.rate = float64(len(events)) / d.elapsed.Seconds()
	// Every relay worker's first lane at least.
	d.placement = c.placement(ctx, map[string]int{"epoch-relay-1": workers}, b.sz.placementWait)
	for _, w := range waits {
		w()
	}
	for _, p := range procs {
		p.stop()
	}
	d.queued = map[string]int{}
	for _, s := range clusterSubscriptions() {
		q := broker.QueueName(s.Name)
		n, err := c.queueMessages(q)
		if err != nil {
			return drainTime{}, err
		}
		if n < len(events) {
			return drainTime{}, fmt.Errorf("%s: %s holds %d messages after the relay, want %d", fig, q, n, len(events))
		}
		d.queued[q] = n
	}
	return d, c.purge()
}
