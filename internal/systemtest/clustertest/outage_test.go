package clustertest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// outage is how long the whole cluster stays down.
const outage = 30 * time.Second

// Under a steady load, all three nodes are SIGKILLed and stay down for
// 30 s, then start again: the api keeps taking commands meanwhile, the
// outbox holds every event committed while no node ran (none of them
// leaves it before the nodes are back), and afterwards the relays and the
// consumers recover by themselves, with no process restarted, and nothing
// is lost: every event at the recorder and both subscribers, each stream
// in order, storage and usage exact.
func TestWholeClusterDown(t *testing.T) {
	t.Parallel()
	r := startSteady(t, "outage", 4*time.Minute)
	c, ctx, d, l := r.c, r.ctx, r.d, r.l

	for _, n := range nodes {
		c.kill(n)
	}
	downAt := time.Now()
	// Nothing can be confirmed from here on (no node runs), so whatever
	// is committed after this position must stay in the outbox.
	var last int64
	require.NoError(t, d.pool.QueryRow(ctx, "SELECT coalesce(max(position), 0) FROM events").Scan(&last))
	before := l.commands.Load()
	time.Sleep(time.Until(downAt.Add(outage)))

	// An outbox row is a run of consecutive positions, each an event.
	var committed, held, backlog int
	require.NoError(t, d.pool.QueryRow(ctx, `
		SELECT (SELECT count(*) FROM events WHERE position > $1),
		       (SELECT coalesce(sum(last_position - greatest(position, $1 + 1) + 1), 0) FROM outbox WHERE last_position > $1),
		       (SELECT coalesce(sum(last_position - position + 1), 0) FROM outbox)`, last).Scan(&committed, &held, &backlog))
	t.Logf("after %s without a node: %d commands answered, %d events committed, %d of them in the outbox, %d in all",
		time.Since(downAt).Round(time.Millisecond), l.commands.Load()-before, committed, held, backlog)
	require.Positive(t, committed, "commands must keep landing while the broker is away")
	require.Equal(t, committed, held, "every event committed while no node ran is still in the outbox")
	for _, w := range d.workers {
		require.False(t, w.Exited(), "%s exited while the cluster was down: %v", w.Name, w.Err())
	}

	startAt := time.Now()
	c.start(nodes...)
	back := time.Since(startAt)
	res, ok := d.probeNext(ctx, startAt, 60*time.Second)
	require.True(t, ok, "the next event after the restart not confirmed and applied within 60s (confirmed after %s)", res.confirmed)
	line := fmt.Sprintf("all nodes killed, down %s; started again in %s; next event confirmed %s and applied %s after the start began",
		startAt.Sub(downAt).Round(time.Millisecond), back.Round(time.Millisecond),
		res.confirmed.Round(time.Millisecond), res.applied.Round(time.Millisecond))
	t.Log(line)
	r.finish()
	t.Log("failover: " + line)
	t.Logf("total %s", time.Since(r.start).Round(time.Millisecond))
}
