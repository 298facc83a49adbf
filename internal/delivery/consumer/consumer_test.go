package consumer_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
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
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

var t0 = time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)

type env struct {
	pool  *pgxpool.Pool
	dbURL string
	amqp  string
	ch    *amqp.Channel // publisher channel, in confirm mode
	reg   *prometheus.Registry
}

// setup gives a test its database and vhost, with the topology declared
// (delivery limit 3, so poison tests are quick).
func setup(t *testing.T) *env {
	t.Helper()
	pool, dbURL := testdb.New(t)
	url := testbroker.New(t)
	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, broker.DeclareTopology(ch, subscriptions(), 3))
	require.NoError(t, ch.Confirm(false))
	return &env{pool: pool, dbURL: dbURL, amqp: url, ch: ch, reg: prometheus.NewRegistry()}
}

func subscriptions() []broker.Subscription {
	return subscribers.Movable().Subscriptions()
}

// run starts a consumer until the test ends (or the returned stop).
func (e *env) run(t *testing.T, pool *pgxpool.Pool, sub dispatch.Subscriber, cfg consumer.Config) (stop func()) {
	t.Helper()
	cfg.URL = e.amqp
	if cfg.DeliveryLimit == 0 {
		cfg.DeliveryLimit = 3 // setup's topology
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff, cfg.MaxBackoff = 20*time.Millisecond, 200*time.Millisecond
	}
	c, err := consumer.New(pool, sub, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), e.reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(30 * time.Second):
				t.Error("consumer did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// history appends uploads of n files for owner (sizes 1..n, at t0), deleting
// every third one an hour later, and returns its events in position order.
func (e *env) history(t *testing.T, owner uuid.UUID, n int) []eventstore.Event {
	t.Helper()
	var evs []eventstore.Event
	for i := range n {
		id := uuid.New()
		up, err := eventstore.New(domain.StreamFile, id, 1, domain.FileUploaded,
			domain.FileUploadedData{OwnerID: owner, Name: "f" + strconv.Itoa(i), SizeBytes: int64(i + 1), ContentType: "text/plain"}, t0)
		require.NoError(t, err)
		evs = append(evs, up)
		if i%3 == 0 {
			del, err := eventstore.New(domain.StreamFile, id, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: owner}, t0.Add(time.Hour))
			require.NoError(t, err)
			evs = append(evs, del)
		}
	}
	require.NoError(t, database.InTx(context.Background(), e.pool, func(tx *database.Tx) error {
		return eventstore.Append(context.Background(), tx, evs)
	}))
	return evs
}

// expected is what history(owner, n) gives, brute force: storage now, and
// byte-seconds over [t0, t0+2h) with now past that.
func expected(n int) (count int64, bytes int64, byteSeconds int64) {
	for i := range n {
		size := int64(i + 1)
		if i%3 == 0 {
			byteSeconds += size * 3600
			continue
		}
		count++
		bytes += size
		byteSeconds += size * 7200
	}
	return count, bytes, byteSeconds
}

// publish sends events as the relay would, pipelined, and waits for every
// confirm.
func (e *env) publish(t *testing.T, evs ...eventstore.Event) {
	t.Helper()
	confs := make([]*amqp.DeferredConfirmation, 0, len(evs))
	for _, ev := range evs {
		m, err := outbox.Message(ev)
		require.NoError(t, err)
		conf, err := e.ch.PublishWithDeferredConfirmWithContext(context.Background(), broker.Exchange, m.RoutingKey, true, false, m.Publishing)
		require.NoError(t, err)
		confs = append(confs, conf)
	}
	for _, conf := range confs {
		ok, err := conf.WaitContext(context.Background())
		require.NoError(t, err)
		require.True(t, ok, "broker nacked a test message")
	}
}

func (e *env) publishRaw(t *testing.T, key string, p amqp.Publishing) {
	t.Helper()
	conf, err := e.ch.PublishWithDeferredConfirmWithContext(context.Background(), broker.Exchange, key, true, false, p)
	require.NoError(t, err)
	ok, err := conf.WaitContext(context.Background())
	require.NoError(t, err)
	require.True(t, ok, "broker nacked a test message")
}

func (e *env) requireUsage(t *testing.T, owner uuid.UUID, n int, within time.Duration) {
	t.Helper()
	count, bytes, bs := expected(n)
	price, err := billing.NewSettings("", "", "0.00003", "USD")
	require.NoError(t, err)
	require.EventuallyWithT(t, func(c *assertT) {
		st, err := storage.Read(context.Background(), e.pool, owner)
		require.NoError(c, err)
		require.Equal(c, count, st.FileCount)
		require.Equal(c, strconv.FormatInt(bytes, 10), st.Bytes.String())
		u, err := billing.Read(context.Background(), e.pool, owner, t0, t0.Add(2*time.Hour), t0.Add(5*time.Hour), price)
		require.NoError(c, err)
		require.Equal(c, strconv.FormatInt(bs, 10), u.ByteSeconds)
	}, within, 20*time.Millisecond)
}

func (e *env) queueDepth(t *testing.T, queue string) (ready, unacked int) {
	t.Helper()
	conn, err := amqp.Dial(e.amqp)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	require.NoError(t, err)
	return q.Messages, q.Consumers
}

// deadLetters drains a dead-letter queue and returns its message ids.
func (e *env) deadLetters(t *testing.T, subscriber string) []string {
	t.Helper()
	conn, err := amqp.Dial(e.amqp)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	var ids []string
	for {
		d, ok, err := ch.Get(broker.DeadQueueName(subscriber), true)
		require.NoError(t, err)
		if !ok {
			return ids
		}
		ids = append(ids, d.MessageId)
	}
}

func TestConsumerAppliesShuffledDuplicatedDeliveries(t *testing.T) {
	t.Parallel()
	e := setup(t)
	owner := uuid.New()
	const n = 600
	evs := e.history(t, owner, n)

	// Every event once, a third of them twice, in a random order: the
	// deletes often come before their uploads.
	sends := append([]eventstore.Event(nil), evs...)
	for i := 0; i < len(evs); i += 3 {
		sends = append(sends, evs[i])
	}
	rand.Shuffle(len(sends), func(i, j int) { sends[i], sends[j] = sends[j], sends[i] })
	e.publish(t, sends...)

	e.run(t, e.pool, storage.Subscriber{}, consumer.Config{Prefetch: 100})
	e.run(t, e.pool, billing.Subscriber{}, consumer.Config{Prefetch: 100, BatchSize: 37})
	e.requireUsage(t, owner, n, 20*time.Second)

	for _, name := range subscribers.Movable().Names() {
		require.Eventually(t, func() bool {
			return metric(t, e.reg, "epoch_consumer_processed_total", name, "") == float64(len(evs)) &&
				metric(t, e.reg, "epoch_consumer_duplicates_total", name, "") == float64(len(sends)-len(evs))
		}, 10*time.Second, 20*time.Millisecond, name)
		ready, _ := e.queueDepth(t, broker.QueueName(name))
		require.Zero(t, ready)
		require.Empty(t, e.deadLetters(t, name))
	}
	// Each committed batch is timed once: billing's hold at most 37
	// deliveries, and at least one.
	batches, seconds := histogram(t, e.reg, "epoch_consumer_batch_seconds", billing.Name)
	require.GreaterOrEqual(t, batches, uint64((len(sends)+36)/37))
	require.LessOrEqual(t, batches, uint64(len(sends)))
	require.Greater(t, seconds, 0.0)

	// A whole redelivery later, reversed, changes nothing.
	reversed := append([]eventstore.Event(nil), evs...)
	slices.Reverse(reversed)
	e.publish(t, reversed...)
	require.Eventually(t, func() bool {
		return metric(t, e.reg, "epoch_consumer_duplicates_total", storage.Name, "") == float64(len(sends))
	}, 10*time.Second, 20*time.Millisecond)
	e.requireUsage(t, owner, n, time.Second)
}

func TestConsumerDeadLettersPoisonAndKeepsFlowing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	owner := uuid.New()
	evs := e.history(t, owner, 30)

	// Not a message body at all: kept as a dead letter on its first
	// delivery, without spending its delivery counts; one whose id
	// Postgres text cannot hold is named by its body's hash.
	e.publishRaw(t, domain.FileUploaded, amqp.Publishing{MessageId: "garbage", Body: []byte("not json"), DeliveryMode: amqp.Persistent})
	nulBody := []byte("nul id")
	e.publishRaw(t, domain.FileUploaded, amqp.Publishing{MessageId: "bad\x00id\xff", Body: nulBody, DeliveryMode: amqp.Persistent})
	nulSum := sha256.Sum256(nulBody)
	nulKey := "sha256:" + hex.EncodeToString(nulSum[:])
	// A stored event the subscriber cannot apply: it fails in its batch,
	// alone on retry, is requeued, and is kept on its last delivery (3).
	bad, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded, json.RawMessage(`{"owner_id":42}`), t0)
	require.NoError(t, err)
	stored := []eventstore.Event{bad}
	require.NoError(t, database.InTx(context.Background(), e.pool, func(tx *database.Tx) error {
		return eventstore.Append(context.Background(), tx, stored)
	}))
	bad = stored[0]
	e.publish(t, evs[:10]...)
	e.publish(t, bad)
	e.publish(t, evs[10:]...)

	e.run(t, e.pool, storage.Subscriber{}, consumer.Config{})
	e.run(t, e.pool, billing.Subscriber{}, consumer.Config{})
	e.requireUsage(t, owner, 30, 20*time.Second)

	for _, name := range subscribers.Movable().Names() {
		require.EventuallyWithT(t, func(c *assertT) {
			require.Equal(c, map[string]string{"garbage": consumer.ReasonMalformed, nulKey: consumer.ReasonMalformed, bad.ID.String(): consumer.ReasonFailed},
				e.keptDeadLetters(t, name))
		}, 20*time.Second, 50*time.Millisecond, name)
		// Each counted once: the failing one's requeues are not dead letters.
		require.Equal(t, 2.0, metric(t, e.reg, "epoch_consumer_dead_lettered_total", name, consumer.ReasonMalformed))
		require.Equal(t, 1.0, metric(t, e.reg, "epoch_consumer_dead_lettered_total", name, consumer.ReasonFailed))
		require.Empty(t, e.deadLetters(t, name), "nothing reached the broker's dead-letter queue")
		var deaths int
		require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT deaths FROM dead_letters WHERE subscriber = $1 AND event_id = 'garbage'", name).Scan(&deaths))
		require.Equal(t, 1, deaths)
	}

	// The queue keeps flowing after the poison.
	more := e.history(t, uuid.New(), 5)
	e.publish(t, more...)
	require.Eventually(t, func() bool {
		st, err := storage.Read(context.Background(), e.pool, ownerOf(t, more[0]))
		return err == nil && st.Position == more[len(more)-1].Position
	}, 10*time.Second, 20*time.Millisecond)
}

// keptDeadLetters is the subscriber's dead letters: event_id → reason.
func (e *env) keptDeadLetters(t testing.TB, subscriber string) map[string]string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), "SELECT event_id, reason FROM dead_letters WHERE subscriber = $1", subscriber)
	require.NoError(t, err)
	out := map[string]string{}
	for rows.Next() {
		var id, reason string
		require.NoError(t, rows.Scan(&id, &reason))
		out[id] = reason
	}
	require.NoError(t, rows.Err())
	return out
}

// Forged (no stored event has its id), altered (a stored event's id with
// other data) and early (the id a stream's next event will have, sent
// before that event exists) messages, published straight to the exchange,
// change nothing and claim no inbox row; the real events still apply, and
// each forgery is kept with its reason.
func TestConsumerAppliesOnlyStoredEvents(t *testing.T) {
	t.Parallel()
	e := setup(t)
	owner := uuid.New()
	evs := e.history(t, owner, 30)
	kept := evs[len(evs)-1] // the last upload (file 29), which history does not delete
	require.Equal(t, domain.FileUploaded, kept.Type)

	forged, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: owner, Name: "free money", SizeBytes: 1 << 60, ContentType: "x/y"}, t0)
	require.NoError(t, err)
	forged.Position = evs[len(evs)-1].Position + 1000
	altered := evs[2] // file 1's upload: claim it is 2^60 bytes
	require.Equal(t, domain.FileUploaded, altered.Type)
	altered.Data = json.RawMessage(fmt.Sprintf(`{"owner_id":%q,"name":"f1","size_bytes":%d,"content_type":"text/plain"}`, owner, int64(1)<<60))
	// The delete of kept: its id is derivable, its position a guess.
	early, err := eventstore.New(domain.StreamFile, kept.StreamID, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: owner}, t0)
	require.NoError(t, err)
	early.Position = evs[len(evs)-1].Position + 1
	// A stored event's id at another stored event's position.
	misplaced := evs[3]
	misplaced.Position = evs[4].Position

	e.publish(t, forged, altered, early, misplaced)
	e.publish(t, evs...)
	e.run(t, e.pool, storage.Subscriber{}, consumer.Config{})
	e.run(t, e.pool, billing.Subscriber{}, consumer.Config{})
	e.requireUsage(t, owner, 30, 20*time.Second)

	want := map[string]string{
		forged.ID.String():    consumer.ReasonUnknownEvent,
		altered.ID.String():   consumer.ReasonMismatch,
		early.ID.String():     consumer.ReasonUnknownEvent,
		misplaced.ID.String(): consumer.ReasonUnknownEvent,
	}
	for _, name := range subscribers.Movable().Names() {
		require.EventuallyWithT(t, func(c *assertT) {
			require.Equal(c, want, e.keptDeadLetters(t, name))
		}, 20*time.Second, 50*time.Millisecond, name)
		var claimed int
		require.NoError(t, e.pool.QueryRow(context.Background(),
			"SELECT count(*) FROM inbox WHERE subscriber = $1 AND event_id = ANY($2)", name,
			[]uuid.UUID{forged.ID, early.ID}).Scan(&claimed))
		require.Zero(t, claimed, "a forgery claimed an inbox row")
		require.Equal(t, 3.0, metric(t, e.reg, "epoch_consumer_dead_lettered_total", name, consumer.ReasonUnknownEvent))
		require.Equal(t, 1.0, metric(t, e.reg, "epoch_consumer_dead_lettered_total", name, consumer.ReasonMismatch))
	}

	// The real delete, appended after its forgery died, still applies.
	realDelete, err := eventstore.New(domain.StreamFile, kept.StreamID, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: owner}, t0.Add(30*time.Minute))
	require.NoError(t, err)
	require.Equal(t, early.ID, realDelete.ID)
	appended := []eventstore.Event{realDelete}
	require.NoError(t, database.InTx(context.Background(), e.pool, func(tx *database.Tx) error {
		return eventstore.Append(context.Background(), tx, appended)
	}))
	realDelete = appended[0]
	e.publish(t, realDelete)
	size := int64(0)
	var data domain.FileUploadedData
	require.NoError(t, json.Unmarshal(kept.Data, &data))
	size = data.SizeBytes
	count, bytes, _ := expected(30)
	require.Eventually(t, func() bool {
		st, err := storage.Read(context.Background(), e.pool, owner)
		return err == nil && st.FileCount == count-1 && st.Bytes.String() == strconv.FormatInt(bytes-size, 10)
	}, 10*time.Second, 20*time.Millisecond, "the real delete did not apply")
	// A forgery that arrives again adds a death, not a dead letter.
	e.publish(t, forged)
	require.Eventually(t, func() bool {
		var deaths int
		err := e.pool.QueryRow(context.Background(), "SELECT deaths FROM dead_letters WHERE subscriber = $1 AND event_id = $2", storage.Name, forged.ID.String()).Scan(&deaths)
		return err == nil && deaths == 2
	}, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, 3.0, metric(t, e.reg, "epoch_consumer_dead_lettered_total", storage.Name, consumer.ReasonUnknownEvent))
}

func TestConsumerReconnectsAfterConnectionsClose(t *testing.T) {
	t.Parallel()
	e := setup(t)
	owner := uuid.New()
	evs := e.history(t, owner, 300)

	e.run(t, e.pool, storage.Subscriber{}, consumer.Config{Prefetch: 50})
	e.publish(t, evs[:100]...)
	require.Eventually(t, func() bool {
		return metric(t, e.reg, "epoch_consumer_processed_total", storage.Name, "") > 0
	}, 10*time.Second, 10*time.Millisecond)

	testbroker.CloseConnections(t, e.amqp) // closes the test's publisher too
	conn, err := amqp.Dial(e.amqp)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	e.ch, err = conn.Channel()
	require.NoError(t, err)
	require.NoError(t, e.ch.Confirm(false))
	e.publish(t, evs[100:]...)

	st := func() storage.Usage {
		u, err := storage.Read(context.Background(), e.pool, owner)
		require.NoError(t, err)
		return u
	}
	count, bytes, _ := expected(300)
	require.Eventually(t, func() bool {
		u := st()
		return u.FileCount == count && u.Bytes.String() == strconv.FormatInt(bytes, 10)
	}, 20*time.Second, 20*time.Millisecond)
}

// TestConsumerWaitsOutPostgres cuts the consumer off Postgres (through a
// proxy that drops and refuses connections): the messages must wait,
// not spend their delivery counts (limit 3) and be dead-lettered.
func TestConsumerWaitsOutPostgres(t *testing.T) {
	t.Parallel()
	e := setup(t)
	proxy := newProxy(t, e.dbURL)
	cfg, err := pgxpool.ParseConfig(proxy.url)
	require.NoError(t, err)
	cfg.ConnConfig.ConnectTimeout = time.Second
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)

	owner := uuid.New()
	evs := e.history(t, owner, 60)
	e.run(t, pool, storage.Subscriber{}, consumer.Config{Prefetch: 10})
	e.publish(t, evs[:10]...)
	require.Eventually(t, func() bool {
		return metric(t, e.reg, "epoch_consumer_processed_total", storage.Name, "") > 0
	}, 10*time.Second, 10*time.Millisecond)

	proxy.setDown(true)
	e.publish(t, evs[10:]...)
	time.Sleep(1500 * time.Millisecond) // many retry rounds at 20..200ms backoff
	proxy.setDown(false)

	count, bytes, _ := expected(60)
	require.Eventually(t, func() bool {
		st, err := storage.Read(context.Background(), e.pool, owner)
		return err == nil && st.FileCount == count && st.Bytes.String() == strconv.FormatInt(bytes, 10)
	}, 20*time.Second, 20*time.Millisecond)
	require.Empty(t, e.deadLetters(t, storage.Name))
	require.Zero(t, metric(t, e.reg, "epoch_consumer_dead_lettered_total", storage.Name, "failed"))
}

// TestConsumerShutdownGivesBackUnacked stops a consumer while messages
// flow: Run returns, nothing stays unacked, and a second consumer finishes
// the work with the same result.
func TestConsumerShutdownGivesBackUnacked(t *testing.T) {
	t.Parallel()
	e := setup(t)
	owner := uuid.New()
	const n = 1500
	evs := e.history(t, owner, n)
	e.publish(t, evs...)

	stop := e.run(t, e.pool, billing.Subscriber{}, consumer.Config{Prefetch: 200, BatchSize: 20})
	require.Eventually(t, func() bool {
		return metric(t, e.reg, "epoch_consumer_processed_total", billing.Name, "") > 0
	}, 10*time.Second, 5*time.Millisecond)
	stop()
	processed := metric(t, e.reg, "epoch_consumer_processed_total", billing.Name, "")
	// Once the connection is closed the broker drops the consumer and takes
	// back its unacked deliveries.
	var ready int
	require.Eventually(t, func() bool {
		var consumers int
		ready, consumers = e.queueDepth(t, broker.QueueName(billing.Name))
		return consumers == 0
	}, 10*time.Second, 20*time.Millisecond)
	var inbox int
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT count(*) FROM inbox WHERE subscriber = $1", billing.Name).Scan(&inbox))
	require.Equal(t, float64(inbox), processed, "applied exactly what was counted")
	require.GreaterOrEqual(t, ready+inbox, len(evs), "every message was applied or went back to the queue")

	e.run(t, e.pool, billing.Subscriber{}, consumer.Config{})
	e.run(t, e.pool, storage.Subscriber{}, consumer.Config{})
	e.requireUsage(t, owner, n, 20*time.Second)
}

func ownerOf(t *testing.T, ev eventstore.Event) uuid.UUID {
	var d struct {
		OwnerID uuid.UUID `json:"owner_id"`
	}
	require.NoError(t, json.Unmarshal(ev.Data, &d))
	return d.OwnerID
}

// metric reads one counter series of the registry.
func metric(t *testing.T, reg *prometheus.Registry, name, subscriber, reason string) float64 {
	t.Helper()
	return series(t, reg, name, subscriber, reason).GetCounter().GetValue()
}

// histogram reads one subscriber's series of a histogram: its count and
// sum.
func histogram(t *testing.T, reg *prometheus.Registry, name, subscriber string) (count uint64, sum float64) {
	t.Helper()
	h := series(t, reg, name, subscriber, "").GetHistogram()
	return h.GetSampleCount(), h.GetSampleSum()
}

// series finds the series of name for subscriber (and reason, when not
// empty); nil when there is none, which reads as zero.
func series(t *testing.T, reg *prometheus.Registry, name, subscriber, reason string) *dto.Metric {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["subscriber"] == subscriber && (reason == "" || labels["reason"] == reason) {
				return m
			}
		}
	}
	return nil
}

// proxy forwards TCP to Postgres and can be taken down: it then closes
// every open connection and refuses new ones, as a dead server would.
type proxy struct {
	url    string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
	target string
}

func newProxy(t *testing.T, dbURL string) *proxy {
	t.Helper()
	cfg, err := pgx.ParseConfig(dbURL)
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{conns: map[net.Conn]bool{}, target: net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port)))}
	t.Cleanup(func() { _ = ln.Close(); p.setDown(true) })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	p.url = "postgres://" + cfg.User + "@127.0.0.1:" + port + "/" + cfg.Database + "?sslmode=disable"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		_ = c.Close()
		return
	}
	p.mu.Unlock()
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
	_, _ = io.Copy(c, up)
	_ = c.Close()
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// Connected is what the worker's /readyz reports: true while consuming,
// false while the broker connection is down, true again once it is back,
// false after shutdown.
func TestConsumerReportsWhetherItConsumes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c, err := consumer.New(e.pool, storage.Subscriber{}, consumer.Config{
		URL: e.amqp, MinBackoff: 200 * time.Millisecond, MaxBackoff: 400 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	require.NoError(t, err)
	require.False(t, c.Connected())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	require.Eventually(t, c.Connected, 10*time.Second, 5*time.Millisecond)
	testbroker.CloseConnections(t, e.amqp)
	require.Eventually(t, func() bool { return !c.Connected() }, 10*time.Second, time.Millisecond,
		"a consumer whose connection was closed says so")
	require.Eventually(t, c.Connected, 10*time.Second, 5*time.Millisecond, "and consumes again after redialing")

	cancel()
	require.NoError(t, <-done)
	require.False(t, c.Connected())
}

// A batch that applied events is announced on dispatch.AppliedChannel after
// its commit, with the subscriber's name: the api's waits wake on it. A
// batch of duplicates only announces nothing new.
func TestConsumerAnnouncesAppliedBatches(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := t.Context()
	conn, err := e.pool.Acquire(ctx)
	require.NoError(t, err)
	listener := conn.Hijack()
	defer listener.Close(context.Background())
	_, err = listener.Exec(ctx, "LISTEN "+dispatch.AppliedChannel)
	require.NoError(t, err)

	owner := uuid.New()
	evs := e.history(t, owner, 5)
	e.publish(t, evs...)
	e.run(t, e.pool, storage.Subscriber{}, consumer.Config{})
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(waitCtx)
	require.NoError(t, err)
	require.Equal(t, dispatch.AppliedChannel, n.Channel)
	require.Equal(t, storage.Name, n.Payload)
	// By the time it is heard, the batch it announces is visible.
	var applied int
	require.NoError(t, e.pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE subscriber = $1", storage.Name).Scan(&applied))
	require.Positive(t, applied)
}

// A consumer with nothing to do keeps its one session: looking at its
// empty queue after each quiet spell (for a consumer the broker would have
// stopped delivering to) finds nothing wrong, and a message that arrives
// after the spells is applied at once.
func TestIdleConsumerKeepsItsSession(t *testing.T) {
	t.Parallel()
	e := setup(t)
	var logs syncbuf.Buffer
	c, err := consumer.New(e.pool, storage.Subscriber{}, consumer.Config{
		URL: e.amqp, DeliveryLimit: 3, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, c.Connected, 10*time.Second, 5*time.Millisecond)

	time.Sleep(12 * time.Second) // past two looks at the queue
	require.Equal(t, 1, strings.Count(logs.String(), "msg=consuming"), "sessions:\n%s", logs.String())
	require.NotContains(t, logs.String(), "stalled")

	owner := uuid.New()
	e.publish(t, e.history(t, owner, 2)...)
	require.Eventually(t, func() bool {
		u, err := storage.Read(context.Background(), e.pool, owner)
		return err == nil && u.FileCount > 0
	}, 5*time.Second, 10*time.Millisecond)
}

// A consumer taking full batches from a backlog says so, and stops saying
// so a few seconds after its queue is worked off; one fed a message at a
// time never does.
func TestConsumerReportsABacklog(t *testing.T) {
	t.Parallel()
	e := setup(t)
	c, err := consumer.New(e.pool, storage.Subscriber{}, consumer.Config{URL: e.amqp, Prefetch: 10, BatchSize: 5},
		slog.New(slog.DiscardHandler), nil)
	require.NoError(t, err)
	owner := uuid.New()
	e.publish(t, e.history(t, owner, 60)...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, c.Backlogged, 10*time.Second, time.Millisecond, "full batches from the backlog")
	require.Eventually(t, func() bool { return !c.Backlogged() }, 15*time.Second, 50*time.Millisecond, "worked off")

	for range 3 {
		e.publish(t, e.history(t, owner, 1)...)
		time.Sleep(200 * time.Millisecond)
		require.False(t, c.Backlogged(), "one message at a time is no backlog")
	}
}
