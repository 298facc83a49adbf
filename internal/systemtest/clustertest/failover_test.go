package clustertest_test

import (
	"fmt"
	"strings"
	"time"

	"github.com/catacloud/epoch/internal/delivery/broker"
)

const (
	// failoverWait bounds the wait, after a node is lost, for the next
	// event committed to be confirmed and applied while the node stays
	// down.
	failoverWait = 20 * time.Second
	// downFor is how long a lost node stays down at least: after the
	// failover, long enough that a relay channel still failing every
	// publish (nacked until its node returns) shows in the counts.
	downFor = 5 * time.Second
	// electionWait bounds the wait, after a node is lost, for the queue's
	// leader to be seen on another node.
	electionWait = 30 * time.Second
)

// apiManagement points each api's queue depths at a node of the cluster.
func apiManagement() []string {
	return []string{
		strings.Replace(mgmtURL("a"), "http://", "http://guest:guest@", 1),
		strings.Replace(mgmtURL("b"), "http://", "http://guest:guest@", 1),
	}
}

// failover is one node lost, as the test saw it.
type failover struct {
	what   string
	node   string
	lostAt time.Time
	// election is the time until the queue showed a leader on another
	// node; probe the next event's confirm and apply.
	election time.Duration
	next     probe
	probe    probeResult
}

// lose measures one node lost at lostAt: the next event (committed right
// then) until it is confirmed and applied, and the queue's new leader; the
// node stays down until downFor has passed.
func (d *deployment) lose(c *cluster, what, node string, lostAt time.Time) *failover {
	d.t.Helper()
	return d.loseWithin(c, what, node, lostAt, failoverWait)
}

// loseWithin is lose with a bound of its own for the next event's confirm
// and apply, from lostAt (and for the new leader, if longer than
// electionWait).
func (d *deployment) loseWithin(c *cluster, what, node string, lostAt time.Time, within time.Duration) *failover {
	d.t.Helper()
	f := &failover{what: what, node: node, lostAt: lostAt, next: d.commitProbe()}
	// The new leader is watched for beside the next event: the management
	// API can take seconds to answer while a node is unreachable (rather
	// than down), and the event's clock must not wait for it.
	type elected struct {
		took time.Duration
		err  error
	}
	election := make(chan elected, 1)
	go func() {
		took, err := c.leaderOtherThan(billingQueue, node, lostAt, max(electionWait, within))
		election <- elected{took, err}
	}()
	var ok bool
	f.probe, ok = d.awaitProbe(d.t.Context(), f.next, lostAt, time.Until(lostAt.Add(within)), probeResult{})
	e := <-election
	if e.err != nil {
		d.t.Fatal(e.err)
	}
	f.election = e.took
	if home := c.home(broker.Unsubscribed); home == node || home == "" {
		f.what += " (home of " + broker.Unsubscribed + " too)"
	}
	if ok {
		d.t.Logf("%s: new leader after %s; next event confirmed %s and applied %s after it",
			what, f.election.Round(time.Millisecond), f.probe.confirmed.Round(time.Millisecond), f.probe.applied.Round(time.Millisecond))
	} else {
		confirmed := "not confirmed"
		if f.probe.confirmed > 0 {
			confirmed = fmt.Sprintf("confirmed after %s", f.probe.confirmed.Round(time.Millisecond))
		}
		w := d.relayWindow(lostAt, time.Now())
		for _, p := range d.workers {
			d.t.Log(logSummary(p, lostAt))
			d.t.Log(d.relayStacks(p))
		}
		d.t.Fatalf("%s: new leader after %s, but the next event was not applied by both subscribers within %s while the node was down (%s); "+
			"the relays failed %v publishes per worker meanwhile", what, f.election.Round(time.Millisecond), within, confirmed, w.failed)
	}
	time.Sleep(time.Until(lostAt.Add(downFor)))
	return f
}

// report says how the failover went, once the node is back: its times,
// and what the relays failed to publish meanwhile (each failed publish is
// sent again later). Failures past the next event's apply, until the node
// came back, would be a relay channel still nacked after the election.
// Failures after the node was back are counted until until.
func (d *deployment) report(c *cluster, f *failover, until time.Time) string {
	back := c.backAt(f.node)
	applied := f.lostAt.Add(f.probe.applied)
	during, after := d.relayWindow(f.lostAt, back), d.relayWindow(applied, back)
	later := d.relayWindow(back.Add(time.Second), until)
	last := "none"
	if !during.lastFailed.IsZero() {
		last = during.lastFailed.Sub(f.lostAt).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("%s: new leader after %s; next event confirmed %s and applied %s after it; node back after %s; "+
		"publishes failed while it was down: %v per worker (%v after the next event was applied, the last %s after the loss); "+
		"most outbox events meanwhile %d; failed after it was back %v",
		f.what, f.election.Round(time.Millisecond), f.probe.confirmed.Round(time.Millisecond), f.probe.applied.Round(time.Millisecond),
		back.Sub(f.lostAt).Round(time.Millisecond), during.failed, after.total(), last, during.maxBacklog, later.total())
}
