package testbroker

import (
	"context"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// blocker is the queue Block binds to every event and keeps full.
const blocker = "test.blocker"

// Block makes the broker nack every publish to broker.Exchange in the
// vhost of amqpURL from now on, while the publisher's channel stays open:
// a quorum queue bound to every routing key, past its x-max-length with
// reject-publish overflow, filled until the broker nacks. Unblock ends it.
func Block(t testing.TB, amqpURL string) {
	t.Helper()
	withChannel(t, amqpURL, func(ch *amqp.Channel) error {
		if _, err := ch.QueueDeclare(blocker, true, false, false, false, amqp.Table{
			amqp.QueueTypeArg:     amqp.QueueTypeQuorum,
			amqp.QueueMaxLenArg:   int64(1),
			amqp.QueueOverflowArg: amqp.QueueOverflowRejectPublish,
		}); err != nil {
			return err
		}
		if err := ch.QueueBind(blocker, "#", broker.Exchange, false, nil); err != nil {
			return err
		}
		if err := ch.Confirm(false); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for range 10 {
			// Through the default exchange, so only the blocker gets them.
			dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", blocker, false, false, amqp.Publishing{Body: []byte("{}")})
			if err != nil {
				return err
			}
			acked, err := dc.WaitContext(ctx)
			if err != nil {
				return err
			}
			if !acked {
				return nil
			}
		}
		t.Fatal("testbroker: the blocker queue never nacked a publish")
		return nil
	})
}

// Unblock ends Block: the queue is deleted, not purged, since a purged
// quorum queue takes a message or two and is full again.
func Unblock(t testing.TB, amqpURL string) {
	t.Helper()
	withChannel(t, amqpURL, func(ch *amqp.Channel) error {
		_, err := ch.QueueDelete(blocker, false, false, false)
		return err
	})
}

func withChannel(t testing.TB, amqpURL string, f func(ch *amqp.Channel) error) {
	t.Helper()
	if err := harness.WithChannel(amqpURL, f); err != nil {
		t.Fatalf("testbroker: %v", err)
	}
}
