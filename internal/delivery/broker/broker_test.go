package broker_test

import (
	"context"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

func TestDeclareTopologyIsIdempotentAndDeadLetters(t *testing.T) {
	t.Parallel()
	url := testbroker.New(t)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)

	subs := []broker.Subscription{{Name: "storage", EventTypes: []string{"file.uploaded", "file.deleted"}}}
	require.NoError(t, broker.DeclareTopology(ch, subs, 2))
	require.NoError(t, broker.DeclareTopology(ch, subs, 2), "a second declaration changes nothing")

	require.NoError(t, ch.Publish(broker.Exchange, "file.uploaded", true, false, amqp.Publishing{MessageId: "m1", Body: []byte("{}")}))
	// Rejected with requeue until the delivery limit, the message moves to
	// the dead-letter queue.
	msgs, err := ch.Consume(broker.QueueName("storage"), "", false, false, false, false, nil)
	require.NoError(t, err)
	for i := 0; i < 3; i++ {
		d := <-msgs
		require.Equal(t, "m1", d.MessageId)
		require.NoError(t, d.Nack(false, true))
	}
	require.Eventually(t, func() bool {
		q, err := ch.QueueDeclarePassive(broker.DeadQueueName("storage"), true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		return err == nil && q.Messages == 1
	}, 10e9, 50e6)
}

// An event type no subscriber is bound to goes to the unsubscribed queue,
// not back to a mandatory publisher; a subscriber's event does not; and the
// exchange can still be declared exactly as DESIGN.md describes it.
func TestEventsWithoutSubscriberGoToUnsubscribed(t *testing.T) {
	t.Parallel()
	url := testbroker.New(t)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	subs := []broker.Subscription{{Name: "storage", EventTypes: []string{"file.uploaded"}}}
	require.NoError(t, broker.DeclareTopology(ch, subs, 2))
	require.NoError(t, broker.DeclareUnsubscribed(ch, subs, []string{"file.uploaded", "job.created"}))
	require.NoError(t, ch.ExchangeDeclare(broker.Exchange, amqp.ExchangeTopic, true, false, false, false, nil),
		"an outside client declares the exchange as DESIGN.md does")
	returns := ch.NotifyReturn(make(chan amqp.Return, 2))
	require.NoError(t, ch.Confirm(false))
	confirms := ch.NotifyPublish(make(chan amqp.Confirmation, 2))

	require.NoError(t, ch.Publish(broker.Exchange, "job.created", true, false, amqp.Publishing{MessageId: "job", Body: []byte("{}")}))
	require.NoError(t, ch.Publish(broker.Exchange, "file.uploaded", true, false, amqp.Publishing{MessageId: "file", Body: []byte("{}")}))
	for range 2 {
		require.True(t, (<-confirms).Ack)
	}
	select {
	case r := <-returns:
		t.Fatalf("message %s came back as unroutable", r.MessageId)
	default:
	}
	for queue, want := range map[string]string{broker.Unsubscribed: "job", broker.QueueName("storage"): "file"} {
		d, ok, err := ch.Get(queue, true)
		require.NoError(t, err)
		require.True(t, ok, queue)
		require.Equal(t, want, d.MessageId, queue)
		_, ok, err = ch.Get(queue, true)
		require.NoError(t, err)
		require.False(t, ok, "%s holds only %s", queue, want)
	}
}

// A list of nodes: each Dial starts at the next one and skips a node that
// does not answer, so connections spread and move to the nodes that do.
func TestDialTriesTheNodesInTurn(t *testing.T) {
	t.Parallel()
	live := testbroker.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadAddr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there
	u, err := url.Parse(live)
	require.NoError(t, err)
	u.Host = deadAddr
	dead := u.String()

	list := dead + ", " + live
	for range 4 { // whichever node a call starts at, it ends on the live one
		conn, err := broker.Dial(list, "test-dial")
		require.NoError(t, err)
		require.NoError(t, conn.Close())
	}
	_, err = broker.Dial(dead+","+dead, "test-dial")
	require.ErrorContains(t, err, "dial")

	nodes, err := broker.ParseURLs(" " + live + " ,," + dead)
	require.NoError(t, err)
	require.Equal(t, []string{live, dead}, nodes)
	for _, bad := range []string{"", " , ", "http://x", live + ",mqtt://y"} {
		_, err := broker.ParseURLs(bad)
		require.Error(t, err, bad)
	}
}

// adminFor is a management API client for the vhost of amqpURL, and that
// vhost's name.
func adminFor(t *testing.T, amqpURL string) (*rabbitadmin.Client, string) {
	t.Helper()
	u, err := amqp.ParseURI(amqpURL)
	require.NoError(t, err)
	return rabbitadmin.New(u), u.Vhost
}

// earlierArgs are the arguments the subscriber queues of every deployment
// so far were created with, written out rather than taken from
// DeclareTopology: a change there that such a queue refuses fails here.
func earlierArgs(dead string, deliveryLimit int64) amqp.Table {
	return amqp.Table{
		amqp.QueueTypeArg:           amqp.QueueTypeQuorum,
		"x-delivery-limit":          deliveryLimit,
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": dead,
	}
}

// The queues as the broker holds them: quorum queues with exactly the
// arguments of every earlier deployment, a member on each of up to 3
// nodes, and, once the dead-letter policy is set, its at-least-once
// dead-lettering.
func TestDeclaredQueuesAsTheBrokerHoldsThem(t *testing.T) {
	t.Parallel()
	url := testbroker.New(t)
	admin, vhost := adminFor(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)

	require.NoError(t, admin.PutPolicy(ctx, rabbitadmin.Policy{
		Vhost: vhost, Name: broker.DeadLetterPolicyName, ApplyTo: "queues",
		Pattern: broker.DeadLetterPolicyPattern([]string{"storage"}), Definition: broker.DeadLetterPolicyDefinition(),
	}))
	subs := []broker.Subscription{{Name: "storage", EventTypes: []string{"file.uploaded"}}}
	require.NoError(t, broker.DeclareTopology(ch, subs, 7))

	var nodes []struct{ Name string }
	require.NoError(t, admin.Do(ctx, http.MethodGet, "/api/nodes", nil, &nodes))
	replicas := min(3, len(nodes))

	q, err := admin.Queue(ctx, vhost, broker.QueueName("storage"))
	require.NoError(t, err)
	require.Equal(t, "quorum", q.Type)
	require.Equal(t, map[string]any{
		"x-queue-type": "quorum", "x-delivery-limit": float64(7),
		"x-dead-letter-exchange": "", "x-dead-letter-routing-key": broker.DeadQueueName("storage"),
	}, q.Arguments)
	require.Len(t, q.Members, replicas, "a member on each of up to 3 of the %d nodes", len(nodes))

	dead, err := admin.Queue(ctx, vhost, broker.DeadQueueName("storage"))
	require.NoError(t, err)
	require.Equal(t, "quorum", dead.Type)
	require.Equal(t, map[string]any{"x-queue-type": "quorum"}, dead.Arguments)
	require.Len(t, dead.Members, replicas)

	// A queue's policy shows with its statistics, sampled every few
	// seconds; until the first sample it shows none.
	sampled := func(name string) rabbitadmin.Queue {
		var q rabbitadmin.Queue
		require.Eventually(t, func() bool {
			q, err = admin.Queue(ctx, vhost, name)
			return err == nil && q.EffectivePolicyDefinition != nil
		}, 20*time.Second, 250*time.Millisecond, "statistics of %s", name)
		return q
	}
	q = sampled(broker.QueueName("storage"))
	require.Equal(t, broker.DeadLetterPolicyName, q.Policy)
	require.Equal(t, broker.DeadLetterPolicyDefinition(), q.EffectivePolicyDefinition)
	require.Empty(t, sampled(broker.DeadQueueName("storage")).Policy, "the dead queue dead-letters nowhere and takes no policy")
}

// DeclareTopology works on the queues every earlier deployment created. And
// this is why it declares nothing more: each argument a cluster would want
// fails the declare of a queue created without it.
func TestDeclareTopologyOnQueuesDeclaredEarlier(t *testing.T) {
	t.Parallel()
	url := testbroker.New(t)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)

	const limit = broker.DefaultDeliveryLimit
	subs := []broker.Subscription{{Name: "storage", EventTypes: []string{"file.uploaded"}}}
	_, err = ch.QueueDeclare(broker.DeadQueueName("storage"), true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	require.NoError(t, err)
	_, err = ch.QueueDeclare(broker.QueueName("storage"), true, false, false, false, earlierArgs(broker.DeadQueueName("storage"), limit))
	require.NoError(t, err)
	require.NoError(t, broker.DeclareTopology(ch, subs, limit))

	for arg, value := range map[string]any{
		"x-quorum-initial-group-size": int64(3),
		"x-dead-letter-strategy":      "at-least-once",
		"x-overflow":                  "reject-publish",
	} {
		ch, err := conn.Channel()
		require.NoError(t, err)
		withArg := earlierArgs(broker.DeadQueueName("storage"), limit)
		withArg[arg] = value
		_, err = ch.QueueDeclare(broker.QueueName("storage"), true, false, false, false, withArg)
		var amqpErr *amqp.Error
		require.ErrorAs(t, err, &amqpErr, "RabbitMQ no longer checks %s: it could go into the declare", arg)
		require.Equal(t, amqp.PreconditionFailed, amqpErr.Code, "%s: %v", arg, amqpErr)
	}
}

// Under the dead-letter policy a dead letter is kept while the dead queue
// is missing and arrives once it is back, once; without it (the control)
// the broker drops it. Both queues were created with the earlier arguments.
func TestDeadLetteringIsAtLeastOnceUnderThePolicy(t *testing.T) {
	t.Parallel()
	url := testbroker.New(t)
	admin, vhost := adminFor(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)

	const limit = 1
	subs := []broker.Subscription{
		{Name: "covered", EventTypes: []string{"file.uploaded"}},  // under the policy
		{Name: "uncovered", EventTypes: []string{"file.deleted"}}, // not
	}
	policy := rabbitadmin.Policy{
		Vhost: vhost, Name: broker.DeadLetterPolicyName, ApplyTo: "queues",
		Pattern: broker.DeadLetterPolicyPattern([]string{"covered"}), Definition: broker.DeadLetterPolicyDefinition(),
	}
	require.NoError(t, admin.PutPolicy(ctx, policy))
	for _, s := range subs {
		_, err = ch.QueueDeclare(broker.QueueName(s.Name), true, false, false, false, earlierArgs(broker.DeadQueueName(s.Name), limit))
		require.NoError(t, err)
	}
	require.NoError(t, broker.DeclareTopology(ch, subs, limit))
	for _, s := range subs {
		_, err := ch.QueueDelete(broker.DeadQueueName(s.Name), false, false, false)
		require.NoError(t, err)
	}

	for _, s := range subs {
		require.NoError(t, ch.Publish(broker.Exchange, s.EventTypes[0], true, false, amqp.Publishing{
			MessageId: "m-" + s.Name, DeliveryMode: amqp.Persistent, Body: []byte("{}"),
		}))
		consumer, err := conn.Channel()
		require.NoError(t, err)
		msgs, err := consumer.Consume(broker.QueueName(s.Name), "", false, false, false, false, nil)
		require.NoError(t, err)
		for range limit + 1 { // the last one goes past the limit
			select {
			case d := <-msgs:
				require.Equal(t, "m-"+s.Name, d.MessageId)
				require.NoError(t, d.Nack(false, true))
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: no delivery", s.Name)
			}
		}
		require.NoError(t, consumer.Close())
		require.Eventually(t, func() bool {
			q, err := ch.QueueDeclarePassive(broker.QueueName(s.Name), true, false, false, false, nil)
			return err == nil && q.Messages == 0
		}, 10*time.Second, 50*time.Millisecond, "%s dead-letters the message", s.Name)
	}

	// The dead queues back, as the next worker's declare makes them. The
	// broker retries a dead letter it could not route only every
	// dead_letter_worker_publisher_confirm_timeout (3 minutes on 3.10); a
	// change of the policy makes the queue look up its dead-letter target
	// and retry at once.
	require.NoError(t, broker.DeclareTopology(ch, subs, limit))
	policy.Priority = 1
	require.NoError(t, admin.PutPolicy(ctx, policy))

	dead := broker.DeadQueueName("covered")
	require.Eventually(t, func() bool {
		q, err := ch.QueueDeclarePassive(dead, true, false, false, false, nil)
		return err == nil && q.Messages > 0
	}, 10*time.Second, 50*time.Millisecond, "the kept dead letter reaches %s", dead)
	d, ok, err := ch.Get(dead, true)
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, "m-covered", d.MessageId)
	time.Sleep(time.Second)
	_, ok, err = ch.Get(dead, true)
	require.NoError(t, err)
	require.False(t, ok, "the dead letter arrives once")

	q, err := ch.QueueDeclarePassive(broker.DeadQueueName("uncovered"), true, false, false, false, nil)
	require.NoError(t, err)
	require.Zero(t, q.Messages, "without the policy the broker dropped the dead letter it could not route")
}
