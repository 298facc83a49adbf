// Package heal hands a remote subscriber, from the event store, the events
// of its types that committed a while ago (Config.After) and that it has
// not applied: what a purged queue, a message the broker lost or kept from
// its consumers, or a dead-letter queue lost with a node never brought. It
// is the redrive an operator would run, run by the subscriber's worker
// every few seconds on what is missing only. Events go through the
// subscriber's inbox, so one applied meanwhile by a delivery is a no-op,
// and what healing applied is counted exactly (heals, in the transaction
// that applied it).
//
// An event whose own application failed (a dead letter with reason
// failed) is not healed: it waits for the operator. A dead letter of a
// forged or altered copy under a real event's id (unknown_event,
// mismatch) does not keep the real event from being healed.
//
// The event store has no commit times, so a pass tells the age of what
// it finds from its own history. Each pass reads, in one statement
// (HealScan), the highest committed position and its snapshot's xmin and
// xmax. Events take their transaction id before their position, so once a
// later snapshot's xmin has reached a pass's xmax, every position up to
// that pass's head has committed or rolled back: those positions are
// settled as of the later pass. A missing event at or below what was
// settled After ago committed at least After ago, and is healed.
//
// Each pass looks only above a cursor below which every event of the
// subscriber's types is applied (or dead-lettered failed), and only at
// what is due: it moves up to what it looked at and below the lowest
// missing event, so a position a transaction still holds is never passed
// over. The inbox watermark (internal/ops/inboxprune) is a floor for it.
// With nothing missing a pass is that one statement, reading each event
// once, After after its commit: none in a worker's first After. A pass
// reads at most Config.ScanSpan positions beyond those that became due
// since the pass before, so a worker started far above its floor (the
// watermark moves every few minutes) walks up to what is due in steps
// rather than in one long statement beside the commands.
package heal

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/consumer"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/backoff"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// DefaultAfter is Config.After's default.
const DefaultAfter = 30 * time.Second

// DefaultInterval is Config.Interval's default.
const DefaultInterval = 2 * time.Second

// DefaultMaxPerPass is Config.MaxPerPass's default.
const DefaultMaxPerPass = 1000

// DefaultScanSpan is Config.ScanSpan's default.
const DefaultScanSpan = 20_000

// Config tunes a Healer. Zero fields take the defaults documented on them.
type Config struct {
	// After is how long ago an event must have committed for a subscriber
	// that has not applied it to be handed it from the store (default
	// DefaultAfter): room for the relay and the queue to bring it.
	After time.Duration
	// Interval is the time between two passes (default DefaultInterval).
	Interval time.Duration
	// MaxPerPass bounds how many missing events one pass finds, and so
	// heals (default DefaultMaxPerPass); the next pass takes the next ones.
	MaxPerPass int
	// ScanSpan bounds how many positions one pass reads beyond those that
	// became due since the pass before (default DefaultScanSpan): a
	// catching-up pass stays a bounded statement.
	ScanSpan int
	// TxTimeout bounds one heal's transaction (default 30s).
	TxTimeout time.Duration
	// Hold, when set, holds healing back while it reports true (the
	// consumer is working through a backlog of its queue, which may still
	// bring what is missing): a worker started after a long stop then
	// applies its queue rather than healing what the queue holds.
	Hold func() bool
}

func (c *Config) setDefaults() error {
	if c.After == 0 {
		c.After = DefaultAfter
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.MaxPerPass == 0 {
		c.MaxPerPass = DefaultMaxPerPass
	}
	if c.ScanSpan == 0 {
		c.ScanSpan = DefaultScanSpan
	}
	if c.TxTimeout == 0 {
		c.TxTimeout = 30 * time.Second
	}
	if c.After < 0 || c.Interval < 0 || c.MaxPerPass < 1 || c.ScanSpan < 1 || c.TxTimeout < 0 {
		return fmt.Errorf("heal: invalid config (after %s, interval %s, max per pass %d, scan span %d)", c.After, c.Interval, c.MaxPerPass, c.ScanSpan)
	}
	return nil
}

// Healer heals one subscriber. Its passes run one at a time (Run, or Pass
// called from one goroutine).
type Healer struct {
	pool    *pgxpool.Pool
	sub     dispatch.Subscriber
	cfg     Config
	logger  *slog.Logger
	applied prometheus.Counter
	now     func() time.Time

	cursor   int64      // every event of sub's types at or below it is applied (or failed)
	lastDue  int64      // the due bound of the last pass that had one
	settled  int64      // every position at or below it has committed or rolled back
	unsettle []snapshot // passes whose head is not settled yet
	history  []mark     // what was settled when, oldest first
}

// maxUnsettled bounds the passes kept while a transaction stays open.
const maxUnsettled = 64

// snapshot is what one pass saw: the head and the snapshot's xmax.
type snapshot struct{ head, xmax int64 }

// mark is what was settled at a pass's time.
type mark struct {
	at      time.Time
	settled int64
}

// New makes a healer of sub. Its counter registers on reg (nil: none);
// healers of several subscribers may share one registry.
func New(pool *pgxpool.Pool, sub dispatch.Subscriber, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Healer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	applied, err := appliedCounter(reg)
	if err != nil {
		return nil, err
	}
	return &Healer{
		pool: pool, sub: sub, cfg: cfg, logger: logger.With("subscriber", sub.Name()),
		// Born at 0, so that the first heal after a start is an increase.
		applied: applied.WithLabelValues(sub.Name()),
		now:     time.Now,
	}, nil
}

func appliedCounter(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "epoch_heal_applied_total",
		Help: "Events a remote subscriber had not applied this long after their commit (EPOCH_HEAL_AFTER) that healing handed it from the event store: messages the broker lost or kept.",
	}, []string{"subscriber"})
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("register heal metrics: %w", err)
	}
	return c, nil
}

// Run passes every Interval until ctx ends. A pass that fails is logged
// and the next one tries again (after a backoff while Postgres is away).
// It returns nil once ctx ends.
func (h *Healer) Run(ctx context.Context) error {
	h.logger.Info("healing from the event store", "heal_after", h.cfg.After.String(), "interval", h.cfg.Interval.String())
	again := backoff.New(h.cfg.Interval, max(h.cfg.Interval, backoff.DefaultMax))
	wait := h.cfg.Interval
	for {
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
		_, err := h.Pass(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			wait = again.Next()
			h.logger.Warn("heal pass failed", "error", err, "backoff", wait.String())
		default:
			again.Reset()
			wait = h.cfg.Interval
		}
	}
}

// Result is what one pass did.
type Result struct {
	// Missing is how many events of the subscriber's types above the
	// cursor that committed more than After ago it found not applied (at
	// most MaxPerPass): the ones it heals.
	Missing int
	// Healed is how many of those it applied (the others were applied
	// meanwhile, or failed and were dead-lettered).
	Healed int
	// Cursor is the cursor after the pass.
	Cursor int64
}

// Pass looks once for what the subscriber is missing and heals what is due.
func (h *Healer) Pass(ctx context.Context) (Result, error) {
	now := h.now()
	// What was settled After ago, from the earlier passes' marks (this
	// pass's own is not After old).
	due := h.dueBound(now)
	span := h.span(due)
	// Held back, the pass heals nothing, so it does not look for what is
	// missing either (through a backlog, most of what is due is): it only
	// keeps the snapshots that settle positions.
	held := h.cfg.Hold != nil && h.cfg.Hold()
	if held {
		due = 0
	}
	row, err := dbsqlc.New().HealScan(ctx, h.pool, &dbsqlc.HealScanParams{
		After: h.cursor, Subscriber: h.sub.Name(), Types: h.sub.EventTypes(),
		Due: due, Span: span, MaxCount: int32(h.cfg.MaxPerPass),
	})
	if err != nil {
		return Result{Cursor: h.cursor}, fmt.Errorf("heal %s: scan: %w", h.sub.Name(), err)
	}
	h.cursor = max(h.cursor, row.Floor)
	h.unsettle = append(h.unsettle, snapshot{head: row.Head, xmax: row.SnapshotXmax})
	if len(h.unsettle) > maxUnsettled {
		// A transaction open for long: the oldest snapshot goes. The next
		// has a head as high, so what the oldest would have settled is
		// settled with the next one: later, never too early.
		h.unsettle = slices.Delete(h.unsettle, 0, 1)
	}
	h.unsettle = slices.DeleteFunc(h.unsettle, func(s snapshot) bool {
		if s.xmax <= row.SnapshotXmin {
			h.settled = max(h.settled, s.head)
			return true
		}
		return false
	})
	// Stamped after the scan: what it settled had committed by then.
	h.history = append(h.history, mark{at: h.now(), settled: h.settled})
	if held {
		return Result{Cursor: h.cursor}, nil
	}

	// Everything the scan read is applied, up to the first missing event.
	through := min(due, row.Floor+span)
	if len(row.Missing) > 0 {
		through = min(through, row.Missing[0]-1)
	}
	h.cursor = max(h.cursor, through)

	res := Result{Missing: len(row.Missing), Cursor: h.cursor}
	if len(row.Missing) == 0 {
		return res, nil
	}
	res.Healed, err = h.heal(ctx, row.Missing)
	if res.Healed > 0 {
		h.applied.Add(float64(res.Healed))
		h.logger.Warn("healed events the broker did not deliver, from the event store",
			"events", res.Healed, "missing", res.Missing, "first_position", row.Missing[0], "last_position", row.Missing[len(row.Missing)-1],
			"heal_after", h.cfg.After.String())
	}
	return res, err
}

// span is how many positions above its floor a pass reads: ScanSpan, and
// as many more as became due since the last pass, so that a pass keeps up
// with what becomes due however fast events commit, while one that
// catches up (the first after a start, far above the floor) stays bounded.
func (h *Healer) span(due int64) int64 {
	if h.lastDue == 0 {
		h.lastDue = due
	}
	grown := max(0, due-h.lastDue)
	h.lastDue = max(h.lastDue, due)
	return int64(h.cfg.ScanSpan) + grown
}

// dueBound is what was settled After ago: every position at or below it
// committed (or rolled back) at least After before now. Marks older than
// the one it reads are dropped.
func (h *Healer) dueBound(now time.Time) int64 {
	i := -1
	for j, m := range h.history {
		if now.Sub(m.at) >= h.cfg.After {
			i = j
		}
	}
	if i < 0 {
		return 0
	}
	h.history = h.history[i:]
	return h.history[0].settled
}

// heal applies the stored events at positions, in one transaction; when
// that fails for another reason than Postgres being away, each alone, and
// one that fails alone is kept as a dead letter with reason failed, for
// the operator. It returns how many were new to the subscriber.
func (h *Healer) heal(ctx context.Context, positions []int64) (int, error) {
	events, err := h.read(ctx, positions)
	if err != nil {
		return 0, err
	}
	n, err := h.apply(ctx, events)
	if err == nil || ctx.Err() != nil || !failure(err) {
		return n, err
	}
	healed := 0
	for _, e := range events {
		n, err := h.apply(ctx, []eventstore.Event{e})
		healed += n
		if err == nil {
			continue
		}
		if ctx.Err() != nil || !failure(err) {
			return healed, err
		}
		h.logger.Error("healing an event failed, dead-lettering it for the operator",
			"event_id", e.ID, "outbox_position", e.Position, "event_type", e.Type, "stream_id", e.StreamID, "error", err)
		if err := h.deadLetter(ctx, e); err != nil {
			return healed, err
		}
	}
	return healed, nil
}

// failure reports whether err is the subscriber's own failure to apply,
// rather than Postgres being away or a conflict worth trying again.
func failure(err error) bool {
	return !database.IsUnavailable(err) && !database.IsTransient(err)
}

func (h *Healer) read(ctx context.Context, positions []int64) ([]eventstore.Event, error) {
	rows, err := dbsqlc.New().HealEvents(ctx, h.pool, positions)
	if err != nil {
		return nil, fmt.Errorf("heal %s: read events: %w", h.sub.Name(), err)
	}
	events := make([]eventstore.Event, len(rows))
	for i, r := range rows {
		events[i] = eventstore.Event{ID: r.ID, StreamType: r.StreamType, StreamID: r.StreamID, Version: r.Version,
			Type: r.Type, Data: r.Data, OccurredAt: r.OccurredAt, Position: r.Position}
	}
	return events, nil
}

// apply hands events to the subscriber through its inbox in one
// transaction, with their count, and announces the commit to the api's
// min_position waits.
func (h *Healer) apply(ctx context.Context, events []eventstore.Event) (int, error) {
	txCtx, cancel := context.WithTimeout(ctx, h.cfg.TxTimeout)
	defer cancel()
	var fresh int
	err := database.InTx(txCtx, h.pool, func(tx *database.Tx) (err error) {
		if fresh, err = dispatch.DeliverCount(txCtx, tx, h.sub, events); err != nil || fresh == 0 {
			return err
		}
		dbsqlc.New().HealCount(txCtx, tx, []*dbsqlc.HealCountParams{{
			Subscriber: h.sub.Name(), Healed: int64(fresh), LastPosition: events[len(events)-1].Position,
		}})
		return dispatch.Announce(txCtx, tx, h.sub.Name())
	})
	if err != nil {
		return 0, fmt.Errorf("heal %s: %w", h.sub.Name(), err)
	}
	return fresh, nil
}

// deadLetter keeps e as a dead letter with reason failed, as the consumer
// keeps an event that fails on its last delivery: listed, replayable, and
// left out of later passes.
func (h *Healer) deadLetter(ctx context.Context, e eventstore.Event) error {
	body, err := outbox.MessageBody(e)
	if err != nil {
		return fmt.Errorf("heal %s: %w", h.sub.Name(), err)
	}
	_, err = dbsqlc.New().DeadLetterRecord(ctx, h.pool, &dbsqlc.DeadLetterRecordParams{
		Subscriber: h.sub.Name(), EventIds: []string{e.ID.String()}, Positions: []int64{e.Position},
		Reasons: []string{consumer.ReasonFailed}, Bodies: [][]byte{body},
	})
	if err != nil {
		return fmt.Errorf("heal %s: dead-letter %s: %w", h.sub.Name(), e.ID, err)
	}
	return nil
}
