package failovertest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

const (
	adminToken    = "failovertest-admin-token"
	recorderQueue = "failovertest.recorder"
	// serveAgain is DESIGN.md's bound: every process serves again within
	// it of the promotion, without a restart.
	serveAgain = 10 * time.Second
)

// deployment is Epoch on the pair: two api and two worker processes (each
// worker relay, storage and billing) on EPOCH_DATABASE_URL naming both
// hosts, a vhost of the machine's broker, and an outside consumer
// recording the exchange.
type deployment struct {
	t       *testing.T
	pool    *pgxpool.Pool // on both hosts, as the binaries connect
	apis    []*e2ekit.Proc
	workers []*e2ekit.Proc
	rec     *e2ekit.Recorder
	http    *http.Client
	amqpURL string

	mu      sync.Mutex
	samples []workerSample
}

func newDeployment(t *testing.T, p *pair, name string) *deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool, err := database.Connect(ctx, p.database, 4, nil)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	amqpURL := testbroker.New(t)
	d := &deployment{t: t, pool: pool, http: &http.Client{Timeout: 30 * time.Second}, amqpURL: amqpURL}
	// The first api migrates the new database before anything else uses it.
	for i := range 2 {
		procName := fmt.Sprintf("%s-api-%d", name, i+1)
		api := bin.Start(t, "api", procName, map[string]string{
			"EPOCH_DATABASE_URL": withApplicationName(p.database, procName),
			"EPOCH_AMQP_URL":     amqpURL,
			"EPOCH_ADMIN_TOKEN":  adminToken,
			"EPOCH_DB_MAX_CONNS": "5",
		})
		api.WaitReady(t, 60*time.Second)
		d.apis = append(d.apis, api)
	}
	for i := range 2 {
		procName := fmt.Sprintf("%s-worker-%d", name, i+1)
		w := bin.Start(t, "worker", procName, map[string]string{
			"EPOCH_DATABASE_URL":        withApplicationName(p.database, procName),
			"EPOCH_AMQP_URL":            amqpURL,
			"EPOCH_WORKER_ROLES":        "relay,storage,billing",
			"EPOCH_RELAY_POLL_INTERVAL": "100ms",
			"EPOCH_CONSUMER_PREFETCH":   "200",
			"EPOCH_DB_MAX_CONNS":        "5",
		})
		w.WaitReady(t, 60*time.Second)
		d.workers = append(d.workers, w)
		if i == 0 {
			// The first worker declared the exchange; the recorder binds
			// before the first command.
			d.rec = e2ekit.NewRecorder(t, e2ekit.RecorderConfig{URL: amqpURL, Queue: recorderQueue})
		}
	}
	d.sampleWorkers()
	return d
}

// workerSample is what each worker had counted at a moment: the broker's
// confirms of its relay, and the events its subscribers applied.
type workerSample struct {
	at        time.Time
	confirmed []float64
	applied   []float64
}

// sampleWorkers reads the workers' counters every 50 ms until the test
// ends, so that the failover shows when each worker's relay and
// subscribers worked again.
func (d *deployment) sampleWorkers() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			s := workerSample{at: time.Now(), confirmed: make([]float64, len(d.workers)), applied: make([]float64, len(d.workers))}
			d.mu.Lock()
			if n := len(d.samples); n > 0 {
				copy(s.confirmed, d.samples[n-1].confirmed)
				copy(s.applied, d.samples[n-1].applied)
			}
			d.mu.Unlock()
			for i, w := range d.workers {
				if v, err := e2ekit.ReadMetric(d.http, w.Addr, "epoch_relay_confirmed_total", ""); err == nil {
					s.confirmed[i] = v
				}
				if v, err := e2ekit.ReadMetric(d.http, w.Addr, "epoch_consumer_processed_total", ""); err == nil {
					s.applied[i] = v
				}
			}
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

// workersBack is, per worker, how long after since its relay's confirm
// count and its subscribers' applied count first grew (0: not yet).
func (d *deployment) workersBack(since time.Time) (confirmed, applied []time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	confirmed, applied = make([]time.Duration, len(d.workers)), make([]time.Duration, len(d.workers))
	var base *workerSample
	for i := range d.samples {
		s := &d.samples[i]
		if s.at.Before(since) {
			base = s
			continue
		}
		if base == nil {
			continue
		}
		for w := range d.workers {
			if confirmed[w] == 0 && s.confirmed[w] > base.confirmed[w] {
				confirmed[w] = s.at.Sub(since)
			}
			if applied[w] == 0 && s.applied[w] > base.applied[w] {
				applied[w] = s.at.Sub(since)
			}
		}
	}
	return confirmed, applied
}

// awaitWorkersBack waits until each worker's relay had a confirm and its
// subscribers applied an event after since, at most serveAgain from since,
// and returns the first confirm's time (the earliest of the workers').
func (d *deployment) awaitWorkersBack(since time.Time) (firstConfirm time.Duration, perWorker string) {
	d.t.Helper()
	var confirmed, applied []time.Duration
	for {
		confirmed, applied = d.workersBack(since)
		back := true
		for w := range d.workers {
			back = back && confirmed[w] > 0 && applied[w] > 0
		}
		if back {
			break
		}
		if time.Since(since) > serveAgain+time.Second {
			d.t.Fatalf("workers not back within %s of the promotion: relay confirms after %v, subscribers' applies after %v (0: none)", serveAgain, confirmed, applied)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for w, p := range d.workers {
		require.LessOrEqual(d.t, confirmed[w], serveAgain, "%s's relay confirmed nothing within %s of the promotion", p.Name, serveAgain)
		require.LessOrEqual(d.t, applied[w], serveAgain, "%s's subscribers applied nothing within %s of the promotion", p.Name, serveAgain)
		if firstConfirm == 0 || confirmed[w] < firstConfirm {
			firstConfirm = confirmed[w]
		}
		perWorker += fmt.Sprintf("%s: first confirm %s, first apply %s; ", p.Name, confirmed[w].Round(time.Millisecond), applied[w].Round(time.Millisecond))
	}
	return firstConfirm, perWorker
}

// user is one user of the deployment.
type user struct {
	id    uuid.UUID
	token string
}

func (d *deployment) newUser(name string) user {
	d.t.Helper()
	a := e2ekit.Call(d.t, d.http, d.apis[0].Addr, http.StatusCreated, "POST", "/v1/users", adminToken, map[string]string{"name": name})
	m := a.JSON(d.t)
	return user{id: uuid.MustParse(m["id"].(string)), token: m["token"].(string)}
}

// attempt is one try of a command.
type attempt struct {
	status int // 0: no HTTP answer (err)
	err    string
	at     time.Time // when it was answered
}

// command is one command of the load, with every try of it: the same
// request and Idempotency-Key each time, until one answered 2xx.
type command struct {
	api      string
	kind     string // upload or delete
	key      string
	name     string // an upload's file name, one per command
	fileID   string // the upload's answer, or the file deleted
	position int64  // Epoch-Position of the 2xx answer
	tries    []attempt
}

// ok is the 2xx answer, if any.
func (c *command) ok() (attempt, bool) {
	if n := len(c.tries); n > 0 && c.tries[n-1].status/100 == 2 {
		return c.tries[n-1], true
	}
	return attempt{}, false
}

// load is a steady stream of uploads and deletes, each command retried
// with its Idempotency-Key while it answers 503, as DESIGN.md tells
// clients to.
type load struct {
	users    []*user
	stopping atomic.Bool
	wg       sync.WaitGroup

	mu       sync.Mutex
	commands []*command
}

func (d *deployment) startLoad(users int, pause time.Duration) *load {
	d.t.Helper()
	l := &load{}
	for u := range users {
		us := d.newUser(fmt.Sprint("load-", u))
		l.users = append(l.users, &us)
	}
	for g, u := range l.users {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			d.runLoad(l, g, u, pause)
		}()
	}
	d.t.Cleanup(l.stop)
	return l
}

// retryPause is the wait before a command is sent again after a 503.
const retryPause = 50 * time.Millisecond

func (d *deployment) runLoad(l *load, g int, u *user, pause time.Duration) {
	rng := rand.New(rand.NewPCG(uint64(g), uint64(time.Now().UnixNano())))
	var files []string // live
	for i := 0; !l.stopping.Load(); i++ {
		api := d.apis[i%len(d.apis)]
		c := &command{api: api.Name, key: fmt.Sprintf("load-%d-%d", g, i)}
		var method, path string
		var body any
		if len(files) < 4 || rng.Float64() < 0.6 {
			c.kind, c.name = "upload", fmt.Sprintf("f-%d-%d", g, i)
			method, path, body = "POST", "/v1/files", map[string]any{"name": c.name, "size_bytes": rng.Int64N(1 << 40)}
		} else {
			f := rng.IntN(len(files))
			c.kind, c.fileID = "delete", files[f]
			method, path = "DELETE", "/v1/files/"+c.fileID
			files = append(files[:f], files[f+1:]...)
		}
		l.mu.Lock()
		l.commands = append(l.commands, c)
		l.mu.Unlock()
		// Retried while the database is away, even once the load stops,
		// so that every command ends answered.
		for {
			a, err := request(d.http, api.Addr, method, path, u.token, c.key, body)
			try := attempt{at: time.Now()}
			if err != nil {
				try.err = err.Error()
			} else {
				try.status = a.Status
			}
			l.mu.Lock()
			c.tries = append(c.tries, try)
			if err == nil && a.Status/100 == 2 {
				if p, err := a.position(); err == nil {
					c.position = p
				}
				if c.kind == "upload" {
					var m map[string]any
					if json.Unmarshal(a.body, &m) == nil {
						c.fileID, _ = m["id"].(string)
					}
				}
			}
			l.mu.Unlock()
			if err != nil || a.Status != http.StatusServiceUnavailable {
				break
			}
			time.Sleep(retryPause)
		}
		if c.kind == "upload" && c.fileID != "" {
			files = append(files, c.fileID)
		}
		time.Sleep(pause)
	}
}

// stop ends the load and waits for its goroutines.
func (l *load) stop() {
	l.stopping.Store(true)
	l.wg.Wait()
}

// snapshot is the commands so far (their tries still growing while the
// load runs).
func (l *load) snapshot() []*command {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*command(nil), l.commands...)
}

// answered is how many commands were answered 2xx so far.
func (l *load) answered() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.commands {
		if _, ok := c.ok(); ok {
			n++
		}
	}
	return n
}

// firstOKAfter is, per api, how long after since its first 2xx answer
// came (0: none yet).
func (l *load) firstOKAfter(since time.Time, apis []*e2ekit.Proc) map[string]time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	first := map[string]time.Duration{}
	for _, c := range l.commands {
		for _, a := range c.tries {
			if a.status/100 == 2 && !a.at.Before(since) {
				if took := a.at.Sub(since); first[c.api] == 0 || took < first[c.api] {
					first[c.api] = took
				}
			}
		}
	}
	return first
}

// awaitFlow waits until n commands were answered and both subscribers
// applied events, so that the fault lands in a steady flow.
func (d *deployment) awaitFlow(ctx context.Context, l *load, n int) {
	d.t.Helper()
	e2ekit.Eventually(d.t, 60*time.Second, "load flowing", func() (bool, string) {
		st, bi := e2ekit.InboxCount(d.t, ctx, d.pool, "storage"), e2ekit.InboxCount(d.t, ctx, d.pool, "billing")
		return l.answered() >= n && st > 0 && bi > 0, fmt.Sprintf("%d commands answered, inbox storage %d billing %d", l.answered(), st, bi)
	})
}

// awaitAPIsBack waits until each api answered a command 2xx after since,
// at most serveAgain, and returns the earliest.
func (d *deployment) awaitAPIsBack(l *load, since time.Time) (time.Duration, map[string]time.Duration) {
	d.t.Helper()
	for {
		first := l.firstOKAfter(since, d.apis)
		if len(first) == len(d.apis) {
			var earliest time.Duration
			for _, api := range d.apis {
				require.LessOrEqual(d.t, first[api.Name], serveAgain, "%s's first 2xx command after the promotion", api.Name)
				if earliest == 0 || first[api.Name] < earliest {
					earliest = first[api.Name]
				}
			}
			return earliest, first
		}
		if time.Since(since) > serveAgain+time.Second {
			d.t.Fatalf("not every api answered a command 2xx within %s of the promotion: %v", serveAgain, first)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answer is an HTTP answer, read whole.
type answer struct {
	Status int
	header http.Header
	body   []byte
}

func (a answer) position() (int64, error) {
	var p int64
	_, err := fmt.Sscan(a.header.Get("Epoch-Position"), &p)
	return p, err
}

// request sends one command as token with its Idempotency-Key.
func request(client *http.Client, addr, method, path, token, key string, body any) (answer, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return answer{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+addr+path, rd)
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s on %s: %w", method, path, addr, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, fmt.Errorf("%s %s on %s: read the answer: %w", method, path, addr, err)
	}
	return answer{Status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// awaitListening waits until every process has its LISTEN session on the
// server that takes writes (the relays' wake-ups, the api's own
// notifications), at most serveAgain from since, and returns how long the
// last one took.
func (d *deployment) awaitListening(ctx context.Context, since time.Time) time.Duration {
	d.t.Helper()
	procs := append(slices.Clone(d.apis), d.workers...)
	for {
		var listening []string
		rows, err := d.pool.Query(ctx, `SELECT DISTINCT application_name FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN %'`)
		if err == nil {
			for rows.Next() {
				var name string
				if rows.Scan(&name) == nil {
					listening = append(listening, name)
				}
			}
			rows.Close()
		}
		missing := slices.DeleteFunc(slices.Clone(procs), func(p *e2ekit.Proc) bool { return slices.Contains(listening, p.Name) })
		if len(missing) == 0 {
			return time.Since(since)
		}
		if time.Since(since) > serveAgain {
			names := make([]string, len(missing))
			for i, p := range missing {
				names[i] = p.Name
			}
			d.t.Fatalf("not listening on the new primary %s after the promotion: %v (listening: %v, %v)", serveAgain, names, listening, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
