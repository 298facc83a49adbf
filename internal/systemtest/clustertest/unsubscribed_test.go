package clustertest_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// The job events are bound to no subscriber queue, only to the classic
// queue of unsubscribed events (and here to the recorder's quorum queue).
// That queue lives on one node; with that node SIGKILLed, job commands go
// on: the broker confirms a message whose queue is down (that queue's copy
// is lost, and it is only a window for the console), so each job event
// reaches the recorder while the node is still down and the outbox does
// not hold the job streams' partitions back. Then the usual outcome of the
// file load is checked.
func TestUnsubscribedQueueNodeKilled(t *testing.T) {
	t.Parallel()
	r := startSteady(t, "unsubscribed", 4*time.Minute)
	c, d := r.c, r.d

	victim := c.home(broker.Unsubscribed)
	if victim == "" {
		t.Fatalf("the management API does not say where %s lives", broker.Unsubscribed)
	}
	killAt := c.kill(victim)
	u := d.newUser("jobs")
	var ids []string
	for i := range 20 {
		api := d.apis[i%len(d.apis)]
		a := e2ekit.Call(t, d.http, api.Addr, http.StatusCreated, "POST", "/v1/jobs", u.token, map[string]string{"name": fmt.Sprintf("job-%d", i)})
		ids = append(ids, eventstore.ID(uuid.MustParse(a.JSON(t)["id"].(string)), 1).String())
	}
	// Within the time the other failovers get, and before the node is
	// started again.
	e2ekit.Eventually(t, time.Until(killAt.Add(failoverWait)), fmt.Sprintf("job events relayed while %s is down", nodeName(victim)), d.rec.HasAll(ids))
	t.Logf("%d job events relayed %s after %s (where %s lives) was killed", len(ids), time.Since(killAt).Round(time.Millisecond), nodeName(victim), broker.Unsubscribed)
	c.start(victim)
	c.awaitQueuesOnline()
	r.finish()
	t.Logf("total %s", time.Since(r.start).Round(time.Millisecond))
}
