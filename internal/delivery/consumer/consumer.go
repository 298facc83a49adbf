// Package consumer feeds a remote subscriber from its RabbitMQ queue
// (catacloud.<name>): it takes deliveries in batches and acks each batch
// only after its Postgres transaction committed. A delivery is only a
// notice: in that transaction the stored events the batch names are looked
// up (by message id and the body's position, one statement) and applied as
// the event store holds them, through dispatch.DeliverCount (inbox rows make
// a redelivery a no-op), never as the body says. A message that names no
// stored event, differs from it or does not decode changes nothing, claims
// no inbox row and is kept at once in dead_letters with its reason; a
// genuine event that fails to apply is requeued, alone, and kept there on
// its last delivery. The rest keep flowing. It reconnects after the broker
// goes away and waits out Postgres outages without spending the messages'
// delivery counts.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/backoff"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// DefaultPrefetch is Config.Prefetch's default.
const DefaultPrefetch = 1000

// Config tunes a consumer. Zero fields take the defaults documented on them.
type Config struct {
	// URL of the broker (required).
	URL string
	// Prefetch is how many unacked deliveries the broker may hand over at a
	// time (default DefaultPrefetch), plus BatchSize: room for the batch
	// collected while two are applied.
	Prefetch int
	// BatchSize is the most deliveries applied in one transaction (default
	// Prefetch/2, so the broker keeps sending while a batch commits; at most
	// Prefetch).
	BatchSize int
	// MinBackoff and MaxBackoff bound the waits before redialing the broker
	// and before retrying a batch while Postgres is unreachable (defaults
	// backoff.DefaultMin and backoff.DefaultMax).
	MinBackoff, MaxBackoff time.Duration
	// BatchIdle closes a batch when no delivery came for this long
	// (default 50µs); BatchMaxWait closes it this long after its first
	// delivery (default 20ms).
	BatchIdle, BatchMaxWait time.Duration
	// TxTimeout bounds one batch's transaction (default 30s). A batch in
	// hand at shutdown is given this long to commit and be acked.
	TxTimeout time.Duration
	// DeliveryLimit is the delivery on which a message whose event fails
	// to apply is kept as a dead letter (default
	// broker.DefaultDeliveryLimit): the queue's own delivery limit, so the
	// consumer keeps it before the broker would drop or move it.
	DeliveryLimit int
	// Topology, when set, runs on every new channel before consuming (for
	// example broker.DeclareTopology), so a broker that lost its
	// definitions gets them back.
	Topology func(ch *amqp.Channel) error
}

func (c *Config) setDefaults() error {
	if c.URL == "" {
		return errors.New("consumer: no broker URL")
	}
	if c.Prefetch == 0 {
		c.Prefetch = DefaultPrefetch
	}
	if c.BatchSize == 0 {
		c.BatchSize = max(1, c.Prefetch/2)
	}
	if c.BatchIdle == 0 {
		c.BatchIdle = 50 * time.Microsecond
	}
	if c.BatchMaxWait == 0 {
		c.BatchMaxWait = 20 * time.Millisecond
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = backoff.DefaultMin
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = backoff.DefaultMax
	}
	if c.TxTimeout == 0 {
		c.TxTimeout = 30 * time.Second
	}
	if c.DeliveryLimit == 0 {
		c.DeliveryLimit = broker.DefaultDeliveryLimit
	}
	if c.Prefetch < 1 || c.BatchSize < 1 || c.BatchSize > c.Prefetch || c.BatchIdle < 0 ||
		c.BatchMaxWait < c.BatchIdle || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff || c.TxTimeout < 0 ||
		c.DeliveryLimit < 1 {
		return fmt.Errorf("consumer: invalid config (prefetch %d, batch %d, backoff %s..%s)",
			c.Prefetch, c.BatchSize, c.MinBackoff, c.MaxBackoff)
	}
	return nil
}

// PoolSettings are the session settings of the connections a consumer is
// best given (database.ConnectWith). Its statements take arrays, whose
// values never change the right plan: planning the batch's check afresh
// each time cost more than running it for a small batch, so each is
// planned once per connection and kept; and with sequential scans, hash and
// merge joins off while they are made, the plan kept is the nested loop
// over the deliveries probing events by primary key whatever the size of
// events then (one made while events was a page or two would otherwise
// read all of it each time once it grew; see OutboxPreferIndexes).
var PoolSettings = map[string]string{
	"plan_cache_mode":  "force_generic_plan",
	"enable_seqscan":   "off",
	"enable_hashjoin":  "off",
	"enable_mergejoin": "off",
}

// Consumer runs one subscriber from its queue.
type Consumer struct {
	pool    *pgxpool.Pool
	sub     dispatch.Subscriber
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	queue   string

	applied   atomic.Int64  // highest event position applied (or found applied)
	lastFull  atomic.Int64  // when a full batch was last collected (unix ns): a backlog
	announce  chan struct{} // a batch committed new events: tell the api's waits
	consuming atomic.Bool   // a session is consuming the queue now
	head      headCache
}

// New makes a consumer of catacloud.<sub.Name()>. Metrics register on reg
// (nil: none); several consumers may share one registry.
func New(pool *pgxpool.Pool, sub dispatch.Subscriber, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Consumer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	m, err := newMetrics(reg, sub.Name())
	if err != nil {
		return nil, err
	}
	return &Consumer{
		pool: pool, sub: sub, cfg: cfg, metrics: m, queue: broker.QueueName(sub.Name()), announce: make(chan struct{}, 1),
		logger: logger.With("subscriber", sub.Name()),
	}, nil
}

// Run consumes until ctx ends, reconnecting as needed. At shutdown it
// stops taking deliveries, lets the transaction in hand finish (then acks
// it) or abandons it, and closes the channel: every unacked delivery goes
// back to the queue. It returns nil after a shutdown.
func (c *Consumer) Run(ctx context.Context) error {
	announced := make(chan struct{})
	defer func() { <-announced }()
	go func() { defer close(announced); c.announcer(ctx) }()
	redial := backoff.New(c.cfg.MinBackoff, c.cfg.MaxBackoff)
	for {
		started := time.Now()
		err := c.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > 10*c.cfg.MaxBackoff {
			redial.Reset() // it ran a good while: not a dial loop
		}
		wait := redial.Next()
		c.logger.Warn("consumer disconnected, reconnecting", "queue", c.queue, "error", err, "backoff", wait.String())
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// Connected reports whether the consumer is consuming its queue now (for
// the worker's /readyz).
func (c *Consumer) Connected() bool { return c.consuming.Load() }

// backlogFor is how long after its last full batch a consumer counts as
// working through a backlog.
const backlogFor = 3 * time.Second

// Backlogged reports whether the consumer is working through a backlog of
// its queue (it collected a full batch within backlogFor): events not
// applied yet may still be on their way, and healing waits for them.
func (c *Consumer) Backlogged() bool {
	return time.Since(time.Unix(0, c.lastFull.Load())) < backlogFor
}

// errClosed is the end of a session's delivery stream: the channel or
// connection closed.
var errClosed = errors.New("consumer: delivery channel closed")

// session is one connection: dial, consume, handle batches until the
// connection breaks or ctx ends.
func (c *Consumer) session(ctx context.Context) error {
	conn, err := broker.Dial(c.cfg.URL, "epoch-consumer-"+c.sub.Name())
	if err != nil {
		return err
	}
	// Closing the connection returns every unacked delivery to the queue:
	// the one way out of a session, on error and on shutdown alike.
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	if c.cfg.Topology != nil {
		if err := c.cfg.Topology(ch); err != nil {
			return fmt.Errorf("declare topology: %w", err)
		}
	}
	// Room for the batch being collected beside the two being applied.
	if err := ch.Qos(c.cfg.Prefetch+c.cfg.BatchSize, 0, false); err != nil {
		return fmt.Errorf("qos: %w", err)
	}
	deliveries, err := ch.Consume(c.queue, "", false, false, false, false, nil)
	if err != nil {
		return fmt.Errorf("consume %s: %w", c.queue, err)
	}
	// A channel of its own for looking at the queue (stalled): the
	// consuming one stays the acks'.
	look, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("open channel: %w", err)
	}
	c.logger.Info("consuming", "queue", c.queue, "prefetch", c.cfg.Prefetch, "batch_size", c.cfg.BatchSize)
	c.consuming.Store(true)
	defer c.consuming.Store(false)
	// A full batch means a backlog: the next one is collected and applied
	// while it commits (a transaction waits mostly for Postgres), two at a
	// time at most. A batch that is not full is settled before the next is
	// taken, so under light load deliveries are applied one transaction
	// after another and never wait for each other's row locks.
	var inflight *settling
	defer func() {
		if inflight != nil {
			<-inflight.done
		}
	}()
	for {
		batch, err := c.collect(ctx, deliveries, look)
		if len(batch) == c.cfg.BatchSize {
			c.lastFull.Store(time.Now().UnixNano())
		}
		if len(batch) > 0 {
			next := &settling{done: make(chan struct{})}
			go func(prev *settling) {
				defer close(next.done)
				next.err = c.handle(ctx, batch, prev)
			}(inflight)
			prev := inflight
			inflight = next
			if prev != nil {
				if <-prev.done; prev.err != nil {
					return prev.err
				}
			}
			if len(batch) < c.cfg.BatchSize {
				<-next.done
				inflight = nil
				if next.err != nil {
					return next.err
				}
			}
		}
		if err != nil {
			return err
		}
	}
}

// stallAfter is how long a consumer waits with no delivery before it looks
// whether its queue holds messages nothing delivers to it (stalled).
const stallAfter = 5 * time.Second

// errStalled ends a session whose consumer gets nothing from a queue that
// has messages for it.
var errStalled = errors.New("consumer: stalled")

// stalled looks at the queue through look after the consumer got nothing
// for stallAfter, with room for more: messages ready there mean the broker
// is not delivering to this consumer (RabbitMQ 3.10 was seen to keep a
// quorum queue's consumer registered, and silent, after the whole cluster
// restarted), and the session ends so that a new one consumes again.
func (c *Consumer) stalled(look *amqp.Channel) error {
	ready, err := broker.Ready(look, c.queue)
	if err != nil {
		return err
	}
	if ready > 0 {
		return fmt.Errorf("%w: %s holds %d ready messages, none delivered for %s", errStalled, c.queue, ready, stallAfter)
	}
	return nil
}

// settling is a batch being applied and acked.
type settling struct {
	done chan struct{} // closed once settled
	err  error         // set before done closes
}

// collect waits for a first delivery, then takes more while they keep
// coming less than BatchIdle apart, up to BatchSize or BatchMaxWait. The
// idle gap is short: a backlog (deliveries already buffered by the client)
// is handed over in microseconds, so batches fill up when the subscriber is
// behind, while under light load a batch closes a moment after its last
// message and the event is applied at once.
func (c *Consumer) collect(ctx context.Context, deliveries <-chan amqp.Delivery, look *amqp.Channel) ([]amqp.Delivery, error) {
	idle := time.NewTimer(time.Second)
	defer idle.Stop()
	var first amqp.Delivery
	idleFor := time.Duration(0)
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case d, ok := <-deliveries:
			if !ok {
				return nil, errClosed
			}
			first, waiting = d, false
		case <-idle.C:
			c.metrics.lag.Set(0) // nothing came for a second: caught up with the queue
			if idleFor += time.Second; idleFor >= stallAfter {
				idleFor = 0
				if err := c.stalled(look); err != nil {
					return nil, err
				}
			}
			idle.Reset(time.Second)
		}
	}
	batch := []amqp.Delivery{first}
	deadline := time.Now().Add(c.cfg.BatchMaxWait)
	for len(batch) < c.cfg.BatchSize {
		wait := min(c.cfg.BatchIdle, time.Until(deadline))
		if wait <= 0 {
			return batch, nil
		}
		idle.Reset(wait)
		select {
		case d, ok := <-deliveries:
			if !ok {
				return batch, errClosed
			}
			batch = append(batch, d)
		case <-idle.C:
			return batch, nil
		case <-ctx.Done():
			// Shutdown: what is in hand is not applied; closing the
			// connection gives it back to the queue.
			return nil, ctx.Err()
		}
	}
	return batch, nil
}

// handle settles every delivery of a batch. It returns an error only when
// the batch could not be settled (the channel broke, or shutdown came
// while Postgres was away): the caller closes the connection, and the
// unsettled deliveries go back to the queue.
func (c *Consumer) handle(ctx context.Context, batch []amqp.Delivery, prev *settling) error {
	notices := make([]notice, len(batch))
	for i, d := range batch {
		notices[i] = readNotice(d)
	}
	c.startProcess(ctx, notices)
	batchCtx := batchContext(ctx, notices)
	failures := make(map[uint64]error)
	defer endProcess(notices, failures)
	// A failing message is isolated: each alone in its own transaction.
	whole, err := dispatch.Isolate(notices, dispatch.Isolation[notice]{
		Apply: func(n []notice) error {
			if len(n) < len(notices) {
				alone := readNotice(n[0].d) // as delivered, not as the batch left it
				alone.ctx, alone.span = n[0].ctx, n[0].span
				n[0] = alone
				return c.apply(n[0].context(ctx), n)
			}
			return c.apply(batchCtx, n)
		},
		Stop: func(error) bool { return ctx.Err() != nil },
		Split: func(cause error) {
			c.logger.WarnContext(batchCtx, "batch failed, retrying its messages one by one", "messages", len(batch), "error", cause)
		},
		Applied: func(n []notice) error {
			if err := n[0].d.Ack(false); err != nil {
				return fmt.Errorf("ack: %w", err)
			}
			return nil
		},
		Failed: func(n []notice, cause error) error {
			failures[n[0].d.DeliveryTag] = cause
			return c.failed(n[0].context(ctx), n, cause)
		},
	})
	if !whole {
		return err
	}
	// The ack covers every earlier delivery of the channel: the batch
	// before, applied at the same time, must be settled first.
	if prev != nil {
		if <-prev.done; prev.err != nil {
			return prev.err
		}
	}
	if err := batch[len(batch)-1].Ack(true); err != nil {
		// Committed but not acked: the redelivery is an inbox no-op.
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// failed settles a delivery whose event failed to apply alone: requeued
// while it has deliveries left, since a failure may not be deterministic
// after all; on its last one, kept as a dead letter (reason failed) and
// acked, so it is counted once and the broker never drops it.
func (c *Consumer) failed(ctx context.Context, n []notice, cause error) error {
	d := n[0].d
	if deliveryCount(d)+1 < c.cfg.DeliveryLimit {
		c.logger.ErrorContext(ctx, "message failed, requeueing", "message_id", d.MessageId, "deliveries", deliveryCount(d)+1,
			"delivery_limit", c.cfg.DeliveryLimit, "error", cause)
		if err := d.Nack(false, true); err != nil {
			return fmt.Errorf("nack: %w", err)
		}
		return nil
	}
	c.logger.ErrorContext(ctx, "message failed on its last delivery, dead-lettering", "message_id", d.MessageId,
		"deliveries", deliveryCount(d)+1, "error", cause)
	n[0].reason = ReasonFailed
	if err := c.apply(ctx, n); err != nil {
		// Not kept: back to the queue, whose own limit dead-letters it.
		if err := d.Nack(false, true); err != nil {
			return fmt.Errorf("nack: %w", err)
		}
		return nil
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// deliveryCount is how many times the broker delivered d before (a quorum
// queue's x-delivery-count).
func deliveryCount(d amqp.Delivery) int {
	switch v := d.Headers["x-delivery-count"].(type) {
	case int64:
		return int(v)
	case int32:
		return int(v)
	case int:
		return v
	}
	return 0
}

// apply runs one transaction for notices and retries it while Postgres is
// unreachable (or on a deadlock or serialization failure): the messages
// stay unacked meanwhile, so an outage spends none of their delivery
// counts. It returns the error of a transaction that failed for another
// reason, or ctx's error when shutdown came first.
func (c *Consumer) apply(ctx context.Context, notices []notice) error {
	again := backoff.New(c.cfg.MinBackoff, c.cfg.MaxBackoff)
	transient := 0
	for {
		res, err := c.applyOnce(ctx, notices)
		if err == nil {
			c.metrics.processed.Add(float64(res.fresh))
			c.metrics.duplicates.Add(float64(res.relevant - res.fresh))
			for _, reason := range res.dead {
				c.metrics.deadLettered.WithLabelValues(reason).Inc()
			}
			c.observe(ctx, res.top)
			return nil
		}
		retry := database.IsUnavailable(err)
		if !retry && database.IsTransient(err) && transient < 5 {
			transient++
			retry = true
		}
		if !retry {
			return err
		}
		wait := again.Next()
		c.logger.WarnContext(ctx, "postgres unavailable, retrying batch", "messages", len(notices), "error", err, "backoff", wait.String())
		if !backoff.Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

// batchResult is what one batch's transaction did.
type batchResult struct {
	relevant, fresh int      // stored events of the subscriber's types; those new to it
	dead            []string // reasons of the dead letters kept for the first time
	top             int64    // highest position verified
}

// applyOnce is one transaction: the stored events the notices name are
// looked up (one statement) and compared with the bodies; the verified ones
// are applied as stored, the others kept as dead letters, with no inbox row.
// It is not cut short by shutdown: a batch in hand either commits (and is
// acked) or fails within TxTimeout.
func (c *Consumer) applyOnce(ctx context.Context, notices []notice) (batchResult, error) {
	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TxTimeout)
	defer cancel()
	var res batchResult
	began := time.Now()
	err := database.InTx(txCtx, c.pool, func(tx *database.Tx) error {
		res = batchResult{}
		for i := range notices {
			if notices[i].reason != ReasonFailed {
				notices[i].reason, notices[i].stored = "", eventstore.Event{}
				if notices[i].claimed.ID == uuid.Nil {
					notices[i].reason = ReasonMalformed
				}
			}
		}
		fresh, err := claimStored(txCtx, tx, c.sub, notices)
		if err != nil {
			return err
		}
		types := c.sub.EventTypes()
		for _, n := range notices {
			if n.reason == "" {
				res.top = max(res.top, n.stored.Position)
				if slices.Contains(types, n.stored.Type) {
					res.relevant++
				}
			}
		}
		res.fresh = len(fresh)
		if len(fresh) > 0 {
			if err := c.sub.Handle(txCtx, tx, fresh); err != nil {
				return fmt.Errorf("%s: %w", c.sub.Name(), err)
			}
		}
		res.dead, err = recordDead(txCtx, tx, c.sub.Name(), notices)
		return err
	})
	if err == nil {
		c.metrics.batch.Observe(time.Since(began).Seconds())
		if res.fresh > 0 {
			select {
			case c.announce <- struct{}{}:
			default: // one is pending already: it covers this batch too
			}
		}
	}
	return res, err
}

// announceGap is the least time between two announcements: the api's
// watchers look at most every catchup.DefaultMinGap anyway, and a NOTIFY
// per batch was a transaction per batch more for Postgres.
const announceGap = 10 * time.Millisecond

// announcer tells the api's min_position waits, on dispatch.AppliedChannel,
// that batches committed: off the batches' path, one NOTIFY for all the
// batches that committed within announceGap.
func (c *Consumer) announcer(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.announce:
		}
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if err := dispatch.Notify(actx, c.pool, c.sub.Name()); err != nil && ctx.Err() == nil {
			// Only a hint: the waits look again on their own.
			c.logger.Debug("announce failed", "error", err)
		}
		cancel()
		if !backoff.Sleep(ctx, announceGap) {
			return
		}
	}
}

// observe updates the position and lag gauges after a batch committed.
func (c *Consumer) observe(ctx context.Context, top int64) {
	for {
		cur := c.applied.Load()
		if top <= cur || c.applied.CompareAndSwap(cur, top) {
			break
		}
	}
	applied := c.applied.Load()
	c.metrics.position.Set(float64(applied))
	if head, ok := c.head.get(ctx, c.pool); ok {
		c.metrics.lag.Set(float64(max(0, head-applied)))
	}
}

// headCache is the highest committed position, read at most once a second.
// The streams of a consumer share it.
type headCache struct {
	mu  sync.Mutex
	at  time.Time
	pos int64
}

func (h *headCache) get(ctx context.Context, pool *pgxpool.Pool) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if time.Since(h.at) < time.Second {
		return h.pos, true
	}
	qctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	pos, err := dbsqlc.New().EventMaxPosition(qctx, pool)
	if err != nil {
		return 0, false
	}
	h.at, h.pos = time.Now(), pos
	return pos, true
}
