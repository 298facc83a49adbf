package e2e_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

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

// newRecorder binds a queue of its own with "#" to the exchange, which a
// worker must have declared already (an outside client does not declare
// the system's exchange: its arguments are the worker's business), and
// consumes it until t ends, acking each message once recorded. When its
// connection is closed (a test dropping the broker's connections), it
// dials again and goes on: the unacked messages come back.
func newRecorder(t *testing.T, amqpURL string) *recorder {
	t.Helper()
	r := &recorder{count: make(map[string]int), first: make(map[string]amqp.Delivery)}
	msgs, conn, err := r.subscribe(amqpURL)
	if err != nil {
		t.Fatalf("recorder: %v", err)
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	var mu sync.Mutex
	t.Cleanup(func() {
		close(done)
		mu.Lock()
		_ = conn.Close()
		mu.Unlock()
		<-stopped
	})
	go func() {
		defer close(stopped)
		for {
			for d := range msgs {
				r.record(d)
			}
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
				}
				m, c, err := r.subscribe(amqpURL)
				if err != nil {
					continue
				}
				mu.Lock()
				select {
				case <-done: // t ended while dialing
					mu.Unlock()
					_ = c.Close()
					return
				default:
				}
				msgs, conn = m, c
				mu.Unlock()
				break
			}
		}
	}()
	return r
}

// subscribe dials, binds the recorder's queue and starts consuming it.
func (r *recorder) subscribe(amqpURL string) (<-chan amqp.Delivery, *amqp.Connection, error) {
	conn, err := amqp.DialConfig(amqpURL, amqp.Config{Properties: amqp.Table{"connection_name": "e2e-recorder"}})
	if err != nil {
		return nil, nil, fmt.Errorf("dial: %w", err)
	}
	fail := func(err error) (<-chan amqp.Delivery, *amqp.Connection, error) {
		_ = conn.Close()
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fail(fmt.Errorf("channel: %w", err))
	}
	if err := ch.ExchangeDeclarePassive(exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fail(fmt.Errorf("exchange %s is not there (the worker declares it at start): %w", exchange, err))
	}
	q, err := ch.QueueDeclare("e2e.recorder", true, false, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("declare queue: %w", err))
	}
	if err := ch.QueueBind(q.Name, "#", exchange, false, nil); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	}
	if err := ch.Qos(2000, 0, false); err != nil {
		return fail(fmt.Errorf("qos: %w", err))
	}
	msgs, err := ch.Consume(q.Name, "e2e-recorder", false, false, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("consume: %w", err))
	}
	return msgs, conn, nil
}

// record notes a delivery, then acks it.
func (r *recorder) record(d amqp.Delivery) {
	r.mu.Lock()
	r.deliveries++
	if r.count[d.MessageId] == 0 {
		kept := d
		kept.Acknowledger = nil
		r.first[d.MessageId] = kept
		r.order = append(r.order, d.MessageId)
	}
	r.count[d.MessageId]++
	r.mu.Unlock()
	_ = d.Ack(false)
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
