package clustertest_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/testcluster"
)

// nodes are the cluster's nodes; the script gives node i (from 1) AMQP
// port 5680+i and management port 15680+i.
var nodes = testcluster.Nodes

func nodeName(n string) string { return "rabbit_" + n + "@localhost" }

// nodeOf is the letter of a node name (rabbit_b@localhost → b).
func nodeOf(name string) string {
	return strings.TrimSuffix(strings.TrimPrefix(name, "rabbit_"), "@localhost")
}

func mgmtURL(n string) string {
	return fmt.Sprintf("http://127.0.0.1:%d", 15681+slices.Index(nodes, n))
}

// clusterMu makes the cluster tests take turns: each kills or stops nodes
// that every vhost of the cluster lives on. The worker test, on the
// machine's own node, runs beside them.
var clusterMu sync.Mutex

// cluster is the test cluster as one test uses it: its own vhost, and the
// nodes the test took down, which its cleanup brings back.
type cluster struct {
	t       *testing.T
	vhost   string
	amqpURL string // the three nodes' URLs with the vhost, comma-separated

	mu      sync.Mutex
	down    map[string]string // node → "killed", "stopped" or "cut"
	pending sync.WaitGroup    // script runs left to finish in the background
	failed  []string          // what they said when they failed
	back    map[string]time.Time
}

// useCluster waits for the cluster's turn, requires the three nodes to
// run as one cluster (a test never starts on a cluster that an earlier
// one left broken, and never skips), and makes the test's vhost.
func useCluster(t *testing.T) *cluster {
	t.Helper()
	clusterMu.Lock()
	t.Cleanup(clusterMu.Unlock)
	c := &cluster{t: t, down: map[string]string{}, back: map[string]time.Time{}}
	c.requireWhole()
	c.newVhost()
	// Registered after the vhost's deletion, so it runs before it: the
	// nodes come back first (the deletion needs them), whatever failed.
	t.Cleanup(c.restore)
	return c
}

// admin is a management API client of node n, calls bounded by timeout.
func (c *cluster) admin(n string, timeout time.Duration) *rabbitadmin.Client {
	c.t.Helper()
	uri, err := amqp.ParseURI(nodeURLs[slices.Index(nodes, n)])
	if err != nil {
		c.t.Fatalf("node %s URL: %v", n, err)
	}
	a, err := rabbitadmin.NewAt(mgmtURL(n), uri, timeout)
	if err != nil {
		c.t.Fatalf("node %s management: %v", n, err)
	}
	return a
}

// answering returns the management client of the first node that answers
// now, or an error naming why none did. A node cut off from the others is
// not asked: until it pauses it answers from its own side of the
// partition, where it may still lead the queues.
func (c *cluster) answering(ctx context.Context) (*rabbitadmin.Client, error) {
	var errs []string
	for _, n := range nodes {
		if c.isDown(n, "cut") {
			continue
		}
		a := c.admin(n, 2*time.Second)
		if err := a.Do(ctx, http.MethodGet, "/api/overview", nil, nil); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", n, err))
			continue
		}
		return a, nil
	}
	return nil, fmt.Errorf("no node's management API answers: %s", strings.Join(errs, "; "))
}

// requireWhole fails the test unless every node answers and reports the
// three nodes running.
func (c *cluster) requireWhole() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes {
		running, err := runningSeenBy(ctx, c.admin(n, 5*time.Second))
		if err != nil {
			c.t.Fatalf("cluster node %s does not answer (is scripts/rabbitmq-cluster up running?): %v", nodeName(n), err)
		}
		if len(running) != len(nodes) {
			c.t.Fatalf("node %s sees %d running nodes of %d: %v", nodeName(n), len(running), len(nodes), running)
		}
	}
}

// runningSeenBy is the nodes (a, b, c) that a node's management API lists
// as running in its cluster.
func runningSeenBy(ctx context.Context, a *rabbitadmin.Client) ([]string, error) {
	var got []struct {
		Name    string `json:"name"`
		Running bool   `json:"running"`
	}
	if err := a.Do(ctx, http.MethodGet, "/api/nodes", nil, &got); err != nil {
		return nil, err
	}
	var running []string
	for _, g := range got {
		if g.Running {
			running = append(running, nodeOf(g.Name))
		}
	}
	return running, nil
}

// newVhost makes the test's vhost (guest may do everything on it), waits
// until each node takes connections to it, and deletes it when the test
// ends.
func (c *cluster) newVhost() {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	c.vhost = "epoch_cluster_" + hex.EncodeToString(b)
	base, err := amqp.ParseURI(nodeURLs[0])
	if err != nil {
		c.t.Fatal(err)
	}
	admin := c.admin("a", 30*time.Second)
	if _, err := admin.CreateVhost(ctx, base, c.vhost); err != nil {
		c.t.Fatalf("create vhost %s: %v", c.vhost, err)
	}
	// As a deployed cluster has it (README): the subscriber queues
	// dead-letter at least once.
	if err := admin.PutPolicy(ctx, rabbitadmin.Policy{
		Vhost: c.vhost, Name: broker.DeadLetterPolicyName, Pattern: broker.DeadLetterPolicyPattern(subscribers.Movable().Names()),
		ApplyTo: "queues", Definition: broker.DeadLetterPolicyDefinition(),
	}); err != nil {
		c.t.Fatalf("dead-letter policy on %s: %v", c.vhost, err)
	}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a, err := c.answering(ctx)
		if err == nil {
			err = a.DeleteVhost(ctx, c.vhost)
		}
		if err != nil {
			c.t.Logf("delete vhost %s: %v", c.vhost, err)
		}
	})
	var urls []string
	for _, u := range nodeURLs {
		uri, err := amqp.ParseURI(u)
		if err != nil {
			c.t.Fatal(err)
		}
		uri.Vhost = c.vhost
		if err := rabbitadmin.WaitAMQP(ctx, uri.String(), 30*time.Second); err != nil {
			c.t.Fatalf("vhost %s: %v", c.vhost, err)
		}
		urls = append(urls, uri.String())
	}
	c.amqpURL = strings.Join(urls, ",")
}

func (c *cluster) isDown(n, how string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.down[n] == how
}

func (c *cluster) setDown(n, how string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if how == "" {
		delete(c.down, n)
	} else {
		c.down[n] = how
	}
}

// background runs scripts/rabbitmq-cluster with args while the test goes
// on; settle waits for it.
func (c *cluster) background(args ...string) {
	c.pending.Add(1)
	go func() {
		defer c.pending.Done()
		start := time.Now()
		out, err := clusterScript(3*time.Minute, args...)
		msg := fmt.Sprintf("scripts/rabbitmq-cluster %s (%s): %s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
		c.mu.Lock()
		defer c.mu.Unlock()
		if err != nil {
			c.failed = append(c.failed, fmt.Sprintf("%s: %v", msg, err))
			return
		}
		if args[0] == "start" || args[0] == "start_app" {
			c.back[args[1]] = time.Now()
		}
		c.t.Log(msg)
	}()
}

// settle waits for the script runs left in the background and fails the
// test if one failed.
func (c *cluster) settle() {
	c.t.Helper()
	c.pending.Wait()
	c.mu.Lock()
	failed := c.failed
	c.failed = nil
	c.mu.Unlock()
	if len(failed) > 0 {
		c.t.Fatalf("%s", strings.Join(failed, "\n"))
	}
}

// kill SIGKILLs node n's VM (scripts/rabbitmq-cluster kill n) and returns
// the moment the VM was seen gone. The script's own wait for its end
// polls once a second, so it goes on in the background: the failover is
// timed from the kill, not from the script's return.
func (c *cluster) kill(n string) time.Time {
	c.t.Helper()
	pid := beamPid(c.t, n)
	c.setDown(n, "killed")
	c.background("kill", n)
	deadline := time.Now().Add(15 * time.Second)
	for processAlive(pid) {
		if time.Now().After(deadline) {
			c.t.Fatalf("%s (beam %d) still alive 15s after scripts/rabbitmq-cluster kill %s", nodeName(n), pid, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Now()
}

// stopApp begins a graceful stop of node n's broker (its VM stays up) and
// returns when it began; the stop goes on in the background.
func (c *cluster) stopApp(n string) time.Time {
	c.t.Helper()
	c.setDown(n, "stopped")
	at := time.Now()
	c.background("stop_app", n)
	return at
}

// startApp starts node n's broker again and waits until it is back in the
// cluster.
func (c *cluster) startApp(n string) {
	c.t.Helper()
	c.settle()
	c.setDown(n, "")
	c.background("start_app", n)
	c.settle()
}

// backAt is when node n was last back in the cluster after a start (zero:
// never); settle first.
func (c *cluster) backAt(n string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.back[n]
}

// start starts killed nodes, all at once, and waits until each is back in
// the cluster. Nodes that all went down together wait for each other's
// tables as they boot, so one at a time would not come up.
func (c *cluster) start(ns ...string) {
	c.t.Helper()
	c.startInBackground(ns...)
	c.settle()
}

// startInBackground is start that returns at once; settle waits for it.
func (c *cluster) startInBackground(ns ...string) {
	c.t.Helper()
	c.settle()
	for _, n := range ns {
		c.setDown(n, "")
		c.background("start", n)
	}
}

// beamPid is the pid of node n's VM.
func beamPid(t *testing.T, n string) int {
	t.Helper()
	pid, err := testcluster.BeamPid(n)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// processAlive: pid runs and is not a zombie waiting for its parent.
func processAlive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces, the state follows its ")".
	i := strings.LastIndexByte(string(stat), ')')
	return i > 0 && i+2 < len(stat) && stat[i+2] != 'Z'
}

// restore brings back what the test took down and left down.
func (c *cluster) restore() {
	c.pending.Wait()
	c.mu.Lock()
	var killed, stopped, cut []string
	for n, how := range c.down {
		switch how {
		case "killed":
			killed = append(killed, n)
		case "cut":
			cut = append(cut, n)
		default:
			stopped = append(stopped, n)
		}
	}
	c.mu.Unlock()
	for _, n := range cut {
		c.awaitRejoined(n, c.heal(n))
	}
	for _, n := range stopped {
		c.startApp(n)
	}
	if len(killed) > 0 {
		c.start(killed...)
	}
	c.settle()
}

// queueState is what the management API says of a quorum queue.
type queueState struct {
	Node    string   `json:"node"` // a classic queue's home
	Leader  string   `json:"leader"`
	Members []string `json:"members"`
	Online  []string `json:"online"`
}

// queue asks a node that answers about queue of the test's vhost.
func (c *cluster) queue(ctx context.Context, queue string) (queueState, error) {
	a, err := c.answering(ctx)
	if err != nil {
		return queueState{}, err
	}
	var q queueState
	err = a.Do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(c.vhost)+"/"+url.PathEscape(queue), nil, &q)
	return q, err
}

// leader is the node (a, b or c) that leads queue now.
func (c *cluster) leader(queue string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := c.queue(ctx, queue)
	if err != nil || q.Leader == "" {
		c.t.Fatalf("leader of %s: %v (%+v)", queue, err, q)
	}
	return nodeOf(q.Leader)
}

// home is the node (a, b or c) a classic queue of the test's vhost lives
// on, or "" when the management API does not show it: it answers 404 for
// a classic queue whose home node is down.
func (c *cluster) home(queue string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := c.queue(ctx, queue)
	if err != nil || q.Node == "" {
		return ""
	}
	return nodeOf(q.Node)
}

// leaderOtherThan waits at most within until queue has a leader that is
// not node n, and returns how long that took from since. It does not
// touch the test, so it may run beside the test's own waits.
func (c *cluster) leaderOtherThan(queue, n string, since time.Time, within time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(within)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		q, err := c.queue(ctx, queue)
		cancel()
		if err == nil && q.Leader != "" && nodeOf(q.Leader) != n && slices.Contains(q.Online, q.Leader) {
			return time.Since(since), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s has no leader but %s %s after %s: %+v (%v)", queue, n, within, since.Format(time.StampMilli), q, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// awaitQueuesOnline waits until every member of the subscriber queues and
// the recorder's is online again.
func (c *cluster) awaitQueuesOnline() {
	c.t.Helper()
	for _, q := range []string{storageQueue, billingQueue, recorderQueue} {
		c.awaitOnline(q)
	}
}

// awaitOnline waits until every member of queue is online again (a
// restarted node has rejoined its queues).
func (c *cluster) awaitOnline(queue string) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		q, err := c.queue(ctx, queue)
		cancel()
		if err == nil && len(q.Members) == len(nodes) && len(q.Online) == len(nodes) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not every member online within 60s: %+v (%v)", queue, q, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
