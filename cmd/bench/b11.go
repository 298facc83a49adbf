package main

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/testkit/harness"
	"github.com/catacloud/epoch/internal/testkit/testcluster"
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
	events, err := b.backlog(ctx, "B11", b.sz.b2Events)
	if err != nil {
		return err
	}
	pids := testcluster.NodePids(b.pids())
	cpu := harness.SampleCPU(pids)
	rawRate, err := c.rawPublish(ctx, events)
	if err != nil {
		return fmt.Errorf("raw ceiling on the cluster: %w", err)
	}
	rawLimited := cpu.Since(pids)
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
		harness.Stop(b.worker)
		b.worker = nil
	}
	s, err := b.clusterOpening.Get(ctx)
	if err != nil {
		return nil, err
	}
	return &cluster{s}, nil
}

// requeue queues the same events again, one outbox row each (queueEach),
// so a second drain works off the very backlog of the first.
func requeue(ctx context.Context, e *env, events []eventstore.Event) error {
	if _, err := e.pool.Exec(ctx, "VACUUM outbox"); err != nil {
		return err
	}
	return queueEach(ctx, e.pool, events)
}

// rawPublish publishes the events' messages raw (rawPublishOn) from
// rabbit_a into the topology the worker uses, checks that both subscriber
// queues hold them, and purges the queues again.
func (c *cluster) rawPublish(ctx context.Context, events []eventstore.Event) (float64, error) {
	if err := c.purge(); err != nil {
		return 0, err
	}
	var rate float64
	if err := c.WithChannel(func(ch *amqp.Channel) (err error) {
		rate, err = rawPublishOn(ctx, ch, broker.Exchange, events)
		return err
	}); err != nil {
		return 0, err
	}
	for _, q := range c.queues() {
		n, err := c.Messages(q)
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
	cpu := harness.SampleCPU(testcluster.NodePids(b.pids()))
	procs := make([]*harness.Proc, workers)
	var starts errgroup.Group
	for i := range procs {
		starts.Go(func() (err error) {
			procs[i], err = e.startWorkerOn(ctx, fmt.Sprintf("cluster%d", i+1), "relay", c.URL)
			return err
		})
	}
	startErr := starts.Wait()
	defer func() {
		for _, p := range procs {
			if p != nil {
				harness.Stop(p)
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
	if err := harness.WaitFor(ctx, b.sz.drainBudget, 20*time.Millisecond, func() (bool, error) {
		var left bool
		err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox)").Scan(&left)
		return !left, err
	}); err != nil {
		return drainTime{}, fmt.Errorf("%d relay worker(s) on the cluster did not drain the outbox: %w\n%s", workers, err, procs[0].Tail(3000))
	}
	d := drainTime{elapsed: time.Since(start)}
	pids := testcluster.NodePids(b.pids(procs...))
	d.limited = cpu.Since(pids)
	d.rate = float64(len(events)) / d.elapsed.Seconds()
	// Every relay worker's first lane at least.
	d.placement = c.placement(ctx, map[string]int{"epoch-relay-1": workers}, b.sz.placementWait)
	for _, w := range waits {
		w()
	}
	for _, p := range procs {
		harness.Stop(p)
	}
	d.queued = map[string]int{}
	for _, q := range c.queues() {
		n, err := c.Messages(q)
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
