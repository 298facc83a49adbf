package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/consumer"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// healAfter is the workers' EPOCH_HEAL_AFTER in these tests: long enough
// that nothing a queue still brings is healed on a loaded machine, short
// enough for a test.
const healAfter = 10 * time.Second

// healSystem is a system whose billing runs in a worker of its own (the
// relay and storage in another), both healing after healAfter.
type healSystem struct {
	*system
	billing *e2ekit.Proc
	token   string
	owner   uuid.UUID
	ch      *amqp.Channel
}

func newHealSystem(t *testing.T, name string, billingEnv map[string]string) *healSystem {
	t.Helper()
	s := newSystem(t, name, "")
	s.worker.Kill()
	env := func(roles string, extra map[string]string) map[string]string {
		e := map[string]string{
			"EPOCH_DATABASE_URL": s.apiEnv["EPOCH_DATABASE_URL"], "EPOCH_AMQP_URL": s.amqpURL,
			"EPOCH_DB_MAX_CONNS": "5", "EPOCH_WORKER_ROLES": roles, "EPOCH_RELAY_POLL_INTERVAL": "100ms",
			"EPOCH_HEAL_AFTER": healAfter.String(),
		}
		for k, v := range extra {
			e[k] = v
		}
		return e
	}
	relay := bin.Start(t, "worker", name+"-relay", env("relay,storage", nil))
	relay.WaitReady(t, 30*time.Second)
	h := &healSystem{system: s}
	h.billing = bin.Start(t, "worker", name+"-billing", env("billing", billingEnv))
	h.billing.WaitReady(t, 30*time.Second)
	user := s.call(t, http.StatusCreated, "POST", "/v1/users", adminToken, map[string]string{"name": "payer"}).JSON(t)
	h.token, h.owner = user["token"].(string), uuid.MustParse(user["id"].(string))
	conn, err := amqp.Dial(s.amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	h.ch, err = conn.Channel()
	require.NoError(t, err)
	return h
}

// commands uploads n files, deleting every third, and returns the last
// position.
func (h *healSystem) commands(t *testing.T, n int) int64 {
	t.Helper()
	var last int64
	for i := range n {
		f := h.call(t, http.StatusCreated, "POST", "/v1/files", h.token, map[string]any{"name": fmt.Sprint("f", i), "size_bytes": 1000 + i})
		last = f.Position(t)
		if i%3 == 0 {
			last = h.call(t, http.StatusNoContent, "DELETE", "/v1/files/"+f.JSON(t)["id"].(string), h.token, nil).Position(t)
		}
	}
	return last
}

func (h *healSystem) usage(t *testing.T, minPosition int64) int {
	t.Helper()
	return h.get(t, h.api, usageNow(minPosition), h.token)
}

// billingQueue is what catacloud.billing holds ready.
func (h *healSystem) billingQueue(t *testing.T) int {
	t.Helper()
	q, err := h.ch.QueueDeclarePassive(broker.QueueName("billing"), true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
	require.NoError(t, err)
	return q.Messages
}

// healed is what billing's worker counted and what the status says.
func (h *healSystem) healed(t *testing.T) (metric float64, status int64) {
	t.Helper()
	metric = e2ekit.Metric(t, h.http, h.billing.Addr, "epoch_heal_applied_total", `subscriber="billing"`)
	for _, sub := range h.call(t, http.StatusOK, "GET", "/v1/admin/status", adminToken, nil).JSON(t)["subscribers"].([]any) {
		if m := sub.(map[string]any); m["name"] == "billing" {
			status, _ = m["healed"].(json.Number).Int64()
		}
	}
	return metric, status
}

// exactWithin waits, at most d, until usage answers at min_position last,
// then checks storage and billing against the store, to the microsecond,
// and that billing applied every file event once.
func (h *healSystem) exactWithin(t *testing.T, ctx context.Context, d time.Duration, last int64) {
	t.Helper()
	e2ekit.Eventually(t, d, "billing catches up by itself", func() (bool, string) {
		status := h.usage(t, last)
		return status == http.StatusOK, fmt.Sprint("usage answers ", status)
	})
	events := e2ekit.LoadEvents(t, ctx, h.pool)
	e2ekit.CheckStorageAndBilling(t, ctx, h.pool, events)
	require.Equal(t, e2ekit.CountFileEvents(events), e2ekit.InboxCount(t, ctx, h.pool, "billing"), "nothing applied twice")
}

// Billing's queue purged while its worker runs: with no operator, usage is
// exact again within HEAL_AFTER and a few seconds, healing counted exactly
// what was purged, and nothing is counted twice.
func TestHealingRecoversAPurgedQueue(t *testing.T) {
	t.Parallel()
	// A small prefetch, so that most messages wait in the queue while a
	// lock holds billing's batch.
	h := newHealSystem(t, "heal-purge", map[string]string{"EPOCH_CONSUMER_PREFETCH": "10"})
	ctx := e2ekit.CtxFor(t, 3*time.Minute)
	require.Equal(t, http.StatusOK, h.usage(t, h.commands(t, 6)))

	// billing's batch waits for the lock; the relay fills its queue.
	lock, err := h.pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(context.WithoutCancel(ctx)) }()
	_, err = lock.Exec(ctx, "LOCK TABLE billing_files IN EXCLUSIVE MODE")
	require.NoError(t, err)
	last := h.commands(t, 30)
	e2ekit.Eventually(t, 20*time.Second, "billing's queue holds what the relay published", func() (bool, string) {
		ready := h.billingQueue(t)
		return e2ekit.OutboxBacklog(t, ctx, h.pool) == 0 && ready > 0, "ready " + strconv.Itoa(ready)
	})
	purged, err := h.ch.QueuePurge(broker.QueueName("billing"), false)
	require.NoError(t, err)
	purgedAt := time.Now()
	require.NoError(t, lock.Rollback(ctx))
	require.Positive(t, purged)
	t.Logf("purged %d messages from billing's queue", purged)

	h.exactWithin(t, ctx, healAfter+10*time.Second-time.Since(purgedAt), last)
	t.Logf("usage exact %s after the purge (EPOCH_HEAL_AFTER %s)", time.Since(purgedAt).Round(time.Millisecond), healAfter)
	metric, status := h.healed(t)
	require.Equal(t, float64(purged), metric, "healing applied what was purged, and nothing else")
	require.Equal(t, int64(purged), status)
	require.Contains(t, h.billing.Output(), "healed events the broker did not deliver")

	// More commands: delivered as usual, nothing healed again.
	final := h.commands(t, 3)
	require.Equal(t, http.StatusOK, h.usage(t, final))
	h.exactWithin(t, ctx, 0, final)
	metric, _ = h.healed(t)
	require.Equal(t, float64(purged), metric)
}

// Messages taken off billing's queue by a consumer outside Epoch that acks
// and drops them are healed the same way.
func TestHealingRecoversMessagesAnOutsideConsumerDropped(t *testing.T) {
	t.Parallel()
	h := newHealSystem(t, "heal-thief", nil)
	ctx := e2ekit.CtxFor(t, 3*time.Minute)
	require.Equal(t, http.StatusOK, h.usage(t, h.commands(t, 3)))

	conn, err := amqp.Dial(h.amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	thief, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, thief.Qos(1, 0, false))
	msgs, err := thief.Consume(broker.QueueName("billing"), "thief", false, false, false, false, nil)
	require.NoError(t, err)
	var mu sync.Mutex
	dropped := map[string]bool{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for d := range msgs {
			mu.Lock()
			dropped[d.MessageId] = true
			mu.Unlock()
			_ = d.Ack(false)
		}
	}()
	last := h.commands(t, 30)
	e2ekit.Eventually(t, 20*time.Second, "every message is taken", func() (bool, string) {
		ready := h.billingQueue(t)
		return e2ekit.OutboxBacklog(t, ctx, h.pool) == 0 && ready == 0, "ready " + strconv.Itoa(ready)
	})
	require.NoError(t, thief.Cancel("thief", false))
	<-done
	stolenAt := time.Now()
	mu.Lock()
	n := len(dropped)
	mu.Unlock()
	require.Positive(t, n, "the outside consumer took messages")
	t.Logf("an outside consumer acked and dropped %d messages", n)

	h.exactWithin(t, ctx, healAfter+10*time.Second-time.Since(stolenAt), last)
	t.Logf("usage exact %s after the outside consumer stopped (EPOCH_HEAL_AFTER %s)", time.Since(stolenAt).Round(time.Millisecond), healAfter)
	metric, status := h.healed(t)
	require.Equal(t, float64(n), metric, "healing applied what was dropped, and nothing else")
	require.Equal(t, int64(n), status)
}

// A genuine event whose own application failed (dead letter failed) is not
// healed, and the operator's replay applies it once; forged and altered
// copies, dead-lettered under real events' ids, do not keep those from
// being healed.
func TestHealingLeavesFailedEventsAndPassesForgedCopies(t *testing.T) {
	t.Parallel()
	h := newHealSystem(t, "heal-forged", nil)
	ctx := e2ekit.CtxFor(t, 3*time.Minute)
	require.Equal(t, http.StatusOK, h.usage(t, h.commands(t, 3)))

	// Three uploads stored with no outbox row: no message will bring them.
	var stored []eventstore.Event
	for i := range 3 {
		e, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
			domain.FileUploadedData{OwnerID: h.owner, Name: fmt.Sprint("quiet", i), SizeBytes: int64(5000 + i), ContentType: "text/plain"},
			time.Now().UTC().Truncate(time.Microsecond))
		require.NoError(t, err)
		stored = append(stored, e)
	}
	require.NoError(t, database.InTx(ctx, h.pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, stored) }))
	failed, altered, misplaced := stored[0], stored[1], stored[2]

	// The first failed on every delivery, as far as billing knows.
	body, err := outbox.MessageBody(failed)
	require.NoError(t, err)
	_, err = dbsqlc.New().DeadLetterRecord(ctx, h.pool, &dbsqlc.DeadLetterRecordParams{
		Subscriber: "billing", EventIds: []string{failed.ID.String()}, Positions: []int64{failed.Position},
		Reasons: []string{consumer.ReasonFailed}, Bodies: [][]byte{body},
	})
	require.NoError(t, err)
	// Forgeries of the other two, published to the exchange: one with
	// other data (mismatch), one at another position (unknown_event).
	forge := func(e eventstore.Event) {
		b, err := outbox.MessageBody(e)
		require.NoError(t, err)
		require.NoError(t, h.ch.PublishWithContext(ctx, broker.Exchange, e.Type, false, false, amqp.Publishing{
			ContentType: "application/json", DeliveryMode: amqp.Persistent, MessageId: e.ID.String(), Type: e.Type, Body: b,
		}))
	}
	forgedData := altered
	forgedData.Data = json.RawMessage(fmt.Sprintf(`{"owner_id":%q,"name":"forged","size_bytes":1,"content_type":"text/plain"}`, h.owner))
	forge(forgedData)
	forgedPosition := misplaced
	forgedPosition.Position += 1000
	forge(forgedPosition)
	e2ekit.Eventually(t, 20*time.Second, "billing dead-letters the forgeries", func() (bool, string) {
		reasons := deadLetterReasons(t, ctx, h)
		return reasons[altered.ID.String()] == consumer.ReasonMismatch && reasons[misplaced.ID.String()] == consumer.ReasonUnknownEvent,
			fmt.Sprint(reasons)
	})
	storedAt := time.Now()

	e2ekit.Eventually(t, healAfter+10*time.Second, "the real events are healed despite their forgeries", func() (bool, string) {
		metric, _ := h.healed(t)
		return metric == 2, fmt.Sprint("healed ", metric)
	})
	t.Logf("healed %s after the events were stored", time.Since(storedAt).Round(time.Millisecond))
	// A while longer: the failed one is left to the operator.
	time.Sleep(healAfter / 2)
	metric, status := h.healed(t)
	require.Equal(t, 2.0, metric)
	require.Equal(t, int64(2), status)
	require.False(t, inboxHas(t, ctx, h, failed.ID), "a failed event is not healed")
	require.Equal(t, consumer.ReasonFailed, deadLetterReasons(t, ctx, h)[failed.ID.String()])

	got := h.call(t, http.StatusOK, "POST", "/v1/admin/subscribers/billing/dead-letters/replay", adminToken,
		map[string]any{"event_ids": []string{failed.ID.String()}}).JSON(t)
	require.Equal(t, "1", fmt.Sprint(got["replayed"]))
	h.exactWithin(t, ctx, 5*time.Second, failed.Position)
	metric, _ = h.healed(t)
	require.Equal(t, 2.0, metric, "the replayed event is the operator's, not healing's")
}

func deadLetterReasons(t *testing.T, ctx context.Context, h *healSystem) map[string]string {
	t.Helper()
	out := map[string]string{}
	rows, err := h.pool.Query(ctx, "SELECT event_id || ' ' || reason FROM dead_letters WHERE subscriber = 'billing'")
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	for _, l := range lines {
		id, reason, _ := strings.Cut(l, " ")
		out[id] = reason
	}
	return out
}

func inboxHas(t *testing.T, ctx context.Context, h *healSystem, id uuid.UUID) bool {
	t.Helper()
	var n int
	require.NoError(t, h.pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE subscriber = 'billing' AND event_id = $1", id).Scan(&n))
	return n > 0
}
