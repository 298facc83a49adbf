package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

// TestBrokerPermissions gives the compose services' RabbitMQ users, with
// the rights the definitions file gives them, to a vhost of the real broker
// and shows that each can do its part and nothing of another's.
func TestBrokerPermissions(t *testing.T) {
	t.Parallel()
	conns := brokerUsers(t, append([]string{topologyService}, workers...))

	topo := channel(t, conns[topologyService])
	subs := subscribers.Movable().Subscriptions()
	names := subscribers.Movable().Names()
	allTypes := domain.EventTypes()
	require.NoError(t, broker.DeclareTopology(topo, subs, broker.DefaultDeliveryLimit))
	require.NoError(t, broker.DeclareUnsubscribed(topo, subs, allTypes))
	requireRefused(t, publish(t, channel(t, conns[topologyService]), domain.FileUploaded, "t"), "the topology's user publishes")

	relay := conns["relay"]
	require.NoError(t, publish(t, channel(t, relay), domain.FileUploaded, "m1"))
	require.NoError(t, publish(t, channel(t, relay), domain.JobCreated, "m2"), "a job event reaches the unsubscribed queue")
	requireRefused(t, consume(channel(t, relay), broker.QueueName(names[0])), "the relay consumes")
	requireRefused(t, consume(channel(t, relay), broker.DeadQueueName(names[0])), "the relay consumes")

	for _, own := range names {
		conn := conns[own]
		ch := channel(t, conn)
		d, ok, err := ch.Get(broker.QueueName(own), false)
		require.NoError(t, err, "%s reads its queue", own)
		require.True(t, ok, "the relay's message reached %s", broker.QueueName(own))
		require.Equal(t, "m1", d.MessageId)
		require.NoError(t, d.Ack(false))
		require.NoError(t, consume(channel(t, conn), broker.QueueName(own)), "%s consumes its queue", own)
		require.NoError(t, consume(channel(t, conn), broker.DeadQueueName(own)), "%s consumes its dead letters", own)
		for _, other := range names {
			if other == own {
				continue
			}
			requireRefused(t, consume(channel(t, conn), broker.QueueName(other)), own+" consumes "+other+"'s queue")
			requireRefused(t, consume(channel(t, conn), broker.DeadQueueName(other)), own+" consumes "+other+"'s dead letters")
		}
		requireRefused(t, consume(channel(t, conn), broker.Unsubscribed), own+" consumes the unsubscribed queue")
		requireRefused(t, publish(t, channel(t, conn), domain.FileUploaded, "forged"), own+" publishes to "+broker.Exchange)
		requireRefused(t, broker.DeclareTopology(channel(t, conn), subs, broker.DefaultDeliveryLimit), own+" declares")
	}
}

// brokerUsers creates, on a fresh vhost, each compose service's RabbitMQ
// user under a name unique to this test, with the password hash and the
// rights the definitions file gives it, and returns a connection per
// service made with the password in that service's EPOCH_AMQP_URL.
func brokerUsers(t *testing.T, services []string) map[string]*amqp.Connection {
	t.Helper()
	f := loadCompose(t)
	defs := loadDefinitions(t)
	vhostURL := testbroker.New(t)
	base, err := amqp.ParseURI(vhostURL)
	require.NoError(t, err)
	admin := rabbitadmin.New(base)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	suffix := make([]byte, 4)
	_, _ = rand.Read(suffix)
	conns := map[string]*amqp.Connection{}
	for _, service := range services {
		svcURL, err := amqp.ParseURI(f.Services[service].Environment["EPOCH_AMQP_URL"])
		require.NoError(t, err, service)
		user := defs.user(t, svcURL.Username)
		perms := defs.permissions(t, user.Name)
		user.Name += "-test-" + hex.EncodeToString(suffix)
		perms.User, perms.Vhost = user.Name, base.Vhost
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := admin.DeleteUser(ctx, user.Name); err != nil {
				t.Logf("delete user %s: %v", user.Name, err)
			}
		})
		require.NoError(t, admin.PutUser(ctx, user))
		require.NoError(t, admin.PutPermissions(ctx, perms))

		u := base
		u.Username, u.Password = user.Name, svcURL.Password
		conn, err := amqp.Dial(u.String())
		require.NoError(t, err, "%s connects as %s with its compose password", service, user.Name)
		t.Cleanup(func() { _ = conn.Close() })
		conns[service] = conn
	}
	return conns
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	require.NoError(t, err)
	return ch
}

// publish sends one persistent, mandatory message as the relay does and
// waits for its confirm: nil once the broker acked it and routed it.
func publish(t *testing.T, ch *amqp.Channel, routingKey, id string) error {
	t.Helper()
	closed := ch.NotifyClose(make(chan *amqp.Error, 1))
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	if err := ch.Confirm(false); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, broker.Exchange, routingKey, true, false, amqp.Publishing{
		MessageId: id, Type: routingKey, ContentType: "application/json", DeliveryMode: amqp.Persistent, Body: []byte("{}"),
	})
	if err != nil {
		return err
	}
	select {
	case e := <-closed:
		if e == nil {
			return amqp.ErrClosed
		}
		return e
	case <-dc.Done():
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case e := <-closed:
		if e != nil {
			return e
		}
	default:
	}
	if !dc.Acked() {
		return errors.New("nacked")
	}
	select {
	case r := <-returns:
		return errors.New("returned as unroutable: " + r.ReplyText)
	default:
	}
	return nil
}

func consume(ch *amqp.Channel, queue string) error {
	_, err := ch.Consume(queue, "", false, false, false, false, nil)
	return err
}

// requireRefused checks that err is the broker closing the channel with
// 403 ACCESS_REFUSED.
func requireRefused(t *testing.T, err error, what string) {
	t.Helper()
	var amqpErr *amqp.Error
	require.ErrorAs(t, err, &amqpErr, "%s: want ACCESS_REFUSED", what)
	require.Equal(t, amqp.AccessRefused, amqpErr.Code, "%s: %v", what, amqpErr)
}
