package opsmetrics_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/ops/opsmetrics"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/opstatustest"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

var movable = subscribers.Movable()

// With no relay running, a worker's scrape counts the outbox, each
// subscriber's dead letters, and the messages in each dead-letter queue.
func TestCollectWithoutRelay(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	amqpURL := testbroker.New(t)
	declare(t, amqpURL)
	publishDead(t, amqpURL, "storage", 2)

	opstatustest.Write(t, pool, 3)
	opstatustest.HoldOpen(t, pool)
	opstatustest.DeadLetters(t, pool, "storage", 2)
	opstatustest.DeadLetters(t, pool, "billing", 1)

	reg := register(t, opsmetrics.Config{DB: pool, Subscribers: movable, AMQPURL: amqpURL})
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP epoch_outbox_pending Events in the outbox waiting to be relayed.
# TYPE epoch_outbox_pending gauge
epoch_outbox_pending 3
# HELP epoch_dead_letters Dead letters a subscriber keeps in dead_letters, until an operator replays or discards them.
# TYPE epoch_dead_letters gauge
epoch_dead_letters{subscriber="billing"} 1
epoch_dead_letters{subscriber="storage"} 2
# HELP epoch_dead_letter_queue_messages Messages ready in a subscriber's dead-letter queue catacloud.<name>.dead, the broker's backstop past the delivery limit.
# TYPE epoch_dead_letter_queue_messages gauge
epoch_dead_letter_queue_messages{subscriber="billing"} 0
epoch_dead_letter_queue_messages{subscriber="storage"} 2
`), "epoch_outbox_pending", "epoch_dead_letters", "epoch_dead_letter_queue_messages"))
	require.Greater(t, gauge(t, reg, "epoch_outbox_oldest_pending_age_seconds"), 0.0)
}

// The backlog gauges have one home: a relay on the same registry does not
// register them again.
func TestRelayOnTheSameRegistry(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	reg := register(t, opsmetrics.Config{DB: pool, Subscribers: movable})
	pub, err := broker.NewPublisher(broker.PublisherConfig{URL: "amqp://guest:guest@127.0.0.1:1/"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	_, err = outbox.NewRelay(pool, []*broker.Publisher{pub}, outbox.Config{}, slog.New(slog.DiscardHandler), reg)
	require.NoError(t, err)
	require.Zero(t, gauge(t, reg, "epoch_outbox_pending"))
}

// The workers' users may not configure or read other queues: a passive
// declare needs neither, so the relay's user, which may only publish to
// the exchange, still measures every dead-letter queue.
func TestDeadQueueDepthAsTheRelaysUser(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	amqpURL := testbroker.New(t)
	declare(t, amqpURL)
	publishDead(t, amqpURL, "billing", 1)

	relayURL := leastPrivilegeUser(t, amqpURL, rabbitadmin.Permissions{Configure: "^$", Write: `^catacloud\.events$`, Read: "^$"})
	reg := register(t, opsmetrics.Config{DB: pool, Subscribers: movable, AMQPURL: relayURL})
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP epoch_dead_letter_queue_messages Messages ready in a subscriber's dead-letter queue catacloud.<name>.dead, the broker's backstop past the delivery limit.
# TYPE epoch_dead_letter_queue_messages gauge
epoch_dead_letter_queue_messages{subscriber="billing"} 1
epoch_dead_letter_queue_messages{subscriber="storage"} 0
`), "epoch_dead_letter_queue_messages"))
}

// A queue that does not exist is left out; an unreachable broker leaves
// the queue depths out, within the timeout, and the rest is still there.
func TestMissingQueuesAndBroker(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	amqpURL := testbroker.New(t) // no topology declared
	reg := register(t, opsmetrics.Config{DB: pool, Subscribers: movable, AMQPURL: amqpURL})
	n, err := testutil.GatherAndCount(reg, "epoch_dead_letter_queue_messages")
	require.NoError(t, err)
	require.Zero(t, n)
	declare(t, amqpURL)
	n, err = testutil.GatherAndCount(reg, "epoch_dead_letter_queue_messages")
	require.NoError(t, err)
	require.Equal(t, 2, n, "the same connection, once the queues exist")

	// A listener that accepts and never answers.
	reg = register(t, opsmetrics.Config{DB: pool, Subscribers: movable, AMQPURL: silentBroker(t), Timeout: 500 * time.Millisecond})
	began := time.Now()
	n, err = testutil.GatherAndCount(reg, "epoch_dead_letter_queue_messages", "epoch_dead_letters", "epoch_outbox_pending")
	require.NoError(t, err)
	require.Less(t, time.Since(began), 2*time.Second)
	require.Equal(t, 3, n, "the dead letters of both subscribers and the backlog")
}

func register(t *testing.T, cfg opsmetrics.Config) *prometheus.Registry {
	t.Helper()
	c := opsmetrics.New(cfg)
	t.Cleanup(c.Close)
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	return reg
}

func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() == name {
			require.Len(t, f.GetMetric(), 1)
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no %s", name)
	return 0
}

func declare(t *testing.T, amqpURL string) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	subs := make([]broker.Subscription, len(movable))
	for i, sub := range movable {
		subs[i] = broker.Subscription{Name: sub.Name(), EventTypes: sub.EventTypes()}
	}
	require.NoError(t, broker.DeclareTopology(ch, subs, 20))
}

// publishDead puts n messages straight into subscriber's dead-letter
// queue, confirmed.
func publishDead(t *testing.T, amqpURL, subscriber string, n int) {
	t.Helper()
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, ch.Confirm(false))
	for range n {
		c, err := ch.PublishWithDeferredConfirmWithContext(t.Context(), "", broker.DeadQueueName(subscriber), true, false, amqp.Publishing{Body: []byte("x")})
		require.NoError(t, err)
		ok, err := c.WaitContext(t.Context())
		require.NoError(t, err)
		require.True(t, ok)
	}
}

// leastPrivilegeUser creates a user with only perm on amqpURL's vhost and
// returns its URL there.
func leastPrivilegeUser(t *testing.T, amqpURL string, perm rabbitadmin.Permissions) string {
	t.Helper()
	uri, err := amqp.ParseURI(amqpURL)
	require.NoError(t, err)
	admin := rabbitadmin.New(uri)
	ctx := context.Background()
	name, password := uri.Vhost+"-least", "least-password"
	require.NoError(t, admin.PutUser(ctx, rabbitadmin.User{Name: name, PasswordHash: hash(password), HashingAlgorithm: "rabbit_password_hashing_sha256"}))
	t.Cleanup(func() { _ = admin.DeleteUser(context.Background(), name) })
	perm.User, perm.Vhost = name, uri.Vhost
	require.NoError(t, admin.PutPermissions(ctx, perm))
	uri.Username, uri.Password = name, password
	return uri.String()
}

// hash is RabbitMQ's rabbit_password_hashing_sha256: base64 of a 4-byte
// salt followed by sha256(salt, password).
func hash(password string) string {
	salt := make([]byte, 4)
	_, _ = rand.Read(salt)
	sum := sha256.Sum256(append(append([]byte{}, salt...), password...))
	return base64.StdEncoding.EncodeToString(append(salt, sum[:]...))
}

// silentBroker is an AMQP URL whose listener accepts connections and never
// says a word.
func silentBroker(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	return (&url.URL{Scheme: "amqp", User: url.UserPassword("guest", "guest"), Host: ln, Path: "/"}).String()
}
