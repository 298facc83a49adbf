// Package opsmetrics is the worker's view of the event flow's health on
// /metrics, whatever roles the worker runs: the outbox backlog (so it is
// watched while no relay runs), how far and how long each subscriber is
// behind the event store (so it is watched while nothing consumes for it,
// or while its consumer is stuck), the dead letters each subscriber keeps,
// and the depth of each dead-letter queue. It reads them when scraped, within a
// short timeout; what it could not read in time is left out of that scrape
// rather than failing it.
package opsmetrics

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/opstatus"
)

// DefaultTimeout bounds one scrape's reads.
const DefaultTimeout = 2 * time.Second

// Config is what the collector reads.
type Config struct {
	// DB is the worker's database; required.
	DB *pgxpool.Pool
	// Subscribers are the remote subscribers reported, whatever this
	// worker consumes.
	Subscribers []dispatch.Subscriber
	// AMQPURL is the broker whose catacloud.<name>.dead queues are
	// measured, by passive declares: they need no permission on the queue,
	// so any of the workers' users can make them. Empty: not measured.
	AMQPURL string
	// Timeout bounds a scrape's reads. Default DefaultTimeout.
	Timeout time.Duration
	Logger  *slog.Logger
}

var (
	pendingDesc = prometheus.NewDesc("epoch_outbox_pending",
		"Events in the outbox waiting to be relayed.", nil, nil)
	oldestAgeDesc = prometheus.NewDesc("epoch_outbox_oldest_pending_age_seconds",
		"Age of the oldest outbox row waiting to be relayed (0: none waits).", nil, nil)
	deadLettersDesc = prometheus.NewDesc("epoch_dead_letters",
		"Dead letters a subscriber keeps in dead_letters, until an operator replays or discards them.", []string{"subscriber"}, nil)
	lagPositionsDesc = prometheus.NewDesc("epoch_subscriber_lag_positions",
		"Positions from the last a subscriber applied to the newest committed event of its types, read from the event store: it shows whether or not anything consumes for the subscriber.", []string{"subscriber"}, nil)
	lagSecondsDesc = prometheus.NewDesc("epoch_subscriber_lag_seconds",
		"Age (by occurred_at) of the oldest committed event of a subscriber's types past the last it applied, read from the event store: how long it has been behind; 0 when it is not.", []string{"subscriber"}, nil)
	deadQueueDesc = prometheus.NewDesc("epoch_dead_letter_queue_messages",
		"Messages ready in a subscriber's dead-letter queue catacloud.<name>.dead, the broker's backstop past the delivery limit.", []string{"subscriber"}, nil)
)

// Collector reads the series at scrape time. Close it when done.
type Collector struct {
	cfg    Config
	queues *queueDepths
}

// New returns the collector; register it on the worker's registry.
func New(cfg Config) *Collector {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	c := &Collector{cfg: cfg}
	if cfg.AMQPURL != "" {
		c.queues = &queueDepths{url: cfg.AMQPURL}
	}
	return c
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- pendingDesc
	ch <- oldestAgeDesc
	ch <- deadLettersDesc
	ch <- lagPositionsDesc
	ch <- lagSecondsDesc
	ch <- deadQueueDesc
}

// Collect implements prometheus.Collector: Postgres and the broker are
// asked at once, each within the timeout.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	var (
		wg     sync.WaitGroup
		depths []*int64
	)
	if c.queues != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dead := make([]string, len(c.cfg.Subscribers))
			for i, sub := range c.cfg.Subscribers {
				dead[i] = broker.DeadQueueName(sub.Name())
			}
			var err error
			if depths, err = c.queues.read(ctx, dead); err != nil {
				c.cfg.Logger.Warn("metrics: dead-letter queue depths unknown", "error", err)
			}
		}()
	}
	st, err := opstatus.Read(ctx, c.cfg.DB, c.cfg.Subscribers)
	if err != nil {
		c.cfg.Logger.Warn("metrics: outbox and dead letters unknown", "error", err)
	} else {
		ch <- prometheus.MustNewConstMetric(pendingDesc, prometheus.GaugeValue, float64(st.Outbox.Pending))
		ch <- prometheus.MustNewConstMetric(oldestAgeDesc, prometheus.GaugeValue, st.Outbox.OldestAgeSeconds)
		for _, s := range st.Subscribers {
			ch <- prometheus.MustNewConstMetric(deadLettersDesc, prometheus.GaugeValue, float64(s.DeadLetters), s.Name)
			ch <- prometheus.MustNewConstMetric(lagPositionsDesc, prometheus.GaugeValue, float64(s.LagPositions), s.Name)
			ch <- prometheus.MustNewConstMetric(lagSecondsDesc, prometheus.GaugeValue, s.LagSeconds, s.Name)
		}
	}
	wg.Wait()
	for i, n := range depths {
		if n != nil {
			ch <- prometheus.MustNewConstMetric(deadQueueDesc, prometheus.GaugeValue, float64(*n), c.cfg.Subscribers[i].Name())
		}
	}
}

// Close closes the broker connection, if one is open.
func (c *Collector) Close() {
	if c.queues != nil {
		c.queues.close()
	}
}

// queueDepths measures queues with passive declares on one connection of
// its own, dialed at the first scrape and again after it is lost.
type queueDepths struct {
	url  string
	mu   sync.Mutex // one scrape's declares at a time
	conn atomic.Pointer[amqp.Connection]
}

// read returns each queue's ready messages, nil for a queue that does not
// exist. A broker that does not answer before ctx ends loses the
// connection, which ends the declares still waiting on it.
func (q *queueDepths) read(ctx context.Context, queues []string) ([]*int64, error) {
	type result struct {
		depths []*int64
		err    error
	}
	done := make(chan result, 1)
	go func() {
		d, err := q.readNow(queues)
		done <- result{d, err}
	}()
	select {
	case r := <-done:
		return r.depths, r.err
	case <-ctx.Done():
		q.close()
		return nil, ctx.Err()
	}
}

func (q *queueDepths) readNow(queues []string) ([]*int64, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	conn := q.conn.Load()
	if conn == nil || conn.IsClosed() {
		var err error
		if conn, err = broker.Dial(q.url, "epoch-worker-metrics"); err != nil {
			return nil, err
		}
		q.conn.Store(conn)
	}
	out := make([]*int64, len(queues))
	var ch *amqp.Channel
	defer func() {
		if ch != nil {
			_ = ch.Close()
		}
	}()
	for i, name := range queues {
		if ch == nil {
			var err error
			if ch, err = conn.Channel(); err != nil {
				return nil, err
			}
		}
		info, err := ch.QueueDeclarePassive(name, true, false, false, false, nil)
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			// The broker closed the channel; the next queue gets another.
			ch = nil
			continue
		}
		if err != nil {
			return nil, err
		}
		n := int64(info.Messages)
		out[i] = &n
	}
	return out, nil
}

func (q *queueDepths) close() {
	if conn := q.conn.Swap(nil); conn != nil {
		_ = conn.Close()
	}
}
