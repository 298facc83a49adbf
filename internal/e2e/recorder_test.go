package e2e_test

import (
	"fmt"
	"sync"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"
)

// exchange is DESIGN.md's exchange, spelled out here rather than imported:
// the tests check the contract as an outside client knows it.
const exchange = "catacloud.events"

// recorder is an outside AMQP consumer: its own queue, bound to the
// exchange with "#", records every message it gets.
type recorder struct {
	mu         sync.Mutex
	count      map[string]int // message_id → deliveries
	first      map[string]amqp.Delivery
	order      []string // message ids in order of first arrival
	deliveries int
}

// newRecorder declares the exchange (as the worker does, so the binding
// exists before the first publish) and a queue of its own bound with "#",
// and consumes it until t ends.
func newRecorder(t *testing.T, amqpURL string) *recorder {
	t.Helper()
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "e2e-recorder"}})
	if err != nil {
		t.Fatalf("recorder: dial: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("recorder: channel: %v", err)
	}
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		t.Fatalf("recorder: declare exchange: %v", err)
	}
	q, err := ch.QueueDeclare("e2e.recorder", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("recorder: declare queue: %v", err)
	}
	if err := ch.QueueBind(q.Name, "#", exchange, false, nil); err != nil {
		t.Fatalf("recorder: bind: %v", err)
	}
	msgs, err := ch.Consume(q.Name, "e2e-recorder", true, false, false, false, nil)
	if err != nil {
		t.Fatalf("recorder: consume: %v", err)
	}
	r := &recorder{count: make(map[string]int), first: make(map[string]amqp.Delivery)}
	go func() {
		for d := range msgs {
			r.mu.Lock()
			r.deliveries++
			if r.count[d.MessageId] == 0 {
				d.Acknowledger = nil
				r.first[d.MessageId] = d
				r.order = append(r.order, d.MessageId)
			}
			r.count[d.MessageId]++
			r.mu.Unlock()
		}
	}()
	return r
}

// distinct is the number of different message ids received.
func (r *recorder) distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count)
}

// stats returns distinct ids and all deliveries.
func (r *recorder) stats() (distinct, deliveries int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count), r.deliveries
}

// missing returns how many of ids were never received, and one of them.
func (r *recorder) missing(ids []string) (int, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, example := 0, ""
	for _, id := range ids {
		if r.count[id] == 0 {
			n++
			example = id
		}
	}
	return n, example
}

// hasAll is a condition for eventually: every id arrived.
func (r *recorder) hasAll(ids []string) func() (bool, string) {
	return func() (bool, string) {
		n, example := r.missing(ids)
		return n == 0, fmt.Sprintf("%d of %d events never arrived (e.g. %s)", n, len(ids), example)
	}
}

// snapshot returns the first delivery of each id and the arrival order.
func (r *recorder) snapshot() (map[string]amqp.Delivery, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := make(map[string]amqp.Delivery, len(r.first))
	for k, v := range r.first {
		first[k] = v
	}
	return first, append([]string(nil), r.order...)
}
