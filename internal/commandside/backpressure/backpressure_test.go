package backpressure_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/backpressure"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// queue puts outbox rows of one event each at positions from..to.
func queue(t *testing.T, pool *pgxpool.Pool, from, to int) {
	t.Helper()
	_, err := pool.Exec(context.Background(),
		"INSERT INTO outbox (position, last_position, partition) SELECT p, p, 0 FROM generate_series($1::bigint, $2::bigint) AS p", from, to)
	require.NoError(t, err)
}

// relay deletes the oldest n rows, as a relay that confirmed them does.
func relay(t *testing.T, pool *pgxpool.Pool, n int) {
	t.Helper()
	_, err := pool.Exec(context.Background(),
		"DELETE FROM outbox WHERE position IN (SELECT position FROM outbox ORDER BY position LIMIT $1)", n)
	require.NoError(t, err)
}

func start(t *testing.T, pool *pgxpool.Pool, reg prometheus.Registerer) *backpressure.Gate {
	t.Helper()
	g, err := backpressure.New(pool, backpressure.Config{
		MaxBacklog: 100, Concurrency: 2, Interval: 10 * time.Millisecond, ProgressWindow: time.Second,
	}, slog.New(slog.NewTextHandler(io.Discard, nil)), reg)
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go g.Run(ctx)
	return g
}

// holding waits until g holds commands back (want true) or lets them go.
func holding(t *testing.T, g *backpressure.Gate, want bool, msgAndArgs ...any) {
	t.Helper()
	v := 0.0
	if want {
		v = 1
	}
	require.Eventually(t, func() bool { return testutil.ToFloat64(g.Holding()) == v }, 5*time.Second, 10*time.Millisecond, msgAndArgs...)
}

// fallBehind queues 300 events and has a relay delete the oldest ten: a
// working relay, behind.
func fallBehind(t *testing.T, pool *pgxpool.Pool, g *backpressure.Gate) {
	t.Helper()
	queue(t, pool, 1, 300)
	time.Sleep(50 * time.Millisecond)
	relay(t, pool, 10)
	holding(t, g, true)
}

// most runs n commands through g at once, each taking a moment, and
// returns how many were inside together at most.
func most(t *testing.T, g *backpressure.Gate, n int) int {
	t.Helper()
	var inside, peak atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			release, err := g.Enter(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			now := inside.Add(1)
			for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
			}
			time.Sleep(30 * time.Millisecond)
			inside.Add(-1)
			release()
		}()
	}
	wg.Wait()
	return int(peak.Load())
}

// A working relay behind by more than MaxBacklog: commands go two at a
// time, and freely again once the backlog is under half of it.
func TestGateHoldsCommandsBackWhileAWorkingRelayIsBehind(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	reg := prometheus.NewRegistry()
	g := start(t, pool, reg)
	require.Equal(t, 6, most(t, g, 6), "an empty outbox held commands back")

	fallBehind(t, pool, g)
	require.Equal(t, 2, most(t, g, 6))

	relay(t, pool, 200) // 90 left: under MaxBacklog, not yet under half of it
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, 2, most(t, g, 6), "let go above half the backlog")
	relay(t, pool, 50) // 40 left
	holding(t, g, false)
	require.Equal(t, 6, most(t, g, 6))
}

// No relay deletes anything (none runs, or RabbitMQ is away): holding
// commands back would not drain the outbox, so they run freely.
func TestGateDoesNotWaitForARelayThatDoesNothing(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	g := start(t, pool, nil)
	queue(t, pool, 1, 300)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, 0.0, testutil.ToFloat64(g.Holding()))
	require.Equal(t, 6, most(t, g, 6))

	// A relay that stops: held back while it worked, free a window later.
	relay(t, pool, 10)
	holding(t, g, true)
	holding(t, g, false, "still held back a window after the relay stopped")
}

// A command waiting for its turn gives up with its context.
func TestEnterGivesUpWithItsContext(t *testing.T) {
	t.Parallel()
	pool, _ := testdb.New(t)
	g := start(t, pool, nil)
	fallBehind(t, pool, g)
	r1, err := g.Enter(context.Background())
	require.NoError(t, err)
	defer r1()
	r2, err := g.Enter(context.Background())
	require.NoError(t, err)
	defer r2()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = g.Enter(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
}

func TestNilGateAdmitsEverything(t *testing.T) {
	t.Parallel()
	var g *backpressure.Gate
	release, err := g.Enter(context.Background())
	require.NoError(t, err)
	release()
}

func TestBadConfigIsRefused(t *testing.T) {
	t.Parallel()
	_, err := backpressure.New(nil, backpressure.Config{MaxBacklog: -1}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	require.Error(t, err)
}
