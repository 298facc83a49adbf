package clustertest_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/catacloud/epoch/internal/e2ekit"
)

// Under a steady load, the broker of the node leading the subscriber
// queues is stopped gracefully (stop_app: its clients are disconnected and
// its queues hand over leadership) and started again: nothing is lost and
// nothing is billed twice (each file event applied once per subscriber,
// one billing row per file, usage exact), and no process restarted.
func TestLeaderStoppedGracefully(t *testing.T) {
	t.Parallel()
	c := useCluster(t)
	ctx := e2ekit.CtxFor(t, 4*time.Minute)
	start := time.Now()
	d := newDeployment(t, deploymentConfig{name: "graceful", amqpURL: c.amqpURL, apiManagement: apiManagement()})
	l := d.startLoad(4, 15*time.Millisecond)
	d.awaitFlow(ctx, l, 200)

	victim := c.leader(billingQueue)
	stopAt := c.stopApp(victim)
	f := d.lose(c, fmt.Sprintf("stop_app %s (leader of %s)", nodeName(victim), billingQueue), victim, stopAt)
	c.startApp(victim)
	for _, q := range []string{storageQueue, billingQueue, recorderQueue} {
		c.awaitOnline(q)
	}
	time.Sleep(time.Second)
	l.stop()
	l.requireNoFailures(t)
	d.verify(ctx, l, slices.Concat(d.apis, d.workers))
	for _, w := range d.workers {
		t.Log(logSummary(w, start))
	}
	t.Logf("failover: %s", d.report(c, f, time.Now()))
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
