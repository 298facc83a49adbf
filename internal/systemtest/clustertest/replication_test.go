package clustertest_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/subscribers"
)

// The topology the worker declares, with the same arguments as on one node
// (where each queue has its one member), gives every subscriber queue and
// its dead-letter queue a member on each of the three nodes: quorum queues
// take the cluster's size, up to 3, for their initial group.
func TestSubscriberQueuesReplicatedOnEveryNode(t *testing.T) {
	t.Parallel()
	c := useCluster(t)
	conn, err := broker.Dial(c.amqpURL, "clustertest-replication")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	subs := subscribers.Movable().Subscriptions()
	if err := broker.DeclareTopology(ch, subs, broker.DefaultDeliveryLimit); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, n := range nodes {
		want = append(want, nodeName(n))
	}
	for _, s := range subs {
		for _, q := range []string{broker.QueueName(s.Name), broker.DeadQueueName(s.Name)} {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			st, err := c.queue(ctx, q)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			members := slices.Sorted(slices.Values(st.Members))
			if !slices.Equal(members, want) {
				t.Fatalf("%s has members %v, want one on each node %v", q, members, want)
			}
			t.Logf("%s: members %v, leader %s", q, members, st.Leader)
		}
	}
}
