package broker_test

import (
	"net"
	"net/url"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/broker"
	"github.com/catacloud/epoch/internal/testbroker"
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
