package clustertest_test

import (
	"fmt"
	"slices"
	"testing"
	"time"
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
	r := startSteady(t, "leaders", 4*time.Minute)
	c, d, l := r.c, r.d, r.l

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
			c.awaitQueuesOnline()
			t.Logf("%s back %s after the kill, %d commands meanwhile", nodeName(victim), time.Since(killAt).Round(time.Millisecond), l.commands.Load()-before)
		} else {
			// The last one rejoins while the test checks the outcome.
			c.startInBackground(victim)
		}
		killed = victim
	}
	r.finish()
	c.settle()
	for i, f := range lost {
		until := time.Now()
		if i+1 < len(lost) {
			until = lost[i+1].lostAt
		}
		t.Logf("failover: %s", d.report(c, f, until))
	}
	t.Logf("total %s", time.Since(r.start).Round(time.Millisecond))
}
