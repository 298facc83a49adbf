package main

import (
	"context"
	"log/slog"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/harness"
	"github.com/catacloud/epoch/internal/testkit/testcluster"
)

// cluster is the three-node cluster as the bench uses it: a session of
// testcluster's (the lock, the bench's vhost under the dead-letter policy a
// deployment sets), with the topology declared there as the worker
// declares it.
type cluster struct{ *testcluster.Session }

// workerSubscriptions are the queues the worker declares (its
// remoteSubscribers): the bench declares them first, so their leaders sit
// on the node it declares from, and the worker's own declare finds them
// identical.
func workerSubscriptions() []broker.Subscription {
	return subscribers.Movable().Subscriptions()
}

// openCluster opens the cluster (testcluster.Open) and declares there, from
// rabbit_a, what the worker declares at its start (broker.DeclareTopology
// with the default delivery limit, then the unsubscribed queue).
func openCluster(ctx context.Context, log *slog.Logger) (*testcluster.Session, error) {
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	// The raw round trip's queue takes the dead-letter policy like a
	// subscriber's.
	names := []string{roundTripSubscription.Name}
	for _, s := range workerSubscriptions() {
		names = append(names, s.Name)
	}
	return testcluster.Open(ctx, log, root, "epoch_bench_", names, func(ch *amqp.Channel) error {
		if err := broker.DeclareTopology(ch, workerSubscriptions(), broker.DefaultDeliveryLimit); err != nil {
			return err
		}
		return broker.DeclareUnsubscribed(ch, workerSubscriptions(), domain.EventTypes())
	})
}

// queues are the subscriber queues on the cluster.
func (c *cluster) queues() []string {
	var qs []string
	for _, s := range workerSubscriptions() {
		qs = append(qs, broker.QueueName(s.Name))
	}
	return qs
}

// purge empties the subscriber queues, so the next figure's publishes
// land in empty queues, as the first ones did.
func (c *cluster) purge() error { return c.Purge(c.queues()...) }

// placement is where the cluster put the subscriber queues and the
// connections (testcluster's Session.Placement).
func (c *cluster) placement(ctx context.Context, want map[string]int, wait time.Duration) map[string]any {
	return c.Placement(ctx, c.queues(), want, wait)
}
