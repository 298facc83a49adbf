package broker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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

// declareBlocked declares the topology with a probe queue bound to
// eventTypes, and makes the broker nack every publish from then on
// (testbroker.Block).
func declareBlocked(t *testing.T, amqpURL string, eventTypes ...string) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, broker.DeclareTopology(ch, []broker.Subscription{{Name: "probe", EventTypes: eventTypes}}, broker.DefaultDeliveryLimit))
	testbroker.Block(t, amqpURL)
}

// startPublisher runs a publisher until the test ends and waits for its
// first session.
func startPublisher(t *testing.T, cfg broker.PublisherConfig) *broker.Publisher {
	t.Helper()
	pub, err := broker.NewPublisher(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- pub.Run(ctx) }()
	t.Cleanup(func() { cancel(); require.NoError(t, <-done) })
	waitCtx, cancelWait := context.WithTimeout(ctx, 30*time.Second)
	defer cancelWait()
	require.NoError(t, pub.WaitConnected(waitCtx))
	return pub
}

func messages(n int, routingKey string) []broker.Message {
	msgs := make([]broker.Message, n)
	for i := range msgs {
		msgs[i] = broker.Message{RoutingKey: routingKey, Publishing: amqp.Publishing{MessageId: fmt.Sprint("m", i), Body: []byte("{}")}}
	}
	return msgs
}

// listedConnections names the client connections the management API lists
// for the vhost of amqpURL (it samples every few seconds).
func listedConnections(t *testing.T, amqpURL string) []string {
	t.Helper()
	u, err := amqp.ParseURI(amqpURL)
	require.NoError(t, err)
	var conns []struct {
		Name string `json:"name"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, rabbitadmin.New(u).Do(ctx, http.MethodGet, "/api/vhosts/"+url.PathEscape(u.Vhost)+"/connections", nil, &conns))
	names := make([]string, len(conns))
	for i, c := range conns {
		names[i] = c.Name
	}
	return names
}

// A chunk nacked while its channel stays open ends the session: the chunks
// after it are not sent, and Run opens a fresh connection and confirm
// channel, on which publishing goes on once the broker takes messages
// again.
func TestPublisherReplacesANackedSession(t *testing.T) {
	t.Parallel()
	amqpURL := testbroker.New(t)
	declareBlocked(t, amqpURL, "#")
	pub := startPublisher(t, broker.PublisherConfig{URL: amqpURL, ConnectionName: "nacked-test", MaxInFlight: 4})
	require.Equal(t, uint64(1), pub.Sessions())
	var first []string
	require.Eventually(t, func() bool {
		first = listedConnections(t, amqpURL)
		return len(first) == 1
	}, 30*time.Second, 100*time.Millisecond, "the management API never listed the publisher's connection")

	ctx := context.Background()
	errs := pub.Publish(ctx, broker.Exchange, messages(10, "file.uploaded"), 5*time.Second)
	for i, err := range errs {
		if i < 4 {
			require.ErrorIs(t, err, broker.ErrNacked, "message %d, of the first chunk", i)
		} else {
			require.ErrorIs(t, err, broker.ErrNotConnected, "message %d, after the nacked chunk", i)
		}
	}
	require.Eventually(t, func() bool { return pub.Sessions() == 2 && pub.Connected() },
		30*time.Second, 10*time.Millisecond, "no fresh session after the nacks")
	require.Eventually(t, func() bool {
		now := listedConnections(t, amqpURL)
		return len(now) == 1 && now[0] != first[0]
	}, 30*time.Second, 100*time.Millisecond, "the broker does not list one new connection in place of the nacked one")

	testbroker.Unblock(t, amqpURL)
	for i, err := range pub.Publish(ctx, broker.Exchange, messages(10, "file.uploaded"), 5*time.Second) {
		require.NoError(t, err, "message %d on the fresh session", i)
	}
	require.Equal(t, uint64(2), pub.Sessions())
}

// A returned message was confirmed, only routed nowhere: its session stays.
func TestPublisherKeepsItsSessionAfterAReturn(t *testing.T) {
	t.Parallel()
	amqpURL := testbroker.New(t)
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, broker.DeclareTopology(ch, []broker.Subscription{{Name: "probe", EventTypes: []string{"file.uploaded"}}}, broker.DefaultDeliveryLimit))
	require.NoError(t, conn.Close())
	pub := startPublisher(t, broker.PublisherConfig{URL: amqpURL, ConnectionName: "returned-test"})

	msgs := append(messages(2, "file.uploaded"), broker.Message{RoutingKey: "job.created", Publishing: amqp.Publishing{MessageId: "nowhere", Body: []byte("{}")}})
	errs := pub.Publish(context.Background(), broker.Exchange, msgs, 5*time.Second)
	require.NoError(t, errs[0])
	require.NoError(t, errs[1])
	require.ErrorIs(t, errs[2], broker.ErrReturned)
	// A dropped session is no longer current the moment Publish returns.
	require.True(t, pub.Connected())
	require.Equal(t, uint64(1), pub.Sessions())
}
