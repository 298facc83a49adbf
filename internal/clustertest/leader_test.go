package clustertest_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/catacloud/epoch/internal/e2ekit"
)

// Under a steady load of uploads and deletes through both api processes,
// the node leading the subscriber queues is SIGKILLed, restarted, and then
// the node leading them next is SIGKILLed too (and restarted): every
// committed event reaches the recorder and both subscribers, each stream
// in version order at the recorder, storage and usage exact, and no
// process restarted. Each failover is timed from the kill to the next
// committed event's confirm and apply.
func TestQueueLeaderKilledThenTheNext(t *testing.T) {
	t.Parallel()
	c := useCluster(t)
	ctx := e2ekit.CtxFor(t, 4*time.Minute)
	start := time.Now()
	d := newDeployment(t, deploymentConfig{name: "leaders", amqpURL: c.amqpURL, apiManagement: apiManagement()})
	l := d.startLoad(4, 15*time.Millisecond)
	d.awaitFlow(ctx, l, 200)

	var lost []*failover
	killed := ""
	for round := range 2 {
		victim := c.leader(billingQueue)
		if st := c.leader(storageQueue); st != victim {
			t.Logf("round %d: storage's leader is %s, billing's %s: killing billing's", round, nodeName(st), nodeName(victim))
		}
		if victim == killed {
			// Leaders do not move back to a restarted node by themselves;
			// should this one lead again, the next node is the one to lose.
			victim = nodes[(slices.Index(nodes, victim)+1)%len(nodes)]
			t.Logf("round %d: the restarted node leads %s again: killing %s instead", round, billingQueue, nodeName(victim))
		}
		before := l.commands.Load()
		killAt := c.kill(victim)
		f := d.lose(c, fmt.Sprintf("kill %s (leader of %s)", nodeName(victim), billingQueue), victim, killAt)
		lost = append(lost, f)
		if round == 0 {
			c.start(victim)
			for _, q := range []string{storageQueue, billingQueue, recorderQueue} {
				c.awaitOnline(q)
			}
			t.Logf("%s back %s after the kill, %d commands meanwhile", nodeName(victim), time.Since(killAt).Round(time.Millisecond), l.commands.Load()-before)
		} else {
			// The last one rejoins while the test checks the outcome.
			c.startInBackground(victim)
		}
		killed = victim
	}
	time.Sleep(time.Second)
	l.stop()
	l.requireNoFailures(t)
	d.verify(ctx, l, slices.Concat(d.apis, d.workers))
	c.settle()
	for _, w := range d.workers {
		t.Log(logSummary(w, start))
	}
	for i, f := range lost {
		until := time.Now()
		if i+1 < len(lost) {
			until = lost[i+1].lostAt
		}
		t.Logf("failover: %s", d.report(c, f, until))
	}
	t.Logf("total %s", time.Since(start).Round(time.Millisecond))
}
