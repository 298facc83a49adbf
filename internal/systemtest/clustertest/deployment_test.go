package clustertest_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

const (
	adminToken = "clustertest-admin-token"
	// The subscriber queues as DESIGN.md names them, and the recorder's
	// own.
	storageQueue  = "catacloud.storage"
	billingQueue  = "catacloud.billing"
	recorderQueue = "clustertest.recorder"
)

// deployment is Epoch as DESIGN.md's "past one machine" runs it: two api
// and two worker processes (each worker relay, storage and billing) on one
// database and one broker (all the cluster's nodes in EPOCH_AMQP_URL), and
// an outside consumer recording the exchange on a quorum queue of its own.
type deployment struct {
	t       *testing.T
	pool    *pgxpool.Pool
	apis    []*e2ekit.Proc
	workers []*e2ekit.Proc
	rec     *e2ekit.Recorder
	http    *http.Client
	probe   loadUser // a user of its own for probe uploads

	mu      sync.Mutex
	samples []relaySample
}

type deploymentConfig struct {
	name    string
	amqpURL string
	// apiManagement is each api's EPOCH_RABBITMQ_MANAGEMENT_URL (none:
	// the default, the machine's node).
	apiManagement []string
}

func newDeployment(t *testing.T, cfg deploymentConfig) *deployment {
	t.Helper()
	pool, dbURL := testdb.New(t)
	d := &deployment{t: t, pool: pool, http: &http.Client{Timeout: 30 * time.Second}}
	startWorker := func(i int) {
		name := fmt.Sprintf("%s-worker-%d", cfg.name, i+1)
		w := bin.Start(t, "worker", name, map[string]string{
			// The application name tells the workers' Postgres sessions apart.
			"EPOCH_DATABASE_URL":        withApplicationName(t, dbURL, name),
			"EPOCH_AMQP_URL":            cfg.amqpURL,
			"EPOCH_WORKER_ROLES":        "relay,storage,billing",
			"EPOCH_RELAY_POLL_INTERVAL": "100ms",
			"EPOCH_CONSUMER_PREFETCH":   "200",
			"EPOCH_DB_MAX_CONNS":        "5",
			// Goroutine dumps when a failover does not complete.
			"EPOCH_PPROF": "true",
		})
		w.WaitReady(t, 60*time.Second)
		d.workers = append(d.workers, w)
	}
	// The first worker declares the topology; the recorder binds to it
	// before the first command.
	startWorker(0)
	d.rec = e2ekit.NewRecorder(t, e2ekit.RecorderConfig{URL: cfg.amqpURL, Queue: recorderQueue, Quorum: true})
	startWorker(1)
	for i := range 2 {
		env := map[string]string{
			"EPOCH_DATABASE_URL": dbURL,
			"EPOCH_AMQP_URL":     cfg.amqpURL,
			"EPOCH_ADMIN_TOKEN":  adminToken,
			"EPOCH_DB_MAX_CONNS": "5",
		}
		if i < len(cfg.apiManagement) {
			env["EPOCH_RABBITMQ_MANAGEMENT_URL"] = cfg.apiManagement[i]
		}
		api := bin.Start(t, "api", fmt.Sprintf("%s-api-%d", cfg.name, i+1), env)
		api.WaitReady(t, 60*time.Second)
		d.apis = append(d.apis, api)
	}
	d.probe = d.newUser("probe")
	d.sampleRelays()
	return d
}

// relaySample is what the workers' relays had counted at a moment, and
// the outbox then.
type relaySample struct {
	at      time.Time
	failed  []float64 // per worker, epoch_relay_failed_total: nacked, returned, unconfirmed
	backlog int
}

// sampleRelays reads the relays' failure counters and the outbox every
// 50 ms until the test ends, so a failover's nacks can be told from a
// channel nacked until its node came back.
func (d *deployment) sampleRelays() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			s := relaySample{at: time.Now(), failed: make([]float64, len(d.workers))}
			d.mu.Lock()
			if n := len(d.samples); n > 0 {
				copy(s.failed, d.samples[n-1].failed)
			}
			d.mu.Unlock()
			for i, w := range d.workers {
				// A worker that does not answer (killed) keeps its last count.
				if v, err := e2ekit.ReadMetric(d.http, w.Addr, "epoch_relay_failed_total", ""); err == nil {
					s.failed[i] = v
				}
			}
			_ = d.pool.QueryRow(context.Background(), "SELECT coalesce(sum(last_position - position + 1), 0) FROM outbox").Scan(&s.backlog)
			d.mu.Lock()
			d.samples = append(d.samples, s)
			d.mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	d.t.Cleanup(func() { close(stop); <-done })
}

// relayWindow is what the samples say of [from, to).
type relayWindow struct {
	failed     []float64 // per worker
	lastFailed time.Time // when the last failure was counted (zero: none)
	maxBacklog int
}

func (w relayWindow) total() (n float64) {
	for _, f := range w.failed {
		n += f
	}
	return n
}

func (d *deployment) relayWindow(from, to time.Time) relayWindow {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := relayWindow{failed: make([]float64, len(d.workers))}
	for i := 1; i < len(d.samples); i++ {
		s, prev := d.samples[i], d.samples[i-1]
		if s.at.Before(from) || !s.at.Before(to) {
			continue
		}
		w.maxBacklog = max(w.maxBacklog, s.backlog)
		for j := range s.failed {
			if s.failed[j] > prev.failed[j] {
				w.failed[j] += s.failed[j] - prev.failed[j]
				w.lastFailed = s.at
			}
		}
	}
	return w
}

func withApplicationName(t *testing.T, dbURL, name string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	q := u.Query()
	q.Set("application_name", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// loadUser is one user of the load, as its goroutine knows it.
type loadUser struct {
	id    uuid.UUID
	token string
	files []string // live
}

func (d *deployment) newUser(name string) loadUser {
	d.t.Helper()
	a := e2ekit.Call(d.t, d.http, d.apis[0].Addr, http.StatusCreated, "POST", "/v1/users", adminToken, map[string]string{"name": name})
	m := a.JSON(d.t)
	return loadUser{id: uuid.MustParse(m["id"].(string)), token: m["token"].(string)}
}

// load is a steady stream of uploads and deletes, each user's commands
// sent to the api processes in turn.
type load struct {
	users    []*loadUser
	stopping atomic.Bool
	wg       sync.WaitGroup
	commands atomic.Int64 // answered with success

	mu       sync.Mutex
	failures []string
}

// startLoad runs users goroutines, each pausing pause between commands,
// until stop.
func (d *deployment) startLoad(users int, pause time.Duration) *load {
	d.t.Helper()
	l := &load{}
	for u := range users {
		user := d.newUser(fmt.Sprint("load-", u))
		l.users = append(l.users, &user)
	}
	for g, user := range l.users {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			d.runLoad(l, g, user, pause)
		}()
	}
	d.t.Cleanup(l.stop)
	return l
}

// runLoad is goroutine g's loop. A command in flight when the load stops
// is answered first, so once stop returns nothing more commits.
func (d *deployment) runLoad(l *load, g int, u *loadUser, pause time.Duration) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
	for i := 0; !l.stopping.Load(); i++ {
		api := d.apis[i%len(d.apis)]
		var a e2ekit.Answer
		var err error
		if len(u.files) < 4 || rng.Float64() < 0.6 {
			a, err = e2ekit.Request(ctx, d.http, api.Addr, "POST", "/v1/files", u.token,
				map[string]any{"name": fmt.Sprintf("f-%d-%d", g, i), "size_bytes": rng.Int64N(1 << 40)})
			if err == nil && a.Status == http.StatusCreated {
				var m map[string]any
				if m, err = a.Object(); err == nil {
					u.files = append(u.files, m["id"].(string))
				}
			}
		} else {
			f := rng.IntN(len(u.files))
			a, err = e2ekit.Request(ctx, d.http, api.Addr, "DELETE", "/v1/files/"+u.files[f], u.token, nil)
			if err == nil && a.Status == http.StatusNoContent {
				u.files = append(u.files[:f], u.files[f+1:]...)
			}
		}
		switch {
		case err != nil:
			l.fail(fmt.Sprintf("%s: %v", api.Name, err))
		case a.Status != http.StatusCreated && a.Status != http.StatusNoContent:
			l.fail(fmt.Sprintf("%s: %d %s", api.Name, a.Status, a.Body))
		default:
			l.commands.Add(1)
		}
		time.Sleep(pause)
	}
}

func (l *load) fail(msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, msg)
}

// stop ends the load and waits for its goroutines.
func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
}

// requireNoFailures: every command was answered with success; the api
// does not need RabbitMQ to commit one.
func (l *load) requireNoFailures(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 0 {
		t.Fatalf("%d commands failed (of %d that succeeded); the first: %v", len(l.failures), l.commands.Load(), l.failures[:min(5, len(l.failures))])
	}
}

// awaitFlow waits until the load has had commands answered and both
// subscribers have applied events, so a fault lands in a steady flow.
func (d *deployment) awaitFlow(ctx context.Context, l *load, commands int64) {
	d.t.Helper()
	e2ekit.Eventually(d.t, 60*time.Second, "load flowing", func() (bool, string) {
		st, bi := e2ekit.InboxCount(d.t, ctx, d.pool, "storage"), e2ekit.InboxCount(d.t, ctx, d.pool, "billing")
		return l.commands.Load() >= commands && st > 0 && bi > 0, fmt.Sprintf("%d commands, inbox storage %d billing %d", l.commands.Load(), st, bi)
	})
}

// probeResult is how long a probe upload took to be confirmed by the
// broker (its outbox row gone) and applied by both subscribers (their
// inbox rows), counted from a fault.
type probeResult struct {
	confirmed, applied time.Duration
}

// probe is one upload made to time a fault: its position, and when it
// was answered.
type probe struct {
	position int64
	at       time.Time
}

// commitProbe uploads one file through the first api.
func (d *deployment) commitProbe() probe {
	d.t.Helper()
	a := e2ekit.Call(d.t, d.http, d.apis[0].Addr, http.StatusCreated, "POST", "/v1/files", d.probe.token,
		map[string]any{"name": "probe", "size_bytes": 1000})
	return probe{position: a.Position(d.t), at: time.Now()}
}

// awaitProbe waits at most within until p is confirmed and applied; it
// returns both times from since, and ok false when within passed first.
// res is what an earlier wait for p saw (its confirm time stays).
func (d *deployment) awaitProbe(ctx context.Context, p probe, since time.Time, within time.Duration, res probeResult) (probeResult, bool) {
	d.t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		var pending bool
		var applied int
		require.NoError(d.t, d.pool.QueryRow(ctx, `
			SELECT EXISTS (SELECT 1 FROM outbox WHERE position <= $1 AND last_position >= $1),
			       (SELECT count(*) FROM inbox i JOIN events e ON e.id = i.event_id
			        WHERE e.position = $1 AND i.subscriber IN ('storage', 'billing'))`, p.position).Scan(&pending, &applied))
		if !pending && res.confirmed == 0 {
			res.confirmed = time.Since(since)
		}
		if applied == 2 {
			res.applied = time.Since(since)
			if res.confirmed == 0 {
				res.confirmed = res.applied
			}
			return res, true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return res, false
}

// probeNext commits a probe and waits for it (awaitProbe).
func (d *deployment) probeNext(ctx context.Context, since time.Time, within time.Duration) (probeResult, bool) {
	d.t.Helper()
	return d.awaitProbe(ctx, d.commitProbe(), since, within, probeResult{})
}

// relayStacks is what the worker's relay and publisher goroutines are
// doing now (from its goroutine dump), to say where a relay that does not
// move waits.
func (d *deployment) relayStacks(w *e2ekit.Proc) string {
	resp, err := d.http.Get("http://" + w.Addr + "/debug/pprof/goroutine?debug=2")
	if err != nil {
		return fmt.Sprintf("%s: goroutine dump: %v", w.Name, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var g []string
	flush := func() {
		stack := strings.Join(g, "\n")
		if strings.Contains(stack, "internal/delivery/outbox.") || strings.Contains(stack, "internal/delivery/broker.") {
			b.WriteString(stack + "\n\n")
		}
		g = g[:0]
	}
	for sc.Scan() {
		if sc.Text() == "" {
			flush()
			continue
		}
		g = append(g, sc.Text())
	}
	flush()
	return fmt.Sprintf("%s relay goroutines:\n%s", w.Name, b.String())
}

// logSummary sums up a process's warnings and errors (and its broker
// connects): each message with its error, how often, first and last, in
// seconds since since.
func logSummary(p *e2ekit.Proc, since time.Time) string {
	var tally e2ekit.LogTally
	addrs := regexp.MustCompile(`127\.0\.0\.1:\d+`)
	for _, line := range strings.Split(p.Output(), "\n") {
		var rec struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
			Error string    `json:"error"`
			Queue string    `json:"queue"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Level == "INFO" && rec.Msg != "broker: connected" && rec.Msg != "consuming" {
			continue
		}
		errText := addrs.ReplaceAllString(strings.ReplaceAll(rec.Error, "\n", " | "), "127.0.0.1:*")
		if len(errText) > 100 {
			errText = errText[:100] + "…"
		}
		key := rec.Level + " " + rec.Msg
		if rec.Queue != "" {
			key += " (" + rec.Queue + ")"
		}
		if errText != "" {
			key += ": " + errText
		}
		tally.Add(key, rec.Time)
	}
	return tally.String(p.Name, since)
}

// verify waits until everything committed has arrived everywhere, then
// checks it: no event lost on the way to the recorder or either
// subscriber, each stream in version order at the recorder, storage and
// usage exact (read directly and through both api processes), no dead
// letter, each file event applied once per subscriber, and the processes
// in alive still the ones started.
func (d *deployment) verify(ctx context.Context, l *load, alive []*e2ekit.Proc) {
	t := d.t
	t.Helper()
	events := e2ekit.LoadEvents(t, ctx, d.pool)
	require.NotEmpty(t, events)
	ids := e2ekit.EventIDs(events)
	fileEvents := e2ekit.CountFileEvents(events)
	drainStart := time.Now()
	e2ekit.Eventually(t, 90*time.Second, "outbox drained, every event at the recorder, both subscribers caught up", func() (bool, string) {
		backlog := e2ekit.OutboxBacklog(t, ctx, d.pool)
		missing, example := d.rec.Missing(ids)
		st, bi := e2ekit.InboxCount(t, ctx, d.pool, "storage"), e2ekit.InboxCount(t, ctx, d.pool, "billing")
		return backlog == 0 && missing == 0 && st == fileEvents && bi == fileEvents,
			fmt.Sprintf("outbox %d events, %d events not at the recorder (e.g. %s), inbox storage %d billing %d of %d file events",
				backlog, missing, example, st, bi, fileEvents)
	})
	t.Logf("drained %s after the load stopped", time.Since(drainStart).Round(time.Millisecond))
	require.Len(t, e2ekit.LoadEvents(t, ctx, d.pool), len(events), "events committed after the load stopped")
	distinct, deliveries := d.rec.Stats()
	require.Equal(t, len(events), distinct, "the recorder got messages that are not in the events table")
	// The publisher's order shows in the first arrivals the broker did not
	// redeliver: a redelivered one (its first delivery went to a consumer
	// the broker then lost, as after the whole cluster restarted) may come
	// after later versions, which AMQP allows. Every event's arrival is
	// checked above.
	first, order := d.rec.Snapshot()
	sent := slices.DeleteFunc(slices.Clone(order), func(id string) bool { return first[id].Redelivered })
	if len(sent) < len(order) {
		t.Logf("%d of %d first arrivals at the recorder were redeliveries, left out of the order check", len(order)-len(sent), len(order))
	}
	require.NoError(t, e2ekit.StreamAscending(events, sent), "per-stream order at the recorder")

	e2ekit.CheckStorageAndBilling(t, ctx, d.pool, events)
	tr := e2ekit.BruteForce(t, events)
	var billed int
	require.NoError(t, d.pool.QueryRow(ctx, "SELECT count(*) FROM billing_files").Scan(&billed))
	require.Equal(t, tr.Files(), billed, "billing keeps one row per uploaded file")
	var dead int
	require.NoError(t, d.pool.QueryRow(ctx, "SELECT count(*) FROM dead_letters").Scan(&dead))
	require.Zero(t, dead, "dead letters")

	// Through both api processes, as the users see it: usage over a window
	// that ended before the request (so "now" does not enter), and storage.
	from, to := events[0].OccurredAt.Add(-time.Hour), events[len(events)-1].OccurredAt.Add(time.Millisecond)
	time.Sleep(time.Until(to.Add(time.Millisecond)))
	for _, u := range append([]*loadUser{&d.probe}, l.users...) {
		count, bytes := tr.Storage(u.id)
		pos := tr.Position[u.id]
		want := billing.FormatDecimal(tr.ByteSeconds(u.id, from, to, to), 6)
		for _, api := range d.apis {
			got := e2ekit.Call(t, d.http, api.Addr, http.StatusOK, "GET", e2ekit.UsagePath(from, to, pos), u.token, nil).JSON(t)
			require.Equal(t, want, got["byte_seconds"], "usage of %s on %s", u.id, api.Name)
			require.Equal(t, fmt.Sprint(pos), fmt.Sprint(got["position"]), "usage position of %s on %s", u.id, api.Name)
			got = e2ekit.Call(t, d.http, api.Addr, http.StatusOK, "GET", fmt.Sprintf("/v1/storage?min_position=%d", pos), u.token, nil).JSON(t)
			require.Equal(t, map[string]any{"file_count": fmt.Sprint(count), "bytes": bytes, "position": fmt.Sprint(pos)},
				map[string]any{"file_count": fmt.Sprint(got["file_count"]), "bytes": fmt.Sprint(got["bytes"]), "position": fmt.Sprint(got["position"])},
				"storage of %s on %s", u.id, api.Name)
		}
	}

	var duplicates float64
	if len(alive) == len(d.workers)+len(d.apis) {
		// Counters of every worker since it started, so only while no
		// worker was replaced: each file event applied exactly once per
		// subscriber over the two of them, from its queue or healed from
		// the store, redeliveries counted apart.
		for _, sub := range subscribers.Movable().Names() {
			var applied float64
			for _, w := range d.workers {
				applied += e2ekit.Metric(t, d.http, w.Addr, "epoch_consumer_processed_total", fmt.Sprintf("subscriber=%q", sub))
				applied += e2ekit.Metric(t, d.http, w.Addr, "epoch_heal_applied_total", fmt.Sprintf("subscriber=%q", sub))
				duplicates += e2ekit.Metric(t, d.http, w.Addr, "epoch_consumer_duplicates_total", fmt.Sprintf("subscriber=%q", sub))
			}
			require.Equal(t, float64(fileEvents), applied, "%s applied each file event once", sub)
		}
	}
	for _, p := range alive {
		require.False(t, p.Exited(), "%s must ride out the faults without a restart: %v", p.Name, p.Err())
	}
	t.Logf("%d events (%d file events) of %d commands: all at the recorder (%d deliveries, %d again) and applied by both subscribers (%v deliveries again); storage and usage of %d users exact",
		len(events), fileEvents, l.commands.Load(), deliveries, deliveries-distinct, duplicates, len(l.users)+1)
}

// steadyRun is how each node-loss test starts and ends: the cluster's
// turn and a vhost, the deployment on it and its steady load, flowing
// before the fault.
type steadyRun struct {
	t     *testing.T
	c     *cluster
	ctx   context.Context
	d     *deployment
	l     *load
	start time.Time
}

// startSteady takes the cluster's turn, starts the deployment named name
// with four users' load, and waits until it flows; the test's checks are
// bounded by timeout.
func startSteady(t *testing.T, name string, timeout time.Duration) *steadyRun {
	t.Helper()
	r := &steadyRun{t: t, c: useCluster(t), ctx: e2ekit.CtxFor(t, timeout), start: time.Now()}
	r.d = newDeployment(t, deploymentConfig{name: name, amqpURL: r.c.amqpURL, apiManagement: apiManagement()})
	r.l = r.d.startLoad(4, 15*time.Millisecond)
	r.d.awaitFlow(r.ctx, r.l, 200)
	return r
}

// healed says what healing handed each subscriber from the event store
// (the messages the broker lost or kept from its consumers), as heals
// counts it.
func (d *deployment) healed(ctx context.Context) string {
	d.t.Helper()
	rows, err := d.pool.Query(ctx, `SELECT s.name || ' ' || coalesce(h.healed, 0) || coalesce(' (last at position ' || h.last_position || ')', '')
		FROM unnest(ARRAY['storage', 'billing']) AS s(name) LEFT JOIN heals h ON h.subscriber = s.name`)
	require.NoError(d.t, err)
	parts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(d.t, err)
	return "healing applied: " + strings.Join(parts, ", ")
}

// finish lets the load run a second more, stops it, and checks the
// outcome (verify, with every process the one started), then sums up the
// workers' logs.
func (r *steadyRun) finish() {
	r.t.Helper()
	time.Sleep(time.Second)
	r.l.stop()
	r.l.requireNoFailures(r.t)
	r.d.verify(r.ctx, r.l, slices.Concat(r.d.apis, r.d.workers))
	r.t.Log(r.d.healed(r.ctx))
	for _, w := range r.d.workers {
		r.t.Log(logSummary(w, r.start))
	}
}
