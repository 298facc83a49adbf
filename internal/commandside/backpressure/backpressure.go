// Package backpressure holds commands back while the relay is behind: on
// a machine the api shares with the relay, the subscribers and RabbitMQ,
// commands at full speed take the CPU the relay needs, and the outbox
// grows for as long as they keep coming. While a working relay has more
// than MaxBacklog events waiting, the Gate lets only Concurrency commands
// run at once; the others wait their turn (they are slower, not refused).
//
// A relay that makes no progress at all (none running, or RabbitMQ away)
// is not waited for: holding commands back would not drain the outbox,
// only slow the API down while the relay is down.
package backpressure

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// DefaultMaxBacklog is Config.MaxBacklog's default.
const DefaultMaxBacklog = 500

// Config tunes a Gate. Zero fields take the defaults.
type Config struct {
	// MaxBacklog is how many events may wait in the outbox before commands
	// are held back (default DefaultMaxBacklog); they are let go again
	// below half of it.
	MaxBacklog int64
	// Concurrency is how many commands run at once while held back
	// (default 2).
	Concurrency int
	// Interval is how often the outbox is looked at (default 200ms).
	Interval time.Duration
	// ProgressWindow: the relay counts as working while the outbox's
	// oldest row was deleted within this long (default 5s).
	ProgressWindow time.Duration
}

func (c *Config) setDefaults() error {
	if c.MaxBacklog == 0 {
		c.MaxBacklog = DefaultMaxBacklog
	}
	if c.Concurrency == 0 {
		c.Concurrency = 2
	}
	if c.Interval == 0 {
		c.Interval = 200 * time.Millisecond
	}
	if c.ProgressWindow == 0 {
		c.ProgressWindow = 5 * time.Second
	}
	if c.MaxBacklog < 0 || c.Concurrency < 1 || c.Interval < 0 || c.ProgressWindow < 0 {
		return errors.New("backpressure: negative or zero setting")
	}
	return nil
}

// Gate admits commands (Enter). Run keeps its view of the outbox fresh.
type Gate struct {
	pool    *pgxpool.Pool
	cfg     Config
	logger  *slog.Logger
	held    atomic.Bool   // commands are held back now
	slots   chan struct{} // one per command running while held back
	holding prometheus.Gauge

	// Run's own view, not shared.
	oldest      int64
	oldestMoved time.Time
}

// New makes a Gate reading the outbox through pool. reg may be nil.
func New(pool *pgxpool.Pool, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Gate, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	g := &Gate{
		pool: pool, cfg: cfg, logger: logger, slots: make(chan struct{}, cfg.Concurrency),
		holding: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "epoch_backpressure_holding",
			Help: "1 while commands are held back because a working relay is behind (the outbox has more than the allowed backlog), else 0.",
		}),
	}
	if reg != nil {
		if err := reg.Register(g.holding); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Holding is the gauge that is 1 while commands are held back.
func (g *Gate) Holding() prometheus.Gauge { return g.holding }

// Enter waits until the command may run and returns what to call when it
// is done. A nil Gate admits everything.
func (g *Gate) Enter(ctx context.Context) (release func(), err error) {
	if g == nil || !g.held.Load() {
		return func() {}, nil
	}
	select {
	case g.slots <- struct{}{}:
		return func() { <-g.slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Run looks at the outbox every Interval until ctx ends. While it cannot
// (Postgres away), it lets commands through.
func (g *Gate) Run(ctx context.Context) {
	t := time.NewTicker(g.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		g.look(ctx)
	}
}

// maxRowsRead bounds the outbox rows a look sums: enough to tell any
// MaxBacklog worth having, cheap however large the backlog.
const maxRowsRead = 10000

func (g *Gate) look(ctx context.Context) {
	qctx, cancel := context.WithTimeout(ctx, g.cfg.Interval*5)
	defer cancel()
	head, err := dbsqlc.New().OutboxHead(qctx, g.pool, maxRowsRead)
	if err != nil {
		g.set(false, 0)
		return
	}
	now := time.Now()
	// The oldest row is gone (the oldest is now a later one, or none): a
	// relay deleted it. Rows appearing in an empty outbox, or a late
	// commit's row older than the oldest, are no sign of a relay.
	if head.Oldest != g.oldest {
		if g.oldest != 0 && (head.Oldest == 0 || head.Oldest > g.oldest) {
			g.oldestMoved = now
		}
		g.oldest = head.Oldest
	}
	working := now.Sub(g.oldestMoved) < g.cfg.ProgressWindow
	switch {
	case !working:
		g.set(false, head.Pending)
	case head.Pending > g.cfg.MaxBacklog:
		g.set(true, head.Pending)
	case head.Pending < g.cfg.MaxBacklog/2:
		g.set(false, head.Pending)
	}
}

func (g *Gate) set(held bool, pending int64) {
	if g.held.Swap(held) == held {
		return
	}
	if held {
		g.holding.Set(1)
		g.logger.Warn("backpressure: the relay is behind; commands are held back",
			"pending_events", pending, "max_backlog", g.cfg.MaxBacklog, "concurrency", g.cfg.Concurrency)
		return
	}
	g.holding.Set(0)
	g.logger.Info("backpressure: commands run freely again", "pending_events", pending)
}
