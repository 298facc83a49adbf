package clustertest_test

import (
	"context"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

const (
	// relayLockKey is the first key of the relay's partition advisory
	// locks (internal/delivery/outbox), spelled out: the test reads them from
	// pg_locks as an operator would.
	relayLockKey = 0x0e0c0b01
	// takeoverBound is how soon the surviving worker must have relayed
	// what the killed one held. Postgres ends the killed worker's
	// transactions, and with them its partition locks, as soon as its
	// connections close, and the survivor's relay looks at the outbox on
	// every commit's wake-up and every 100 ms besides; a few seconds leave
	// room for a shared two-core machine.
	takeoverBound = 5 * time.Second
)

// frozen is how long the worker to be killed stays stopped (SIGSTOP)
// first, holding its partitions while commands go on landing in them: a
// worker that hangs, then dies. It stays so up to frozenMax, until its
// partitions have rows.
const (
	frozen    = 2 * time.Second
	frozenMax = 15 * time.Second
)

// Two workers relay and consume under a steady load. One is frozen
// (SIGSTOP) in the middle of a relay cycle, holding outbox partitions that
// the commands go on writing to, and then SIGKILLed. The other, left
// running, takes those partitions over: every row they had at the kill is
// relayed within takeoverBound, the backlog drains, and nothing is lost
// (the killed worker's unacked deliveries reach the survivor's
// subscribers). This needs no cluster: it runs on the machine's own
// broker, in a vhost of its own, beside the cluster tests.
func TestWorkerKilledSurvivorTakesOver(t *testing.T) {
	t.Parallel()
	ctx := e2ekit.CtxFor(t, 3*time.Minute)
	start := time.Now()
	d := newDeployment(t, deploymentConfig{name: "takeover", amqpURL: testbroker.New(t)})
	l := d.startLoad(4, 10*time.Millisecond)
	d.awaitFlow(ctx, l, 200)
	victim, survivor := d.workers[0], d.workers[1]

	// Both workers stopped for a moment first, so the outbox has rows in
	// many partitions; then the victim alone goes on until a cycle of its
	// holds several of them, and is frozen there. Catching it inside a
	// cycle takes a few tries; past them, one partition will do.
	for attempt := 0; ; attempt++ {
		require.NoError(t, survivor.Signal(syscall.SIGSTOP))
		require.NoError(t, victim.Signal(syscall.SIGSTOP))
		time.Sleep(300 * time.Millisecond)
		require.NoError(t, victim.Signal(syscall.SIGCONT))
		for deadline := time.Now().Add(500 * time.Millisecond); time.Now().Before(deadline); {
			if held, _, _ := d.heldPartitions(ctx, victim.Name); len(held) >= 4 {
				break
			}
		}
		require.NoError(t, victim.Signal(syscall.SIGSTOP))
		held, _, _ := d.heldPartitions(ctx, victim.Name)
		if len(held) >= 4 || attempt >= 10 && len(held) > 0 {
			break
		}
		require.Less(t, attempt, 30, "%s never held an outbox partition", victim.Name)
		require.NoError(t, victim.Signal(syscall.SIGCONT))
		require.NoError(t, survivor.Signal(syscall.SIGCONT))
		time.Sleep(100 * time.Millisecond)
	}
	require.NoError(t, survivor.Signal(syscall.SIGCONT))
	time.Sleep(frozen)
	held, heldUpTo, heldRows := d.heldPartitions(ctx, victim.Name)
	// A partition or two may go a while without a command of their own
	// (the commands' new streams hash anywhere, and backpressure slows them
	// while the victim holds rows back): it stays frozen until they have.
	for deadline := time.Now().Add(frozenMax - frozen); heldRows == 0 && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		held, heldUpTo, heldRows = d.heldPartitions(ctx, victim.Name)
	}
	backlog := e2ekit.OutboxBacklog(t, ctx, d.pool)
	victim.Kill()
	killAt := time.Now()
	require.True(t, victim.KilledBySIGKILL(), "%s ended otherwise: %v", victim.Name, victim.Err())
	require.Positive(t, heldRows, "the frozen worker's partitions got no rows in %s", frozenMax)
	t.Logf("%s SIGKILLed after %s frozen, holding %d partitions with %d outbox rows (up to position %d); backlog %d events",
		victim.Name, frozen, len(held), heldRows, heldUpTo, backlog)

	var took time.Duration
	e2ekit.Eventually(t, takeoverBound, "the survivor relays the killed worker's partitions", func() (bool, string) {
		var left int
		require.NoError(t, d.pool.QueryRow(ctx, `SELECT count(*) FROM outbox WHERE partition = ANY($1) AND position <= $2`, held, heldUpTo).Scan(&left))
		took = time.Since(killAt)
		return left == 0, fmt.Sprintf("%d of those rows still in the outbox", left)
	})
	line := fmt.Sprintf("%s killed: %s relayed the %d rows of its %d partitions %s after the kill (bound %s)",
		victim.Name, survivor.Name, heldRows, len(held), took.Round(time.Millisecond), takeoverBound)
	t.Log(line)
	time.Sleep(time.Second)
	l.stop()
	l.requireNoFailures(t)
	d.verify(ctx, l, slices.Concat(d.apis, []*e2ekit.Proc{survivor}))
	t.Log("takeover: " + line)
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}

// heldPartitions reads the outbox partitions that the worker whose
// sessions carry application name app holds locked, and the rows they
// have: how many, and the last event position among them.
func (d *deployment) heldPartitions(ctx context.Context, app string) (partitions []int16, upTo int64, rows int) {
	d.t.Helper()
	require.NoError(d.t, d.pool.QueryRow(ctx, `
		WITH held AS (
			SELECT DISTINCT l.objid::int::smallint AS partition
			FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
			WHERE l.locktype = 'advisory' AND l.classid = $1::int::oid AND l.objsubid = 2 AND l.granted
			  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND a.application_name = $2
		)
		SELECT coalesce((SELECT array_agg(partition ORDER BY partition) FROM held), '{}'),
		       coalesce(max(o.last_position), 0), count(o.*)
		FROM outbox o WHERE o.partition IN (SELECT partition FROM held)`, relayLockKey, app).Scan(&partitions, &upTo, &rows))
	return partitions, upTo, rows
}
