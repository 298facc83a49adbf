package main

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/testcluster"
)

// clusterNodeURLs are the nodes scripts/rabbitmq-cluster runs (rabbit_a,
// b and c@localhost), as its `up` prints them. The bench looks at them
// first to tell whether the cluster is already up, which `up` would take
// several CLI calls to find out.
var clusterNodeURLs = []string{
	"amqp://guest:guest@127.0.0.1:5681/",
	"amqp://guest:guest@127.0.0.1:5682/",
	"amqp://guest:guest@127.0.0.1:5683/",
}

// clusterManagementOffset is how far above a node's AMQP port the script
// puts its management API (5681 → 15681).
const clusterManagementOffset = 10000

// cluster is the three-node cluster as the bench uses it: the lock held,
// a vhost of the bench's own on it with the dead-letter policy a deployment
// sets, and the topology declared there as the worker declares it. close undoes all of it, and stops the cluster only
// when this run started it.
type cluster struct {
	log     *slog.Logger
	root    string
	lock    *os.File
	started bool // no node answered before: this run brought it up

	mgmt  *rabbitadmin.Client
	vhost string
	urls  []string // each node on the bench's vhost, rabbit_a first
	url   string   // urls comma-separated: the workers' EPOCH_AMQP_URL
}

// clusterSubscriptions are the queues the worker declares (its
// remoteSubscribers): the bench declares them first, so their leaders sit
// on the node it declares from, and the worker's own declare finds them
// identical.
func clusterSubscriptions() []broker.Subscription {
	return subscribers.Movable().Subscriptions()
}

// openCluster takes the cluster lock (waiting for whoever holds it), brings
// the cluster up when it is not, and makes the bench's vhost and topology
// on it. On error it has already released what it took.
func openCluster(ctx context.Context, log *slog.Logger, root string) (_ *cluster, err error) {
	c := &cluster{log: log, root: root}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	if c.lock, err = testcluster.Lock(ctx, func() {
		c.log.Info("waiting for the cluster lock (another run or test is using the cluster)", "lock", testcluster.LockPath)
	}); err != nil {
		return nil, err
	}
	nodes := clusterNodeURLs
	answering := 0
	for _, u := range nodes {
		if nodeAnswers(u) {
			answering++
		}
	}
	if answering < len(nodes) {
		// Started only from nothing counts as ours: a node or two that
		// answered belong to a cluster somebody else left up.
		c.started = answering == 0
		if nodes, err = c.up(ctx); err != nil {
			return nil, err
		}
	}
	base, err := amqp.ParseURI(nodes[0])
	if err != nil {
		return nil, fmt.Errorf("cluster URL: %w", err)
	}
	mgmtURL := "http://" + net.JoinHostPort(base.Host, strconv.Itoa(base.Port+clusterManagementOffset))
	if c.mgmt, err = rabbitadmin.NewAt(mgmtURL, base, 30*time.Second); err != nil {
		return nil, err
	}
	// Not rabbitadmin's Ready: when nothing answers it enables the
	// management plugin on the machine's own broker, which is not ours.
	if err := waitFor(ctx, 60*time.Second, 250*time.Millisecond, func() (bool, error) {
		return c.mgmt.Do(ctx, http.MethodGet, "/api/overview", nil, nil) == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("cluster management API at %s: %w", mgmtURL, err)
	}
	name := "epoch_bench_" + randomHex(6)
	c.vhost = name // set first: close deletes it even if it came up only in part
	if _, err := c.mgmt.CreateVhost(ctx, base, name); err != nil {
		return nil, fmt.Errorf("cluster vhost: %w", err)
	}
	// A vhost is the cluster's, but each node starts it on its own time.
	for _, n := range nodes {
		u, err := amqp.ParseURI(n)
		if err != nil {
			return nil, fmt.Errorf("cluster URL: %w", err)
		}
		u.Vhost = name
		if err := rabbitadmin.WaitAMQP(ctx, u.String(), 30*time.Second); err != nil {
			return nil, err
		}
		c.urls = append(c.urls, u.String())
	}
	c.url = strings.Join(c.urls, ",")
	// A deployed cluster carries the dead-letter policy (the compose
	// definitions, README's set_policy), so the bench's vhost does too;
	// the raw round trip's queue takes it like a subscriber's.
	names := []string{roundTripSubscription.Name}
	for _, s := range clusterSubscriptions() {
		names = append(names, s.Name)
	}
	if err := c.mgmt.PutPolicy(ctx, rabbitadmin.Policy{
		Vhost: name, Name: broker.DeadLetterPolicyName, Pattern: broker.DeadLetterPolicyPattern(names),
		ApplyTo: "queues", Definition: broker.DeadLetterPolicyDefinition(),
	}); err != nil {
		return nil, fmt.Errorf("cluster dead-letter policy: %w", err)
	}
	if err := c.declare(); err != nil {
		return nil, fmt.Errorf("cluster topology: %w", err)
	}
	return c, nil
}

// nodeAnswers reports whether an AMQP connection to u opens.
func nodeAnswers(u string) bool {
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(2 * time.Second)})
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// up runs the cluster script's `up` and returns the URLs it prints. The
// script's own waits are bounded; it is not tied to ctx, since one killed
// half way would leave nodes running that nobody stops.
func (c *cluster) up(ctx context.Context) ([]string, error) {
	c.log.Info("starting the RabbitMQ cluster", "script", testcluster.Script)
	start := time.Now()
	nodes, log, err := testcluster.Up(c.root, 10*time.Minute)
	c.logScript("up", log)
	if err != nil {
		return nil, err
	}
	c.log.Info("cluster up", "took", time.Since(start).Round(time.Second), "nodes", len(nodes))
	return nodes, ctx.Err()
}

// logScript puts the cluster script's log in the bench's.
func (c *cluster) logScript(arg string, log []byte) {
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		if line != "" {
			c.log.Info("cluster script", "arg", arg, "line", line)
		}
	}
}

// declare declares, from rabbit_a, what the worker declares at its start
// (broker.DeclareTopology with the default delivery limit, then the
// unsubscribed queue).
func (c *cluster) declare() error {
	conn, err := amqp.Dial(c.urls[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	subs := clusterSubscriptions()
	if err := broker.DeclareTopology(ch, subs, broker.DefaultDeliveryLimit); err != nil {
		return err
	}
	allTypes := domain.EventTypes()
	return broker.DeclareUnsubscribed(ch, subs, allTypes)
}

// close deletes the vhost, stops the cluster if this run started it, and
// lets go of the lock, in that order: the lock is held until the cluster
// is down.
func (c *cluster) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if c.vhost != "" && c.mgmt != nil {
		if err := c.mgmt.DeleteVhost(ctx, c.vhost); err != nil {
			c.log.Error("delete cluster vhost", "error", err)
		}
	}
	if c.started {
		c.log.Info("stopping the RabbitMQ cluster this run started")
		_, log, err := testcluster.Run(c.root, 5*time.Minute, "down")
		c.logScript("down", log)
		if err != nil {
			c.log.Error("cluster down", "error", err)
		}
	}
	if c.lock != nil {
		_ = c.lock.Close()
	}
}

// queueMessages is a queue's ready messages on the cluster, exactly.
func (c *cluster) queueMessages(queue string) (int, error) {
	return queueMessagesAt(c.urls[0], queue)
}

// purge empties the subscriber queues, so the next figure's publishes
// land in empty queues, as the first ones did.
func (c *cluster) purge() error {
	conn, err := amqp.Dial(c.urls[0])
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	for _, s := range clusterSubscriptions() {
		if _, err := ch.QueuePurge(broker.QueueName(s.Name), false); err != nil {
			return fmt.Errorf("purge %s: %w", broker.QueueName(s.Name), err)
		}
	}
	return nil
}

// settled reports whether the outbox and the cluster's subscriber queues
// are empty.
func (c *cluster) settled(ctx context.Context, e *env) (bool, error) {
	var left bool
	if err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox)").Scan(&left); err != nil || left {
		return false, err
	}
	for _, s := range clusterSubscriptions() {
		if n, err := c.queueMessages(broker.QueueName(s.Name)); err != nil || n > 0 {
			return false, err
		}
	}
	return true, nil
}

// pids adds each cluster node's beam, by its node letter, to the bench's
// processes, so the CPU breakdown tells the nodes apart (and from the
// machine's own broker, which stays "rabbitmq").
func (c *cluster) pids(m map[int]string) map[int]string {
	for _, n := range testcluster.Nodes {
		if pid, err := testcluster.BeamPid(n); err == nil {
			m[pid] = "rabbit_" + n
		}
	}
	return m
}

// placement is where the cluster put things: each subscriber queue's
// leader and the nodes of the vhost's connections by their names, as the
// management API reports them. A figure's ratio depends on it: a client
// on a node other than its queue's leader pays a hop between nodes. The
// API lists a connection only once its node's statistics reach it, so
// placement waits, at most wait, until each of want's names shows as often
// as it says; what is missing then is reported as missing.
func (c *cluster) placement(ctx context.Context, want map[string]int, wait time.Duration) map[string]any {
	var byName map[string][]string
	var listErr error
	complete := func() (bool, error) {
		var conns []struct {
			Node             string `json:"node"`
			ClientProperties struct {
				Name string `json:"connection_name"`
			} `json:"client_properties"`
		}
		if listErr = c.mgmt.Do(ctx, http.MethodGet, "/api/vhosts/"+url.PathEscape(c.vhost)+"/connections", nil, &conns); listErr != nil {
			return false, nil
		}
		byName = map[string][]string{}
		for _, cn := range conns {
			name := cmp.Or(cn.ClientProperties.Name, "unnamed (the bench's raw clients)")
			byName[name] = append(byName[name], cn.Node)
		}
		for name, n := range want {
			if len(byName[name]) < n {
				return false, nil
			}
		}
		return true, nil
	}
	_ = waitFor(ctx, wait, 250*time.Millisecond, complete)
	leaders, policies := map[string]string{}, map[string]string{}
	for _, s := range clusterSubscriptions() {
		q := broker.QueueName(s.Name)
		var info struct {
			Leader string `json:"leader"`
			Node   string `json:"node"`
			Policy string `json:"policy"` // with the statistics: empty for a few seconds
		}
		if err := c.mgmt.Do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(c.vhost)+"/"+url.PathEscape(q), nil, &info); err != nil {
			leaders[q] = "unknown: " + err.Error()
			continue
		}
		leaders[q] = cmp.Or(info.Leader, info.Node)
		policies[q] = cmp.Or(info.Policy, "not sampled yet")
	}
	for _, nodes := range byName {
		slices.Sort(nodes)
	}
	out := map[string]any{"leaders": leaders, "policies": policies, "connections": byName}
	if listErr != nil {
		out["connections"] = "unknown: " + listErr.Error()
	}
	var missing []string
	for name, n := range want {
		if len(byName[name]) < n {
			missing = append(missing, fmt.Sprintf("%s (%d of %d listed after %s)", name, len(byName[name]), n, wait))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		out["connections_not_listed_yet"] = missing
	}
	return out
}

// clusterOnce opens the cluster at most once per run, in the background
// when asked early, and hands it to every figure that needs it.
type clusterOnce struct {
	once   sync.Once
	done   chan struct{}
	cancel context.CancelFunc // stops a wait for the lock when the run ends first
	c      *cluster
	err    error
}

// start begins opening the cluster, unless it has begun.
func (o *clusterOnce) start(ctx context.Context, log *slog.Logger, root string) {
	o.once.Do(func() {
		o.done = make(chan struct{})
		ctx, o.cancel = context.WithCancel(ctx)
		go func() {
			defer close(o.done)
			o.c, o.err = openCluster(ctx, log, root)
		}()
	})
}

// get waits for the cluster that start opens.
func (o *clusterOnce) get(ctx context.Context, log *slog.Logger, root string) (*cluster, error) {
	o.start(ctx, log, root)
	select {
	case <-o.done:
		return o.c, o.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close waits for an opening in progress (its `up` is not cut short) and
// closes what it opened.
func (o *clusterOnce) close() {
	if o.done == nil {
		return
	}
	o.cancel()
	<-o.done
	if o.c != nil {
		o.c.close()
	}
}
