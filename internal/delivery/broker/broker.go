// Package broker owns Epoch's side of RabbitMQ: the names and topology of
// the message contract (one topic exchange, a quorum queue with a delivery
// limit and a dead-letter queue per subscriber) and a publisher that keeps a
// confirm channel open across broker restarts.
package broker

import (
	"fmt"
	"regexp"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Exchange is the durable topic exchange every event is published to, with
// the event type as routing key.
const Exchange = "catacloud.events"

// Unsubscribed is the queue bound to the event types no subscriber queue
// is bound to (the job events, today). Without a queue those events would
// come back to the mandatory publisher as unroutable and stay in the
// outbox for ever. It keeps the newest UnsubscribedMaxLength of them, for
// a look in the management console, and drops older ones; a consumer that
// wants them binds a queue of its own to Exchange. The exchange itself stays
// exactly as DESIGN.md declares it (topic, durable, no arguments), so an
// outside client can declare it too.
const Unsubscribed = "catacloud.unsubscribed"

// UnsubscribedMaxLength bounds the Unsubscribed queue.
const UnsubscribedMaxLength = 10000

// DefaultURL is the RabbitMQ of EPOCH_AMQP_URL when it is not set: the
// local broker's default vhost, as guest.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// DefaultDeliveryLimit is how often a subscriber queue delivers a message
// before dead-lettering it.
const DefaultDeliveryLimit = 20

// QueueName is the durable quorum queue a subscriber consumes.
func QueueName(subscriber string) string { return "catacloud." + subscriber }

// DeadQueueName is where a subscriber's poison messages end up.
func DeadQueueName(subscriber string) string { return QueueName(subscriber) + ".dead" }

// Subscription is a remote subscriber: its name and the event types (routing
// keys) its queue is bound to.
type Subscription struct {
	Name       string
	EventTypes []string
}

// DeclareTopology declares, idempotently, the exchange and each
// subscriber's queue, dead-letter queue and bindings. Declaring a queue that
// exists with other arguments fails (PRECONDITION_FAILED), which is what we
// want: a silent mismatch would hide a misconfigured delivery limit.
//
// The queues' arguments are the ones every deployment's queues were created
// with, and must stay so: RabbitMQ (measured on 3.10) checks each of
// x-quorum-initial-group-size, x-dead-letter-strategy and x-overflow for
// equivalence like the others, so adding one here fails the declare on every
// queue created without it, and a queue created with it fails the declare of
// a worker without it. What a cluster needs comes without them, for queues
// old and new alike, on one node as on three:
//   - Replication: a new quorum queue gets a member on each of up to 3 of the
//     cluster's nodes, RabbitMQ's default initial group size capped at the
//     nodes the cluster has when the queue is declared (measured: 1 member
//     on one node and 3 on three, with or without the argument). A queue
//     declared before the cluster grew stays on its nodes until
//     `rabbitmq-queues grow` adds members.
//   - At-least-once dead-lettering: the policy DeadLetterPolicyDefinition,
//     which an operator sets (the compose definitions file does) and which
//     queues take when it is set, without a redeclare.
func DeclareTopology(ch *amqp.Channel, subs []Subscription, deliveryLimit int) error {
	if deliveryLimit <= 0 {
		return fmt.Errorf("declare topology: delivery limit must be positive, got %d", deliveryLimit)
	}
	if err := ch.ExchangeDeclare(Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %s: %w", Exchange, err)
	}
	for _, s := range subs {
		if s.Name == "" {
			return fmt.Errorf("declare topology: subscription without a name")
		}
		dead := DeadQueueName(s.Name)
		if _, err := ch.QueueDeclare(dead, true, false, false, false, amqp.Table{
			amqp.QueueTypeArg: amqp.QueueTypeQuorum,
		}); err != nil {
			return fmt.Errorf("declare queue %s: %w", dead, err)
		}
		// Dead-lettering through the default exchange with the dead queue's
		// name as routing key needs no extra exchange to declare or bind.
		// The consumer keeps every dead letter in Postgres itself, before
		// it acks (a failing one on its last delivery); the queue's own
		// dead-lettering is only the backstop for a worker that dies on a
		// message every time. Without DeadLetterPolicyDefinition that
		// backstop is at-most-once: a dead letter the dead queue cannot take
		// (missing, or its leader gone) is dropped.
		q := QueueName(s.Name)
		if _, err := ch.QueueDeclare(q, true, false, false, false, amqp.Table{
			amqp.QueueTypeArg:           amqp.QueueTypeQuorum,
			"x-delivery-limit":          int64(deliveryLimit),
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": dead,
		}); err != nil {
			return fmt.Errorf("declare queue %s: %w", q, err)
		}
		for _, key := range s.EventTypes {
			if err := ch.QueueBind(q, key, Exchange, false, nil); err != nil {
				return fmt.Errorf("bind %s to %s: %w", q, key, err)
			}
		}
	}
	return nil
}

// DeadLetterPolicyName is the name the dead-letter policy goes by (the
// compose definitions file, README's rabbitmqctl line).
const DeadLetterPolicyName = "epoch-dead-letters"

// DeadLetterPolicyDefinition is the policy that makes the subscriber
// queues dead-letter at least once: a dead letter stays in its queue until
// the dead queue has confirmed it, and is sent again while the dead queue
// is missing or has no leader. RabbitMQ 3.10 honours the strategy only with
// overflow reject-publish (otherwise it falls back to at-most-once with a
// log line); the queues have no length limit, so reject-publish never
// refuses a publish. A policy, not queue arguments, because queues declared
// earlier take a policy and cannot take new arguments (DeclareTopology).
// It leaves delivery-limit to the queues' x-delivery-limit: RabbitMQ uses
// the lower of a policy's and an argument's, so a policy value would
// silently override EPOCH_DELIVERY_LIMIT, which the consumer's own dead
// letters count on.
func DeadLetterPolicyDefinition() map[string]any {
	return map[string]any{"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"}
}

// DeadLetterPolicyPattern is the queue pattern of the dead-letter policy
// for the named subscribers: their queues and nothing else. Not the dead
// queues (they dead-letter nowhere, and RabbitMQ logs a warning for a
// strategy without a target) nor Unsubscribed (classic, drop-head).
func DeadLetterPolicyPattern(subscribers []string) string {
	quoted := make([]string, len(subscribers))
	for i, s := range subscribers {
		quoted[i] = regexp.QuoteMeta(s)
	}
	return `^` + regexp.QuoteMeta(QueueName("")) + `(` + strings.Join(quoted, "|") + `)$`
}

// DeclareUnsubscribed declares the Unsubscribed queue and binds it to each
// of eventTypes that none of subs is bound to. Call it after
// DeclareTopology, with every event type the system publishes.
func DeclareUnsubscribed(ch *amqp.Channel, subs []Subscription, eventTypes []string) error {
	bound := make(map[string]bool)
	for _, s := range subs {
		for _, t := range s.EventTypes {
			bound[t] = true
		}
	}
	// A classic queue: it is only a bounded window for inspection, and
	// need not pay for replication.
	if _, err := ch.QueueDeclare(Unsubscribed, true, false, false, false, amqp.Table{
		amqp.QueueTypeArg:     amqp.QueueTypeClassic,
		amqp.QueueMaxLenArg:   int64(UnsubscribedMaxLength),
		amqp.QueueOverflowArg: amqp.QueueOverflowDropHead,
	}); err != nil {
		return fmt.Errorf("declare queue %s: %w", Unsubscribed, err)
	}
	for _, t := range eventTypes {
		if bound[t] {
			continue
		}
		if err := ch.QueueBind(Unsubscribed, t, Exchange, false, nil); err != nil {
			return fmt.Errorf("bind %s to %s: %w", Unsubscribed, t, err)
		}
	}
	return nil
}

// Ready is how many messages queue holds ready for delivery, read through
// ch with a passive declare, which changes nothing. A consumer that gets
// nothing while its queue holds ready messages is one the broker stopped
// delivering to. The declare's consumer count is not offered: on a
// cluster it read 0 for quorum queues two consumers were taking from.
func Ready(ch *amqp.Channel, queue string) (int, error) {
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, fmt.Errorf("look at %s: %w", queue, err)
	}
	return q.Messages, nil
}
