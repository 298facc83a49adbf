package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/platform/syncbuf"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
	"github.com/catacloud/epoch/internal/testkit/testdb"
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
	queues := []string{broker.Unsubscribed}
	for _, name := range remoteSubscribers.Names() {
		queues = append(queues, broker.QueueName(name), broker.DeadQueueName(name))
	}
	for _, q := range queues {
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
	var logs syncbuf.Buffer
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

// loop is a stand-in for a role or the server: it runs until its context
// ends, takes a moment to stop (so a supervisor that did not wait for it
// would return first), and records that it stopped.
type loop struct{ stopped atomic.Bool }

func (l *loop) run(ctx context.Context) error {
	<-ctx.Done()
	time.Sleep(50 * time.Millisecond)
	l.stopped.Store(true)
	return nil
}

// lastRole is the role setupSupervisor runs as given.
var lastRole = knownRoles[len(knownRoles)-1]

// setupSupervisor gives a supervisor whose server and every role but the
// last are stand-ins, plus the last role (lastRole) given.
func setupSupervisor(last func(context.Context) error) (supervisor, []*loop) {
	server := &loop{}
	others := []*loop{server}
	var roles []role
	for _, name := range knownRoles[:len(knownRoles)-1] {
		l := &loop{}
		others = append(others, l)
		roles = append(roles, role{name, l.run})
	}
	return supervisor{
		serve:           server.run,
		waitForSchema:   func(context.Context) error { return nil },
		roles:           append(roles, role{lastRole, last}),
		shutdownTimeout: 5 * time.Second,
		logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, others
}

// A role that fails ends the worker: run returns its error, after the
// other roles and the server were stopped and waited for.
func TestAFailingRoleEndsTheWorker(t *testing.T) {
	t.Parallel()
	failure := errors.New("queue deleted")
	s, others := setupSupervisor(func(context.Context) error {
		time.Sleep(20 * time.Millisecond)
		return failure
	})
	err := s.run(context.Background())
	require.ErrorIs(t, err, failure)
	require.ErrorContains(t, err, lastRole+": ")
	for _, l := range others {
		require.True(t, l.stopped.Load(), "run returned before every loop stopped")
	}
}

// A role that returns while the worker runs is as good as failed: left
// alone, the worker would run on without it.
func TestARoleThatEndsByItselfEndsTheWorker(t *testing.T) {
	t.Parallel()
	s, others := setupSupervisor(func(context.Context) error { return nil })
	require.ErrorContains(t, s.run(context.Background()), lastRole+": ended while the worker runs")
	for _, l := range others {
		require.True(t, l.stopped.Load())
	}
}

// At shutdown every loop is told to stop and waited for, and run returns
// nil.
func TestShutdownWaitsForEveryLoop(t *testing.T) {
	t.Parallel()
	last := &loop{}
	s, others := setupSupervisor(last.run)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	require.NoError(t, s.run(ctx))
	for _, l := range append(others, last) {
		require.True(t, l.stopped.Load())
	}
}

// A loop that does not stop is waited for only up to the shutdown timeout;
// the error names it.
func TestALoopThatHangsIsNamedAtTheShutdownTimeout(t *testing.T) {
	t.Parallel()
	hung := make(chan struct{})
	t.Cleanup(func() { close(hung) })
	s, _ := setupSupervisor(func(context.Context) error { <-hung; return nil })
	s.shutdownTimeout = 100 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	require.ErrorContains(t, s.run(ctx), "["+lastRole+"] did not stop within the shutdown timeout")
}

// The roles start only once the schema is there: a wait for it that fails
// ends the worker before any role ran.
func TestNoRoleRunsWhenTheSchemaWaitFails(t *testing.T) {
	t.Parallel()
	var ran atomic.Bool
	s, others := setupSupervisor(func(context.Context) error { ran.Store(true); return nil })
	failure := errors.New("permission denied")
	s.waitForSchema = func(context.Context) error { return failure }
	require.ErrorIs(t, s.run(context.Background()), failure)
	require.False(t, ran.Load())
	require.True(t, others[0].stopped.Load(), "the server stopped")
}

// The whole worker: a loop of its that fails (here the wait for the
// schema, on a database whose goose table is not goose's) makes run return
// its error, and the HTTP server stops with it.
func TestWorkerEndsWhenALoopFails(t *testing.T) {
	t.Parallel()
	pool, dbURL := testdb.Empty(t)
	_, err := pool.Exec(context.Background(), "CREATE TABLE "+migrate.VersionTable+" (id integer)")
	require.NoError(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	cfg := config{
		DatabaseURL: dbURL, DBMaxConns: 5, AMQPURL: testbroker.New(t), HTTPAddr: addr,
		WorkerRoles: knownRoles, RelayBatchSize: 100, RelayPollInterval: 100 * time.Millisecond, RelayLanes: 1,
		RelayPartitionShare: 0.5, ConsumerPrefetch: 10, DeliveryLimit: broker.DefaultDeliveryLimit,
		DeclareTopology: declareAtStart, StartupTimeout: 10 * time.Second, ShutdownTimeout: 5 * time.Second,
	}
	require.NoError(t, cfg.validate())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	require.ErrorContains(t, err, "version_id")
	require.NoError(t, ctx.Err(), "ended by the failure, not the test's timeout")
	_, err = net.DialTimeout("tcp", addr, time.Second)
	require.Error(t, err, "the HTTP server still listens")
}
