package e2ekit

import (
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
)

// Exchange is DESIGN.md's exchange, spelled out here rather than imported:
// the tests check the contract as an outside client knows it.
const Exchange = "catacloud.events"

// RecorderConfig says where a Recorder listens.
type RecorderConfig struct {
	// URL is the vhost's AMQP URL, or the comma-separated URLs of the
	// nodes of one cluster (each dial starts at the next, as the binaries
	// do).
	URL string
	// Queue is the recorder's own queue.
	Queue string
	// Quorum makes Queue a quorum queue, replicated like the subscribers'
	// queues, so the recorder loses nothing when a cluster node goes; a
	// classic queue lives on one node only.
	Quorum bool
}

// Recorder is an outside AMQP consumer: its own queue, bound to the
// exchange with "#", records every message it gets.
type Recorder struct {
	mu         sync.Mutex
	count      map[string]int // message_id → deliveries
	first      map[string]amqp.Delivery
	order      []string // message ids in order of first arrival
	deliveries int
}

// NewRecorder binds a queue of its own with "#" to the exchange, which a
// worker must have declared already (an outside client does not declare
// the system's exchange: its arguments are the worker's business), and
// consumes it until t ends, acking each message once recorded. When its
// connection is closed (a test dropping the broker's connections, a node
// going), it dials again and goes on: the unacked messages come back.
func NewRecorder(t testing.TB, cfg RecorderConfig) *Recorder {
	t.Helper()
	r := &Recorder{count: make(map[string]int), first: make(map[string]amqp.Delivery)}
	msgs, conn, err := r.subscribe(cfg)
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
			r.drain(msgs, conn, cfg.Queue)
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
				}
				m, c, err := r.subscribe(cfg)
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
func (r *Recorder) subscribe(cfg RecorderConfig) (<-chan amqp.Delivery, *amqp.Connection, error) {
	conn, err := broker.Dial(cfg.URL, cfg.Queue)
	if err != nil {
		return nil, nil, err
	}
	fail := func(err error) (<-chan amqp.Delivery, *amqp.Connection, error) {
		_ = conn.Close()
		return nil, nil, err
	}
	ch, err := conn.Channel()
	if err != nil {
		return fail(fmt.Errorf("channel: %w", err))
	}
	if err := ch.ExchangeDeclarePassive(Exchange, amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
		return fail(fmt.Errorf("exchange %s is not there (the worker declares it at start): %w", Exchange, err))
	}
	var args amqp.Table
	if cfg.Quorum {
		args = amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum}
	}
	q, err := ch.QueueDeclare(cfg.Queue, true, false, false, false, args)
	if err != nil {
		return fail(fmt.Errorf("declare queue: %w", err))
	}
	if err := ch.QueueBind(q.Name, "#", Exchange, false, nil); err != nil {
		return fail(fmt.Errorf("bind: %w", err))
	}
	if err := ch.Qos(2000, 0, false); err != nil {
		return fail(fmt.Errorf("qos: %w", err))
	}
	msgs, err := ch.Consume(q.Name, cfg.Queue, false, false, false, false, nil)
	if err != nil {
		return fail(fmt.Errorf("consume: %w", err))
	}
	return msgs, conn, nil
}

// recorderStallAfter is how long the recorder waits with no delivery
// before it looks whether its queue holds messages nothing delivers to it.
const recorderStallAfter = 5 * time.Second

// drain records msgs until the channel closes. After each quiet spell it
// looks at its queue (on a channel of its own) and, when messages wait
// there, closes conn so that the caller
// consumes again: the broker can keep a quorum queue's consumer
// registered, and silent, after the whole cluster restarted, and the
// Epoch consumer does the same.
func (r *Recorder) drain(msgs <-chan amqp.Delivery, conn *amqp.Connection, queue string) {
	quiet := time.NewTimer(recorderStallAfter)
	defer quiet.Stop()
	for {
		select {
		case d, ok := <-msgs:
			if !ok {
				return
			}
			r.record(d)
			quiet.Reset(recorderStallAfter)
		case <-quiet.C:
			if stalled(conn, queue) {
				_ = conn.Close() // msgs closes next
			}
			quiet.Reset(recorderStallAfter)
		}
	}
}

// stalled: queue has ready messages, seen from a fresh channel of conn; a
// connection that cannot answer is left to its own close.
func stalled(conn *amqp.Connection, queue string) bool {
	ch, err := conn.Channel()
	if err != nil {
		return false
	}
	defer ch.Close()
	ready, err := broker.Ready(ch, queue)
	return err == nil && ready > 0
}

// record notes a delivery, then acks it.
func (r *Recorder) record(d amqp.Delivery) {
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

// Distinct is the number of different message ids received.
func (r *Recorder) Distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count)
}

// Stats returns distinct ids and all deliveries.
func (r *Recorder) Stats() (distinct, deliveries int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.count), r.deliveries
}

// Missing returns how many of ids were never received, and one of them.
func (r *Recorder) Missing(ids []string) (int, string) {
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

// HasAll is a condition for Eventually: every id arrived.
func (r *Recorder) HasAll(ids []string) func() (bool, string) {
	return func() (bool, string) {
		n, example := r.Missing(ids)
		return n == 0, fmt.Sprintf("%d of %d events never arrived (e.g. %s)", n, len(ids), example)
	}
}

// Snapshot returns the first delivery of each id and the arrival order.
func (r *Recorder) Snapshot() (map[string]amqp.Delivery, []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	first := make(map[string]amqp.Delivery, len(r.first))
	for k, v := range r.first {
		first[k] = v
	}
	return first, append([]string(nil), r.order...)
}
