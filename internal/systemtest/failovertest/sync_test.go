package failovertest_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testpgpair"
)

// TestSynchronousFailover: under a steady load of commands, the standby's
// acks to the primary are cut, so that the COMMITs in flight reach the
// standby while the primary never learns it and never answers them; the
// primary's postmaster is SIGKILLed, and the standby promoted a second
// later. Every command answered 2xx is in the new primary and billed
// exactly once, the gap answers 503 (never 500), each retry with its
// Idempotency-Key lands once (those whose COMMIT had reached the standby
// too), every process serves again within 10 s of the promotion without
// a restart, per-stream order holds at an outside consumer, and a
// min_position read after the promotion answers.
func TestSynchronousFailover(t *testing.T) {
	p := usePair(t, testpgpair.Sync)
	ctx := e2ekit.CtxFor(t, 5*time.Minute)
	d := newDeployment(t, p, "sync")
	l := d.startLoad(4, 15*time.Millisecond)
	d.awaitFlow(ctx, l, 200)

	// COMMITs wait for the standby's flush position, which no longer
	// comes: what the load sends now hangs, stored on both servers.
	p.cut("acks")
	time.Sleep(time.Second)
	killAt := p.kill()
	time.Sleep(time.Second)
	promotedAt := p.promote()
	p.heal()

	firstOK, perAPI := d.awaitAPIsBack(l, promotedAt)
	firstConfirm, perWorker := d.awaitWorkersBack(promotedAt)
	t.Logf("every process listening on the new primary %s after the promotion", d.awaitListening(ctx, promotedAt).Round(time.Millisecond))
	t.Logf("figures (synchronous): first 2xx command %s after the promotion (%v); relays' first confirm %s after it (%s)",
		firstOK.Round(time.Millisecond), perAPI, firstConfirm.Round(time.Millisecond), perWorker)

	// A min_position read of an event committed after the promotion.
	u := d.newUser("after-promotion")
	_, pos := d.uploadOne(&u, "after-promotion")
	d.minPositionRead(&u, pos)

	time.Sleep(2 * time.Second)
	l.stop()
	events := e2ekit.LoadEvents(t, ctx, d.pool)
	unavailable, replayed := d.verifyCommands(l, events, promotedAt)
	require.Positive(t, unavailable, "no command answered 503: the failover left no gap to answer it in")
	require.Positive(t, replayed, "no command whose COMMIT had reached the standby was answered 503 and retried")
	t.Logf("%d commands; %d tries answered 503 (the kill came %s before the promotion); %d commands answered 503 had committed before the promotion and landed once on their retry",
		len(l.snapshot()), unavailable, promotedAt.Sub(killAt).Round(time.Millisecond), replayed)

	d.drained(ctx, events)
	require.Len(t, e2ekit.LoadEvents(t, ctx, d.pool), len(events), "events committed after the load stopped")
	distinct, _ := d.rec.Stats()
	require.Equal(t, len(events), distinct, "the recorder got messages that are not in the new primary")
	d.streamOrder(events)
	d.exact(ctx, events, append(l.users, &u))
	var dead int
	require.NoError(t, d.pool.QueryRow(ctx, "SELECT count(*) FROM dead_letters").Scan(&dead))
	require.Zero(t, dead, "dead letters")
	d.requireAlive()
	d.logsOfTheOutage(killAt)
}
