package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/broker"
	"github.com/catacloud/epoch/internal/migrate"
	"github.com/catacloud/epoch/internal/testbroker"
	"github.com/catacloud/epoch/internal/testdb"
)

// EPOCH_DECLARE_TOPOLOGY=only declares and returns, without a database:
// the compose one-shot has none.
func TestDeclareOnlyNeedsNoDatabase(t *testing.T) {
	t.Parallel()
	url := testbroker.New(t)
	cfg := config{
		DatabaseURL:     "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1",
		AMQPURL:         url,
		WorkerRoles:     knownRoles,
		DeclareTopology: declareOnly,
		DeliveryLimit:   broker.DefaultDeliveryLimit,
		StartupTimeout:  10 * time.Second,
		RelayLanes:      1,
	}
	require.NoError(t, cfg.validate())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))))

	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	for _, q := range []string{broker.QueueName(roleStorage), broker.DeadQueueName(roleBilling), broker.Unsubscribed} {
		_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		require.NoError(t, err, "%s declared", q)
	}
}

func TestDeclareTopologyValues(t *testing.T) {
	t.Parallel()
	for value, ok := range map[string]bool{"true": true, "false": true, "only": true, "yes": false, "": false} {
		cfg := config{WorkerRoles: knownRoles, RelayLanes: 1, DeliveryLimit: 1, DeclareTopology: value}
		if ok {
			require.NoError(t, cfg.validate(), value)
		} else {
			require.ErrorContains(t, cfg.validate(), "EPOCH_DECLARE_TOPOLOGY", value)
		}
	}
}

// A worker started before the api applied the schema is not ready and
// starts no role until it is; then it becomes ready by itself.
func TestWorkerWaitsForTheSchema(t *testing.T) {
	t.Parallel()
	pool, dbURL := testdb.Empty(t)
	cfg := config{
		DatabaseURL: dbURL, DBMaxConns: 5, AMQPURL: testbroker.New(t), HTTPAddr: "127.0.0.1:0",
		WorkerRoles: knownRoles, RelayBatchSize: 100, RelayPollInterval: 100 * time.Millisecond, RelayLanes: 1,
		RelayPartitionShare: 0.5, ConsumerPrefetch: 10, DeliveryLimit: broker.DefaultDeliveryLimit,
		DeclareTopology: "true", StartupTimeout: 10 * time.Second, ShutdownTimeout: 5 * time.Second,
	}
	require.NoError(t, cfg.validate())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	cfg.HTTPAddr = ln.Addr().String()
	require.NoError(t, ln.Close())
	var logs lockedBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, slog.New(slog.NewJSONHandler(&logs, nil))) }()
	defer func() {
		cancel()
		require.NoError(t, <-done)
	}()

	readyz := func() (int, string) {
		resp, err := http.Get("http://" + cfg.HTTPAddr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	require.Eventually(t, func() bool {
		code, body := readyz()
		return code == http.StatusServiceUnavailable && strings.Contains(body, "schema")
	}, 10*time.Second, 20*time.Millisecond)
	time.Sleep(1500 * time.Millisecond) // more than one look
	require.Equal(t, 1, strings.Count(logs.String(), "waiting for the database schema"), "said once: %s", logs.String())
	require.NotContains(t, logs.String(), "does not exist", "no role ran against the missing tables")

	_, err = migrate.Up(context.Background(), pool)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		code, _ := readyz()
		return code == http.StatusOK
	}, 15*time.Second, 50*time.Millisecond, "not ready once the schema is applied: %s", logs.String())
	require.Contains(t, logs.String(), `"pending_migrations":`)
	require.Contains(t, logs.String(), "database schema applied")
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
