package subscribertest

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/consumer"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/syncbuf"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

// path is one way events reach the subscriber under test.
type path interface {
	fmt.Stringer
	// deliver hands over the events of rd at batch, in that order, and
	// returns once every delivery is settled (applied or found a
	// duplicate).
	deliver(t *testing.T, rd *round, batch []int)
	// handled is what reached the subscriber's Handle on this path.
	handled() *record
}

// inline delivers each batch with dispatch.Deliver in a transaction of its
// own: what a command's Dispatch does for an inline subscriber, with the
// events as the command made them.
type inline struct {
	pool *pgxpool.Pool
	sub  observed
}

func (e *env) inline() *inline {
	return &inline{pool: e.pool, sub: observe(e.s.f.New())}
}

func (p *inline) String() string   { return "inline" }
func (p *inline) handled() *record { return p.sub.rec }

func (p *inline) deliver(t *testing.T, rd *round, batch []int) {
	t.Helper()
	ctx := t.Context()
	events := make([]eventstore.Event, len(batch))
	for k, i := range batch {
		events[k] = rd.made[i]
	}
	require.NoError(t, database.InTx(ctx, p.pool, func(tx *database.Tx) error {
		return dispatch.Deliver(ctx, tx, p.sub, events)
	}), "inline delivery of %v", batch)
}

// deliveryLimit is the test queues' delivery limit: a subscriber that fails
// an event is dead-lettered on its third delivery, and the test says so at
// once instead of waiting out twenty.
const deliveryLimit = 3

// settleTimeout bounds the wait for the consumers to settle one batch.
const settleTimeout = 30 * time.Second

// remote publishes each batch as the relay would (outbox.Message of the
// stored events, to the exchange, confirmed) on the test's own vhost, where
// two consumers share the subscriber's queue as two workers would: one
// applies every delivery in a transaction of its own (two at a time), the
// other up to 16 at once, so copies of one event may be applied by both at
// the same time.
type remote struct {
	pool  *pgxpool.Pool
	name  string
	types []string
	ch    *amqp.Channel // in confirm mode
	reg   *prometheus.Registry
	rec   *record
	logs  *syncbuf.Buffer
	sent  int // deliveries routed to the subscriber's queue so far
}

func (e *env) remote(t *testing.T) *remote {
	t.Helper()
	url := testbroker.New(t)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	subs := []broker.Subscription{{Name: e.s.name, EventTypes: e.s.types}}
	require.NoError(t, broker.DeclareTopology(ch, subs, deliveryLimit))
	require.NoError(t, broker.DeclareUnsubscribed(ch, subs, domain.EventTypes()))
	require.NoError(t, ch.Confirm(false))
	p := &remote{pool: e.pool, name: e.s.name, types: e.s.types, ch: ch, reg: prometheus.NewRegistry(), rec: newRecord(), logs: &syncbuf.Buffer{}}
	p.start(t, e, url, consumer.Config{Prefetch: 4, BatchSize: 1})
	p.start(t, e, url, consumer.Config{Prefetch: 64, BatchSize: 16})
	return p
}

func (p *remote) String() string   { return "remote" }
func (p *remote) handled() *record { return p.rec }

// start runs a consumer of the subscriber's queue until the test ends.
func (p *remote) start(t *testing.T, e *env, url string, cfg consumer.Config) {
	t.Helper()
	cfg.URL, cfg.DeliveryLimit = url, deliveryLimit
	cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	logger := slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := consumer.New(p.pool, observed{Subscriber: e.s.f.New(), rec: p.rec}, cfg, logger, p.reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("consumer: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("consumer did not stop")
		}
	})
}

func (p *remote) deliver(t *testing.T, rd *round, batch []int) {
	t.Helper()
	ctx := t.Context()
	confs := make([]*amqp.DeferredConfirmation, 0, len(batch))
	for _, i := range batch {
		m, err := outbox.Message(rd.stored[i])
		require.NoError(t, err)
		conf, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, broker.Exchange, m.RoutingKey, true, false, m.Publishing)
		require.NoError(t, err)
		confs = append(confs, conf)
		if slices.Contains(p.types, rd.stored[i].Type) {
			p.sent++
		}
	}
	for _, conf := range confs {
		ok, err := conf.WaitContext(ctx)
		require.NoError(t, err)
		require.True(t, ok, "the broker nacked a message")
	}
	p.settle(t)
}

// settle waits until the consumers have settled every delivery sent so
// far. A delivery's only trace when it is a duplicate is the consumers'
// counters (nothing reaches Handle, nothing is written), so they are what
// it watches. A dead letter ends the wait at once: the subscriber failed
// an event the suite made.
func (p *remote) settle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(settleTimeout)
	for polls := 0; ; polls++ {
		settled := p.counter(t, "epoch_consumer_processed_total") + p.counter(t, "epoch_consumer_duplicates_total")
		if settled >= p.sent {
			return
		}
		if polls%20 == 0 {
			if dead := p.deadLetters(t); len(dead) > 0 {
				t.Fatalf("remote: the consumers kept dead letters %v (event id: reason); their warnings:\n%s", dead, warnings(p.logs))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote: the consumers settled %d of %d deliveries in %s; their warnings:\n%s", settled, p.sent, settleTimeout, warnings(p.logs))
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// counter reads one of the consumers' counters of the subscriber.
func (p *remote) counter(t *testing.T, name string) int {
	t.Helper()
	families, err := p.reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "subscriber" && l.GetValue() == p.name {
					return int(m.GetCounter().GetValue())
				}
			}
		}
	}
	return 0
}

func (p *remote) deadLetters(t *testing.T) map[string]string {
	t.Helper()
	rows, err := p.pool.Query(t.Context(), "SELECT event_id, reason FROM dead_letters WHERE subscriber = $1", p.name)
	require.NoError(t, err)
	dead, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) ([2]string, error) {
		var r [2]string
		return r, row.Scan(&r[0], &r[1])
	})
	require.NoError(t, err)
	out := make(map[string]string, len(dead))
	for _, d := range dead {
		out[d[0]] = d[1]
	}
	return out
}

// record is which events reached a subscriber's Handle, and how often (a
// transaction retried after a deadlock hands them over again).
type record struct {
	mu   sync.Mutex
	seen map[uuid.UUID]int
}

func newRecord() *record { return &record{seen: map[uuid.UUID]int{}} }

func (r *record) add(events []eventstore.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range events {
		r.seen[e.ID]++
	}
}

func (r *record) has(id uuid.UUID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[id] > 0
}

func (r *record) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.seen {
		n += c
	}
	return n
}

// observed is the subscriber under test, recording what reaches its
// Handle.
type observed struct {
	dispatch.Subscriber
	rec *record
}

func observe(s dispatch.Subscriber) observed { return observed{Subscriber: s, rec: newRecord()} }

func (o observed) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	o.rec.add(events)
	return o.Subscriber.Handle(ctx, tx, events)
}

// reference is what the subscriber's rows must be: the events applied,
// each once and alone, in position order, to empty tables, with no inbox
// and no consumer between them and Handle. Its database is the suite's:
// the tests take turns.
type reference struct {
	mu     sync.Mutex
	pool   *pgxpool.Pool
	sub    dispatch.Subscriber
	tables []string
	settle func(context.Context, *pgxpool.Pool) error
}

func (r *reference) rows(t *testing.T, events []eventstore.Event) []string {
	t.Helper()
	ctx := t.Context()
	events = slices.SortedFunc(slices.Values(dispatch.Filter(r.sub, events)), func(a, b eventstore.Event) int {
		return cmp.Compare(a.Position, b.Position)
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	require.NoError(t, database.InTx(ctx, r.pool, func(tx *database.Tx) error {
		if _, err := tx.Exec(ctx, truncate(r.tables)); err != nil {
			return err
		}
		for _, e := range events {
			if err := r.sub.Handle(ctx, tx, []eventstore.Event{e}); err != nil {
				return fmt.Errorf("reference: event %s at %d: %w", e.Type, e.Position, err)
			}
		}
		return nil
	}))
	settle(t, r.settle, r.pool)
	return dump(t, r.pool, r.tables)
}

// settle runs Features.Settle, when set, on pool.
func settle(t *testing.T, f func(context.Context, *pgxpool.Pool) error, pool *pgxpool.Pool) {
	t.Helper()
	if f != nil {
		require.NoError(t, f(t.Context(), pool), "subscribertest: Features.Settle")
	}
}

// dump reads every row of tables, each as "table {row as JSON}", sorted:
// the comparable form of a subscriber's rows.
func dump(t *testing.T, db database.DBTX, tables []string) []string {
	t.Helper()
	parts := make([]string, len(tables))
	for i, table := range tables {
		parts[i] = fmt.Sprintf("SELECT %d, to_jsonb(r)::text FROM %s AS r", i, identifier(table))
	}
	rows, err := db.Query(t.Context(), strings.Join(parts, " UNION ALL "))
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (string, error) {
		var (
			i    int
			text string
		)
		err := row.Scan(&i, &text)
		return tables[i] + " " + text, err
	})
	require.NoError(t, err)
	slices.Sort(out)
	return out
}

func truncate(tables []string) string {
	ids := make([]string, len(tables))
	for i, table := range tables {
		ids[i] = identifier(table)
	}
	return "TRUNCATE " + strings.Join(ids, ", ")
}

// identifier quotes a table name, schema-qualified or not.
func identifier(table string) string {
	return pgx.Identifier(strings.Split(table, ".")).Sanitize()
}

// mismatch says how the subscriber's rows differ from the reference's, and
// what led there.
func (e *env) mismatch(rd *round, applied map[int]bool, when string, got, want []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: the subscriber's rows are not the reference's (the events delivered, each applied once, in position order)\n", when)
	var delivered []string
	for i := range rd.made {
		if applied[i] {
			delivered = append(delivered, fmt.Sprintf("#%d", i))
		}
	}
	fmt.Fprintf(&b, "delivered so far: %s\n", strings.Join(delivered, " "))
	fmt.Fprintf(&b, "rows: the subscriber's %d, the reference's %d; only the subscriber's:\n", len(got), len(want))
	for _, r := range got {
		if !slices.Contains(want, r) {
			fmt.Fprintf(&b, "  %s\n", r)
		}
	}
	fmt.Fprintf(&b, "only the reference's:\n")
	for _, r := range want {
		if !slices.Contains(got, r) {
			fmt.Fprintf(&b, "  %s\n", r)
		}
	}
	fmt.Fprintf(&b, "the round's events:\n")
	for i, ev := range rd.made {
		fmt.Fprintf(&b, "  #%d %s\n", i, describe(ev))
	}
	return b.String()
}

func describe(e eventstore.Event) string {
	return fmt.Sprintf("%s %s v%d at %d %s %s", e.Type, e.StreamID.String()[:8], e.Version, e.Position,
		e.OccurredAt.Format(time.RFC3339Nano), e.Data)
}

// warnings is the consumers' warnings for a failure's message.
func warnings(logs *syncbuf.Buffer) string {
	if s := logs.String(); s != "" {
		return s
	}
	return "(none)"
}
