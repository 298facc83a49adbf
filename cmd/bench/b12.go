package main

import (
	"context"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/testkit/harness"
	"github.com/catacloud/epoch/internal/testkit/testcluster"
)

// roundTripSubscription is the raw round trip's queue on the cluster,
// declared by broker.DeclareTopology like a subscriber's, so the raw
// message takes the relay's way: catacloud.events, a topic binding, a
// quorum queue with the same arguments.
var roundTripSubscription = broker.Subscription{Name: "bench-roundtrip", EventTypes: []string{"bench.roundtrip"}}

// b12 is B3 on the three-node cluster: the same load through the api with
// one worker (relay, storage, billing) whose EPOCH_AMQP_URL lists the
// three nodes, beside the raw round trip through the same cluster during
// the same load.
func (b *bench) b12(ctx context.Context) error {
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	worker, err := b.env.startWorkerOn(ctx, "cluster", "relay,storage,billing", c.URL)
	if err != nil {
		return err
	}
	defer harness.Stop(worker)
	// What an earlier figure left (a backlog a failed drain did not work
	// off) must go first, or the latency would measure that.
	if err := harness.WaitFor(ctx, b.sz.drainBudget, 100*time.Millisecond, func() (bool, error) {
		return drained(ctx, b.env, c.Messages)
	}); err != nil {
		return fmt.Errorf("the system did not settle on the cluster before the load: %w", err)
	}
	rtt, err := dialRoundTripper(c.URLs[0], c.URLs[0], broker.QueueName(roundTripSubscription.Name),
		func(ch *amqp.Channel) (string, string, []string, error) {
			err := broker.DeclareTopology(ch, []broker.Subscription{roundTripSubscription}, broker.DefaultDeliveryLimit)
			return broker.Exchange, roundTripSubscription.EventTypes[0],
				[]string{broker.QueueName(roundTripSubscription.Name), broker.DeadQueueName(roundTripSubscription.Name)}, err
		})
	if err != nil {
		return fmt.Errorf("raw round trip on the cluster: %w", err)
	}
	defer rtt.close()
	extra := map[string]any{
		"placement": c.placement(ctx, map[string]int{"epoch-relay-1": 1, "epoch-consumer-storage": 1, "epoch-consumer-billing": 1},
			b.sz.placementWait),
		"round_trip_via": "rabbit_a for publisher and consumer, where the bench declared the queues (their leaders)",
		"ceiling_is":     "raw round trip through the cluster during the same load",
	}
	if err := b.commitToBilling(ctx, "B12", "cluster_", worker, rtt, testcluster.NodePids(b.pids(worker)), extra); err != nil {
		return err
	}
	b.note("B12: B3 on the three-node cluster: %d commands/s for %s, as in B3, with one worker running relay, storage and billing whose EPOCH_AMQP_URL lists the three nodes (its connections go where broker.Dial puts them; the detail's placement says where). The queues are declared first from rabbit_a as the worker declares them, so their leaders are there. The raw round trip publishes with a confirm to catacloud.events and consumes, both on rabbit_a, from a quorum queue declared by broker.DeclareTopology like a subscriber's; it runs during the load (the ceiling) and before it (idle, in the detail).", b.sz.b3Rate, b.sz.b3Duration)
	return nil
}
