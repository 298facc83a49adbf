package clustertest_test

import (
	"fmt"
	"testing"
	"time"
)

// Under a steady load, the broker of the node leading the subscriber
// queues is stopped gracefully (stop_app: its clients are disconnected and
// its queues hand over leadership) and started again: nothing is lost and
// nothing is billed twice (each file event applied once per subscriber,
// one billing row per file, usage exact), and no process restarted.
func TestLeaderStoppedGracefully(t *testing.T) {
	t.Parallel()
	r := startSteady(t, "graceful", 4*time.Minute)
	c, d := r.c, r.d

	victim := c.leader(billingQueue)
	stopAt := c.stopApp(victim)
	f := d.lose(c, fmt.Sprintf("stop_app %s (leader of %s)", nodeName(victim), billingQueue), victim, stopAt)
	c.startApp(victim)
	c.awaitQueuesOnline()
	r.finish()
	t.Logf("failover: %s", d.report(c, f, time.Now()))
	t.Logf("total %s", time.Since(r.start).Round(time.Millisecond))
}
