package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/backoff"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/platform/pglisten"
	"github.com/catacloud/epoch/internal/platform/tracing"
)

// relayLockKey is the first key of the relay's partition advisory locks
// (pg_try_advisory_xact_lock(relayLockKey, partition)); the two-integer
// form lives apart from single bigint advisory locks such as migrations'.
const relayLockKey int32 = 0x0e0c0b01

// Config tunes a Relay. Zero values take the defaults.
type Config struct {
	// BatchSize is about the most events one cycle publishes (default 500):
	// a cycle takes whole outbox rows, and at least one of each partition
	// it holds, however many events that row lists.
	BatchSize int
	// PollInterval is how long an idle relay waits when no NOTIFY wakes it
	// (default 1s).
	PollInterval time.Duration
	// PartitionShare is the most a cycle takes of the partitions that have
	// rows, as a fraction in (0, 1] (default 0.5), so several relays split
	// the work; a relay alone still drains all, cycle after cycle.
	PartitionShare float64
	// ConfirmTimeout bounds the wait for a batch's confirms (default 10s).
	ConfirmTimeout time.Duration
	// MonitorInterval is how often the open-transaction gauges are refreshed
	// (default 5s).
	MonitorInterval time.Duration
	// HeldBackAfter: when the relay relayed nothing for this long while a
	// transaction that wrote something has been open for as long (its
	// outbox rows, if any, are invisible until it ends), it logs that
	// transaction's pid and age (default 30s).
	HeldBackAfter time.Duration
	// MinBackoff and MaxBackoff bound the wait after a Postgres error, and
	// before a partition whose events were not all confirmed is tried
	// again: doubled after each failure in a row, with jitter (defaults
	// backoff.DefaultMin and backoff.DefaultMax).
	MinBackoff, MaxBackoff time.Duration
	// VacuumAfter: the relay vacuums the outbox after this many deleted
	// rows (default 20,000; negative: never, leaving it to autovacuum).
	VacuumAfter int64
	// AfterConfirm, when set, runs after a batch's confirms arrived and
	// before its rows are deleted: the fault-injection point for the tests
	// that kill a relay there. Nil in production.
	AfterConfirm func()
}

// Defaults of Config that a binary's configuration also names.
const (
	DefaultBatchSize      = 500
	DefaultPollInterval   = time.Second
	DefaultPartitionShare = 0.5
)

func (c *Config) setDefaults() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.PartitionShare == 0 {
		c.PartitionShare = DefaultPartitionShare
	}
	if c.VacuumAfter == 0 {
		c.VacuumAfter = 20000
	}
	def(&c.PollInterval, DefaultPollInterval)
	def(&c.ConfirmTimeout, 10*time.Second)
	def(&c.MonitorInterval, 5*time.Second)
	def(&c.HeldBackAfter, 30*time.Second)
	def(&c.MinBackoff, backoff.DefaultMin)
	def(&c.MaxBackoff, backoff.DefaultMax)
	switch {
	case c.BatchSize < 0 || c.BatchSize > math.MaxInt32:
		return fmt.Errorf("outbox relay: batch size %d out of range", c.BatchSize)
	case c.PartitionShare < 0 || c.PartitionShare > 1:
		return fmt.Errorf("outbox relay: partition share %v not in (0, 1]", c.PartitionShare)
	case c.PollInterval < 0 || c.ConfirmTimeout < 0 || c.MonitorInterval < 0 || c.HeldBackAfter < 0:
		return errors.New("outbox relay: negative duration")
	case c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff:
		return errors.New("outbox relay: backoff bounds out of order")
	}
	return nil
}

// Relay publishes the events of committed outbox rows to RabbitMQ and
// deletes a row only after the broker confirmed all of its events.
//
// Gap safety comes from deleting, not from a cursor: a row whose
// transaction commits after a later position is still there when it becomes
// visible, and a rolled-back row never exists. Per-stream order comes from
// partition ownership: a cycle holds transaction-scoped advisory locks on
// the partitions it publishes, so no other relay publishes their streams
// meanwhile, and a killed relay's locks go with its connection.
type Relay struct {
	pool    *pgxpool.Pool
	lanes   []*lane
	cfg     Config
	logger  *slog.Logger
	metrics *metrics
	holdOff *holdOff // partitions waiting after a failed publish

	lastProgress atomic.Int64  // unix nanos of the last cycle that relayed events
	unvacuumed   atomic.Int64  // rows deleted or trimmed since the last vacuum
	pokes        atomic.Uint32 // wake-ups handed out, to take turns among lanes
	lastHeldLog  time.Time     // monitor only: when it last logged an open transaction
	lastHeldPID  int32
}

// lane is one cycle loop with its own publisher (its own connection and
// confirm channel). A relay's lanes hold disjoint partitions at any time,
// like separate relays, so one lane publishes while another waits for its
// confirms.
type lane struct {
	pub  *broker.Publisher
	wake chan struct{}
	next int16 // round robin: the partition the next cycle tries first
}

// NewRelay makes a relay with one lane per publisher. Run runs the
// publishers as well: do not run them elsewhere. reg may be nil (no metrics
// registered).
func NewRelay(pool *pgxpool.Pool, pubs []*broker.Publisher, cfg Config, logger *slog.Logger, reg prometheus.Registerer) (*Relay, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if len(pubs) == 0 {
		return nil, errors.New("outbox relay: no publisher")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	r := &Relay{pool: pool, cfg: cfg, logger: logger, metrics: m, holdOff: newHoldOff(cfg.MinBackoff, cfg.MaxBackoff)}
	for i, pub := range pubs {
		// Lanes start apart, so they do not all try the same partitions.
		r.lanes = append(r.lanes, &lane{pub: pub, wake: make(chan struct{}, 1), next: int16(i * Partitions / len(pubs))})
	}
	r.lastProgress.Store(time.Now().UnixNano())
	return r, nil
}

// Run relays until ctx ends, then returns nil. An in-flight batch is
// finished if its confirms arrive in time, or abandoned: unconfirmed rows
// simply stay for the next run.
func (r *Relay) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	spawn := func(f func()) {
		wg.Add(1)
		go func() { defer wg.Done(); f() }()
	}
	spawn(func() { r.listen(ctx) })
	spawn(func() { r.monitor(ctx) })
	spawn(func() { r.vacuum(ctx) })
	for _, l := range r.lanes {
		spawn(func() { _ = l.pub.Run(ctx) })
		spawn(func() { r.runLane(ctx, l) })
	}
	<-ctx.Done()
	wg.Wait()
	return nil
}

// runLane cycles until ctx ends: straight on while cycles move rows,
// otherwise waiting for a NOTIFY or the poll interval.
func (r *Relay) runLane(ctx context.Context, l *lane) {
	again := backoff.New(r.cfg.MinBackoff, r.cfg.MaxBackoff)
	// When the lane's cycles began failing because Postgres went away
	// (zero: they do not).
	var outageSince time.Time
	for {
		if ctx.Err() != nil {
			return
		}
		if !l.pub.Connected() {
			// Nothing can be confirmed: do not hold partitions meanwhile.
			waitCtx, cancelWait := context.WithTimeout(ctx, r.cfg.PollInterval)
			_ = l.pub.WaitConnected(waitCtx)
			cancelWait()
			continue
		}
		res, err := r.cycle(ctx, l)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			wait := again.Next()
			outageSince = r.logCycleFailed(ctx, err, wait, outageSince)
			backoff.Sleep(ctx, wait)
			continue
		}
		again.Reset()
		if !outageSince.IsZero() {
			r.logger.InfoContext(ctx, "outbox relay: database back", "unavailable_for", time.Since(outageSince).Round(time.Millisecond).String())
			outageSince = time.Time{}
		}
		if res.relayed > 0 {
			continue // drain without waiting; failing partitions are held off
		}
		// Nothing moved: the rows left are failing (held off), or other
		// lanes and relays hold their partitions. Wait rather than spin.
		select {
		case <-ctx.Done():
		case <-l.wake:
		case <-time.After(r.idleWait()):
		}
	}
}

// logCycleFailed logs a failed cycle and returns when the outage it is
// part of began (zero: it is none). A cycle that failed because Postgres
// went away (a primary lost, a failover under way) is a warning with its
// cause, once per outage, then a debug line per cycle until a cycle
// succeeds, which logs how long it lasted: an outage is the database's
// to fix, and the relay picks up by itself. Any other failure is an
// error, every time.
func (r *Relay) logCycleFailed(ctx context.Context, err error, wait time.Duration, outageSince time.Time) time.Time {
	if !database.IsUnavailable(err) {
		r.logger.ErrorContext(ctx, "outbox relay: cycle failed", "error", err, "retry_in", wait.String())
		return outageSince
	}
	if outageSince.IsZero() {
		r.logger.WarnContext(ctx, "outbox relay: database unavailable, retrying until it is back", "error", err, "retry_in", wait.String())
		return time.Now()
	}
	r.logger.DebugContext(ctx, "outbox relay: database still unavailable", "error", err, "retry_in", wait.String())
	return outageSince
}

// idleWait is how long a lane that moved nothing waits when no NOTIFY
// wakes it: the poll interval, or less when a held-off partition may be
// tried again before that.
func (r *Relay) idleWait() time.Duration {
	now := time.Now()
	wait := r.cfg.PollInterval
	if at, ok := r.holdOff.next(now); ok {
		wait = min(wait, at.Sub(now))
	}
	return wait
}

type cycleResult struct {
	relayed int // events confirmed and taken off the outbox
}

// cycle locks a share of the partitions that have rows, publishes their
// oldest rows and deletes the confirmed ones, in one transaction of two
// round trips: BEGIN with the locks and the rows; the delete with COMMIT.
func (r *Relay) cycle(ctx context.Context, l *lane) (cycleResult, error) {
	q := dbsqlc.New()
	var res cycleResult
	// The transaction must outlive a stop signal long enough to delete what
	// the broker already confirmed; publishing itself stops with ctx.
	txCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.cfg.ConfirmTimeout+30*time.Second)
	defer cancel()
	began := time.Now()
	phaseDone := func(phase string) {
		now := time.Now()
		r.metrics.phase.WithLabelValues(phase).Observe(now.Sub(began).Seconds())
		began = now
	}
	claimed := false
	var settled int64 // outbox rows deleted or trimmed
	err := database.InTx(txCtx, r.pool, func(tx *database.Tx) error {
		// BEGIN, the plan setting (OutboxPreferIndexes), the locks and the
		// rows of the locked partitions: queued, then read, one round trip.
		q.OutboxPreferIndexes(txCtx, tx, []string{"off"})
		lock := q.OutboxPartitionsLock(txCtx, tx, []*dbsqlc.OutboxPartitionsLockParams{{
			StartAt: int32(l.next), PartitionCount: Partitions, LockKey: relayLockKey, Share: r.cfg.PartitionShare,
			Skip: r.holdOff.held(time.Now()),
		}})
		claim := q.OutboxClaim(txCtx, tx, []*dbsqlc.OutboxClaimParams{{LockKey: relayLockKey, BatchSize: int32(r.cfg.BatchSize)}})
		locked, err := database.Many(lock)
		if err != nil {
			return fmt.Errorf("lock partitions: %w", err)
		}
		rows, err := database.Many(claim)
		if err != nil {
			return fmt.Errorf("read the locked partitions' rows: %w", err)
		}
		phaseDone(cyclePhaseClaim)
		r.observeClaimWait(rows)
		if len(locked) == 0 {
			return nil
		}
		l.next = (locked[len(locked)-1] + 1) % Partitions
		claimed = true
		done, failed := r.publish(ctx, l.pub, rows)
		phaseDone(cyclePhasePublish)
		r.holdOff.record(time.Now(), locked, failed)
		if r.cfg.AfterConfirm != nil && len(done) > 0 {
			r.cfg.AfterConfirm()
		}
		if len(done) == 0 {
			return nil
		}
		// Deleted and trimmed with the COMMIT, in one round trip. The rows
		// were claimed under the partitions' locks, so each is there to
		// delete or trim.
		finished, partial := settle(rows, done)
		if len(finished) > 0 {
			q.OutboxDelete(txCtx, tx, [][]int64{finished})
		}
		if len(partial.RowPositions) > 0 {
			q.OutboxKeepUnconfirmed(txCtx, tx, []*dbsqlc.OutboxKeepUnconfirmedParams{partial})
		}
		settled = int64(len(finished) + len(partial.RowPositions))
		res.relayed = len(done)
		return nil
	})
	if err != nil {
		return cycleResult{}, err
	}
	r.unvacuumed.Add(settled)
	if claimed {
		phaseDone(cyclePhaseSettle)
	}
	if res.relayed > 0 {
		r.lastProgress.Store(time.Now().UnixNano())
	}
	return res, nil
}

// observeClaimWait records how long each claimed outbox row waited since
// its insert (rows holds one entry per event; a row's entries are
// adjacent, in position order).
func (r *Relay) observeClaimWait(rows []*dbsqlc.OutboxClaimRow) {
	now := time.Now()
	for i, row := range rows {
		if i == 0 || row.RowPosition != rows[i-1].RowPosition {
			r.metrics.claimWait.Observe(now.Sub(row.CreatedAt).Seconds())
		}
	}
}

// settle sorts the claimed outbox rows by what publish managed: finished
// rows had every event done; a partial row's first event not done is where
// it resumes (its key moves there). The rest stay as they are.
func settle(claimed []*dbsqlc.OutboxClaimRow, done []int64) (finished []int64, partial *dbsqlc.OutboxKeepUnconfirmedParams) {
	isDone := make(map[int64]bool, len(done))
	for _, p := range done {
		isDone[p] = true
	}
	type tally struct {
		events, done int
		resumeAt     int64 // the row's first event not done; 0: none yet
	}
	rows := make(map[int64]*tally)
	var order []int64
	for _, c := range claimed { // in position order
		t := rows[c.RowPosition]
		if t == nil {
			t = &tally{}
			rows[c.RowPosition] = t
			order = append(order, c.RowPosition)
		}
		t.events++
		switch {
		case isDone[c.Position]:
			t.done++
		case t.resumeAt == 0:
			t.resumeAt = c.Position
		}
	}
	partial = &dbsqlc.OutboxKeepUnconfirmedParams{}
	for _, key := range order {
		switch t := rows[key]; {
		case t.done == t.events:
			finished = append(finished, key)
		case t.resumeAt > key:
			partial.RowPositions = append(partial.RowPositions, key)
			partial.FromPositions = append(partial.FromPositions, t.resumeAt)
		}
	}
	return finished, partial
}

// publish sends rows (in position order) and returns the positions that may
// be deleted: confirmed, and no earlier row of the same stream failed, so a
// stream's later events are never relayed past a missing one for good. It
// also returns the partitions of the events that were not confirmed (or
// could not be encoded), to be held off before they are tried again.
func (r *Relay) publish(ctx context.Context, pub *broker.Publisher, rows []*dbsqlc.OutboxClaimRow) (done []int64, failedParts map[int16]bool) {
	msgs := make([]broker.Message, 0, len(rows))
	sent := make([]*dbsqlc.OutboxClaimRow, 0, len(rows))
	blocked := make(map[uuid.UUID]bool)
	failedParts = make(map[int16]bool)
	for _, row := range rows {
		m, err := Message(eventstore.Event{
			ID: row.ID, StreamType: row.StreamType, StreamID: row.StreamID, Version: row.Version,
			Type: row.Type, Data: row.Data, OccurredAt: row.OccurredAt, Position: row.Position,
		})
		if err != nil {
			r.logger.ErrorContext(ctx, "outbox relay: cannot encode event", "error", err,
				"outbox_position", row.Position, "stream_id", row.StreamID, "event_type", row.Type)
			r.metrics.failed.Inc()
			blocked[row.StreamID] = true
			failedParts[row.Partition] = true
			continue
		}
		tc := tracing.Context{Traceparent: row.Traceparent.String, Tracestate: row.Tracestate.String}
		m.Publishing.Headers = tc.SetHeaders(m.Publishing.Headers)
		msgs = append(msgs, m)
		sent = append(sent, row)
	}
	if len(msgs) == 0 {
		return nil, failedParts
	}
	spans := sendSpans(ctx, sent, msgs)
	errs := pub.Publish(ctx, broker.Exchange, msgs, r.cfg.ConfirmTimeout)
	for i, span := range spans {
		tracing.End(span, errs[i])
	}
	r.metrics.published.Add(float64(countSent(errs)))

	done = make([]int64, 0, len(sent))
	failed := 0
	for i, row := range sent {
		if errs[i] != nil {
			failed++
			failedParts[row.Partition] = true
			if failed == 1 || errors.Is(errs[i], broker.ErrReturned) {
				r.logger.WarnContext(ctx, "outbox relay: message not confirmed; its row stays", "error", errs[i],
					"outbox_position", row.Position, "stream_id", row.StreamID, "event_type", row.Type)
			}
			blocked[row.StreamID] = true
			continue
		}
		r.metrics.confirmed.Inc()
		if blocked[row.StreamID] {
			continue
		}
		done = append(done, row.Position)
	}
	r.metrics.failed.Add(float64(failed))
	if failed > 0 {
		r.logger.WarnContext(ctx, "outbox relay: batch partly failed", "failed", failed, "published", len(msgs))
	}
	return done, failedParts
}

// sendSpans starts the send span of each message whose row kept a trace
// context (nil for the others): on the command's trace, a child of the
// request that wrote the row and linked to it, from the publish to the
// broker's confirm. Nil when this process exports no traces.
func sendSpans(ctx context.Context, rows []*dbsqlc.OutboxClaimRow, msgs []broker.Message) []trace.Span {
	if !tracing.Enabled() {
		return nil
	}
	spans := make([]trace.Span, len(rows))
	at := trace.WithTimestamp(time.Now())
	for i, row := range rows {
		if !row.Traceparent.Valid {
			continue
		}
		written, ok := tracing.Context{Traceparent: row.Traceparent.String, Tracestate: row.Tracestate.String}.SpanContext()
		if !ok {
			continue
		}
		_, spans[i] = tracing.Tracer().Start(trace.ContextWithRemoteSpanContext(ctx, written), "publish "+broker.Exchange,
			trace.WithSpanKind(trace.SpanKindProducer), at,
			trace.WithLinks(trace.Link{SpanContext: written}),
			trace.WithAttributes(
				semconv.MessagingSystemRabbitMQ,
				semconv.MessagingOperationTypeSend,
				semconv.MessagingOperationName("publish"),
				semconv.MessagingDestinationName(broker.Exchange),
				semconv.MessagingRabbitMQDestinationRoutingKey(msgs[i].RoutingKey),
				semconv.MessagingMessageID(msgs[i].Publishing.MessageId),
				tracing.EventPosition(row.Position),
			))
	}
	return spans
}

// countSent is how many of a batch's messages reached the broker: all but
// those the publisher had no session for (it drops one after a chunk is
// nacked or unconfirmed, and sends the rest of the batch nowhere).
func countSent(errs []error) int {
	n := 0
	for _, err := range errs {
		if !errors.Is(err, broker.ErrNotConnected) {
			n++
		}
	}
	return n
}

// listen turns NOTIFYs on NotifyChannel into wake-ups, on a connection of
// its own. It wakes the relay after every (re)connect too, since hints sent
// meanwhile are lost.
func (r *Relay) listen(ctx context.Context) {
	_ = pglisten.Run(ctx, pglisten.Config{
		Pool:       r.pool,
		Channels:   []string{NotifyChannel},
		Logger:     r.logger.With("role", "outbox relay"),
		OnNotify:   func(string, string) { r.poke() },
		OnConnect:  r.poke,
		MinBackoff: r.cfg.MinBackoff,
		MaxBackoff: r.cfg.MaxBackoff,
	})
}

// poke wakes one lane that has no wake-up pending yet, taking turns. One is
// enough: a lane that finds work goes straight on to its next cycle, and
// waking every lane for each commit would have them race for the same
// partitions, all but one for nothing.
func (r *Relay) poke() {
	start := int(r.pokes.Add(1))
	for i := range r.lanes {
		l := r.lanes[(start+i)%len(r.lanes)]
		select {
		case l.wake <- struct{}{}:
			return
		default:
		}
	}
}

// vacuum keeps the outbox free of the dead rows the relay leaves behind:
// checked every second, a VACUUM once VacuumAfter rows were deleted.
func (r *Relay) vacuum(ctx context.Context) {
	if r.cfg.VacuumAfter < 0 {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := r.unvacuumed.Load()
		if n < r.cfg.VacuumAfter {
			continue
		}
		if err := dbsqlc.New().OutboxVacuum(ctx, r.pool); err != nil {
			if ctx.Err() == nil {
				r.logger.WarnContext(ctx, "outbox relay: vacuum failed", "error", err)
			}
			continue
		}
		r.unvacuumed.Add(-n)
		r.logger.DebugContext(ctx, "outbox relay: vacuumed the outbox", "deleted_rows", n)
	}
}

// monitor refreshes the open-transaction gauges and says which open
// transaction may hold the relay back.
func (r *Relay) monitor(ctx context.Context) {
	t := time.NewTicker(r.cfg.MonitorInterval)
	defer t.Stop()
	for {
		r.observe(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (r *Relay) observe(ctx context.Context) {
	pid, age, ok, err := OldestOpenTransaction(ctx, r.pool)
	if err != nil {
		if ctx.Err() == nil {
			r.logger.WarnContext(ctx, "outbox relay: read open transactions", "error", err)
		}
		return
	}
	if !ok {
		r.metrics.openTxPID.Set(0)
		r.metrics.openTxAge.Set(0)
		return
	}
	r.metrics.openTxPID.Set(float64(pid))
	r.metrics.openTxAge.Set(age.Seconds())
	// Logged once per transaction, then again every HeldBackAfter while it
	// stays open and the relay has nothing else to do.
	idle := time.Since(time.Unix(0, r.lastProgress.Load()))
	if idle >= r.cfg.HeldBackAfter && age >= r.cfg.HeldBackAfter &&
		(pid != r.lastHeldPID || time.Since(r.lastHeldLog) >= r.cfg.HeldBackAfter) {
		r.lastHeldPID, r.lastHeldLog = pid, time.Now()
		// The backlog is read only for the log line, which is rare.
		pending, _, err := Backlog(ctx, r.pool)
		if err != nil && ctx.Err() == nil {
			r.logger.WarnContext(ctx, "outbox relay: read backlog", "error", err)
		}
		r.logger.WarnContext(ctx, "outbox relay: idle while a transaction stays open; its events are relayed only after it ends",
			"pid", pid, "transaction_age", age, "relay_idle", idle, "outbox_pending", pending)
	}
}

// Backlog returns how many events wait in the outbox and the age of the
// oldest row.
func Backlog(ctx context.Context, db database.DBTX) (pending int64, oldestAge time.Duration, err error) {
	row, err := database.One(dbsqlc.New().OutboxBacklog(ctx, db, []*time.Time{nil}))
	if err != nil {
		return 0, 0, fmt.Errorf("outbox backlog: %w", err)
	}
	return row.Pending, time.Duration(row.OldestAgeSeconds * float64(time.Second)), nil
}

// OldestOpenTransaction names the oldest other transaction in this database
// that has written something (so may hold outbox rows the relay cannot see
// yet): its backend pid and age. ok is false when there is none.
func OldestOpenTransaction(ctx context.Context, db database.DBTX) (pid int32, age time.Duration, ok bool, err error) {
	rows, err := database.Many(dbsqlc.New().OutboxOpenTransactions(ctx, db, []int32{1}))
	if err != nil {
		return 0, 0, false, fmt.Errorf("oldest open transaction: %w", err)
	}
	if len(rows) == 0 {
		return 0, 0, false, nil
	}
	return rows[0].Pid, time.Duration(rows[0].AgeSeconds * float64(time.Second)), true, nil
}
