package testcluster

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
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// NodeURLs are the nodes' URLs (default vhost) as `up` prints them. Open
// looks at them first to tell whether the cluster is already up, which
// `up` would take several CLI calls to find out.
var NodeURLs = []string{
	"amqp://guest:guest@127.0.0.1:5681/",
	"amqp://guest:guest@127.0.0.1:5682/",
	"amqp://guest:guest@127.0.0.1:5683/",
}

// managementOffset is how far above a node's AMQP port the script puts its
// management API (5681 → 15681).
const managementOffset = 10000

// Session is a program's use of the cluster (the bench's): the lock held,
// the cluster brought up when it was not, and a vhost of its own on it
// with the dead-letter policy a deployment sets. Close undoes all of it,
// and stops the cluster only when this session started it.
type Session struct {
	Admin *rabbitadmin.Client // rabbit_a's management API
	Vhost string
	URLs  []string // each node on the vhost, rabbit_a first
	URL   string   // URLs comma-separated: a process's EPOCH_AMQP_URL

	log     *slog.Logger
	root    string
	lock    *os.File
	started bool // no node answered before: this session brought it up
}

// Open takes the lock (waiting for whoever holds it), brings the cluster
// up when it is not, makes a vhost named prefix and a random suffix on it,
// whose queues named in policyQueues dead-letter as a deployment's
// (broker.DeadLetterPolicyDefinition), and runs setup (declaring a
// topology, say) on a channel to rabbit_a there. On error it has already
// released what it took.
func Open(ctx context.Context, log *slog.Logger, root, prefix string, policyQueues []string, setup func(*amqp.Channel) error) (_ *Session, err error) {
	s := &Session{log: log, root: root}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if s.lock, err = Lock(ctx, func() {
		log.Info("waiting for the cluster lock (another run or test is using the cluster)", "lock", LockPath)
	}); err != nil {
		return nil, err
	}
	nodes := NodeURLs
	answering := 0
	for _, u := range nodes {
		if nodeAnswers(u) {
			answering++
		}
	}
	if answering < len(nodes) {
		// Started only from nothing counts as ours: a node or two that
		// answered belong to a cluster somebody else left up.
		s.started = answering == 0
		if nodes, err = s.up(ctx); err != nil {
			return nil, err
		}
	}
	base, err := amqp.ParseURI(nodes[0])
	if err != nil {
		return nil, fmt.Errorf("cluster URL: %w", err)
	}
	mgmtURL := "http://" + net.JoinHostPort(base.Host, strconv.Itoa(base.Port+managementOffset))
	if s.Admin, err = rabbitadmin.NewAt(mgmtURL, base, 30*time.Second); err != nil {
		return nil, err
	}
	// Not rabbitadmin's Ready: when nothing answers it enables the
	// management plugin on the machine's own broker, which is not ours.
	if err := harness.WaitFor(ctx, 60*time.Second, 250*time.Millisecond, func() (bool, error) {
		return s.Admin.Do(ctx, http.MethodGet, "/api/overview", nil, nil) == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("cluster management API at %s: %w", mgmtURL, err)
	}
	name := prefix + harness.RandomHex(6)
	s.Vhost = name // set first: Close deletes it even if it came up only in part
	if _, err := s.Admin.CreateVhost(ctx, base, name); err != nil {
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
		s.URLs = append(s.URLs, u.String())
	}
	s.URL = strings.Join(s.URLs, ",")
	if err := s.Admin.PutPolicy(ctx, rabbitadmin.Policy{
		Vhost: name, Name: broker.DeadLetterPolicyName, Pattern: broker.DeadLetterPolicyPattern(policyQueues),
		ApplyTo: "queues", Definition: broker.DeadLetterPolicyDefinition(),
	}); err != nil {
		return nil, fmt.Errorf("cluster dead-letter policy: %w", err)
	}
	if err := s.WithChannel(setup); err != nil {
		return nil, fmt.Errorf("cluster setup: %w", err)
	}
	return s, nil
}

// WithChannel runs fn on a channel to rabbit_a on the session's vhost.
func (s *Session) WithChannel(fn func(*amqp.Channel) error) error {
	return harness.WithChannel(s.URLs[0], fn)
}

// Messages is a queue's ready messages on the cluster, exactly.
func (s *Session) Messages(queue string) (int, error) {
	return harness.QueueMessages(s.URLs[0], queue)
}

// Purge empties the queues.
func (s *Session) Purge(queues ...string) error {
	return s.WithChannel(func(ch *amqp.Channel) error {
		for _, q := range queues {
			if _, err := ch.QueuePurge(q, false); err != nil {
				return fmt.Errorf("purge %s: %w", q, err)
			}
		}
		return nil
	})
}

// NodePids adds each node's VM to pids, named by its node (rabbit_a, _b,
// _c), so a CPU breakdown (harness.SampleCPU) tells the nodes apart, and
// from the machine's own broker; it returns pids.
func NodePids(pids map[int]string) map[int]string {
	for _, n := range Nodes {
		if pid, err := BeamPid(n); err == nil {
			pids[pid] = "rabbit_" + n
		}
	}
	return pids
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

// up runs the script's `up` and returns the URLs it prints. The script's
// own waits are bounded; it is not tied to ctx, since one killed half way
// would leave nodes running that nobody stops.
func (s *Session) up(ctx context.Context) ([]string, error) {
	s.log.Info("starting the RabbitMQ cluster", "script", Script)
	start := time.Now()
	nodes, log, err := Up(s.root, 10*time.Minute)
	s.logScript("up", log)
	if err != nil {
		return nil, err
	}
	s.log.Info("cluster up", "took", time.Since(start).Round(time.Second), "nodes", len(nodes))
	return nodes, ctx.Err()
}

// logScript puts the script's log in the session's.
func (s *Session) logScript(arg string, log []byte) {
	for _, line := range strings.Split(strings.TrimSpace(string(log)), "\n") {
		if line != "" {
			s.log.Info("cluster script", "arg", arg, "line", line)
		}
	}
}

// Close deletes the vhost, stops the cluster if this session started it,
// and lets go of the lock, in that order: the lock is held until the
// cluster is down.
func (s *Session) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if s.Vhost != "" && s.Admin != nil {
		if err := s.Admin.DeleteVhost(ctx, s.Vhost); err != nil {
			s.log.Error("delete cluster vhost", "error", err)
		}
	}
	if s.started {
		s.log.Info("stopping the RabbitMQ cluster this session started")
		_, log, err := Run(s.root, 5*time.Minute, "down")
		s.logScript("down", log)
		if err != nil {
			s.log.Error("cluster down", "error", err)
		}
	}
	if s.lock != nil {
		_ = s.lock.Close()
	}
}

// Placement is where the cluster put things: each of queues' leader and
// policy, and the nodes of the vhost's connections by their names, as the
// management API reports them. A client on a node other than its queue's
// leader pays a hop between nodes. The API lists a connection only once
// its node's statistics reach it, so Placement waits, at most wait, until
// each of want's names shows as often as it says; what is missing then is
// reported as missing.
func (s *Session) Placement(ctx context.Context, queues []string, want map[string]int, wait time.Duration) map[string]any {
	var byName map[string][]string
	var listErr error
	complete := func() (bool, error) {
		var conns []struct {
			Node             string `json:"node"`
			ClientProperties struct {
				Name string `json:"connection_name"`
			} `json:"client_properties"`
		}
		if listErr = s.Admin.Do(ctx, http.MethodGet, "/api/vhosts/"+url.PathEscape(s.Vhost)+"/connections", nil, &conns); listErr != nil {
			return false, nil
		}
		byName = map[string][]string{}
		for _, cn := range conns {
			name := cmp.Or(cn.ClientProperties.Name, "unnamed (a client that gives no connection_name)")
			byName[name] = append(byName[name], cn.Node)
		}
		for name, n := range want {
			if len(byName[name]) < n {
				return false, nil
			}
		}
		return true, nil
	}
	_ = harness.WaitFor(ctx, wait, 250*time.Millisecond, complete)
	leaders, policies := map[string]string{}, map[string]string{}
	for _, q := range queues {
		var info struct {
			Leader string `json:"leader"`
			Node   string `json:"node"`
			Policy string `json:"policy"` // with the statistics: empty for a few seconds
		}
		if err := s.Admin.Do(ctx, http.MethodGet, "/api/queues/"+url.PathEscape(s.Vhost)+"/"+url.PathEscape(q), nil, &info); err != nil {
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
