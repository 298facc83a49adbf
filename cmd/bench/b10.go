package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/delivery/catchup"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/subscribers/storage"
)

// b10Conc is how many closed-loop clients the bystander reads with in B10.
const b10Conc = 4

// b10Files is how many files the bystander owns (all linked to its job).
const b10Files = 5

// storageWaits is the api's gauge of the storage subscriber's waits.
var storageWaits = fmt.Sprintf(`epoch_api_catchup_waits{subscriber="%s"}`, storage.Name)

// b10 measures whether min_position waits slow other users down. No
// storage subscriber runs (B10 comes before any worker starts), so every
// GET /v1/storage?min_position= of a user who uploaded a file waits its
// whole httpapi.DefaultCatchUpTimeout and answers 504. b10Waits such waits
// are held throughout (catchup.DefaultMaxWaitsPerOwner per user, each
// restarted as soon as it ends), while a bystander user reads its job and
// its files closed loop; the figure is the bystander's p99 against the
// same reads with no waits, in the same run.
func (b *bench) b10(ctx context.Context) error {
	e := b.env
	perUser := catchup.DefaultMaxWaitsPerOwner
	users := (b.sz.b10Waits + perUser - 1) / perUser
	held := users * perUser

	// The waiters: one file each, so their min_position is a position the
	// stopped storage subscriber never applies.
	type waiter struct {
		c        *client
		position int64
	}
	waiters := make([]waiter, users)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range users {
		g.Go(func() error {
			c, err := e.newUser(gctx, fmt.Sprintf("b10-waiter-%d", i), perUser)
			if err != nil {
				return err
			}
			f, err := c.uploadFileOut(gctx, fmt.Sprintf("b10-waiter-%d.bin", i), int64(1000+i))
			if err != nil {
				return err
			}
			waiters[i] = waiter{c: c, position: f.Position}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("B10: waiters: %w", err)
	}
	bystander, err := e.newUser(ctx, "b10-bystander", b10Conc)
	if err != nil {
		return err
	}
	files, err := bystander.uploadMany(ctx, b10Files, b10Files, "b10-bystander")
	if err != nil {
		return err
	}
	job, err := bystander.createJob(ctx, "b10-bystander-job")
	if err != nil {
		return err
	}
	if _, err := bystander.setFiles(ctx, job, files); err != nil {
		return err
	}
	// The bystander alternates its two plain reads, checking each is 200.
	paths := []string{"/v1/jobs/" + job, "/v1/files"}
	read := func(ctx context.Context, c *client, i int) error {
		_, err := c.drainBody(ctx, paths[i%len(paths)])
		return err
	}
	for i := range 20 { // warm-up: connections, caches, plans
		if err := read(ctx, bystander, i); err != nil {
			return fmt.Errorf("B10: warm-up: %w", err)
		}
	}

	// What the database sees with the api alone (its background work:
	// the backpressure gate's looks). A backend that falls idle reports
	// its statistics up to Postgres's PGSTAT_IDLE_INTERVAL (10 s) later,
	// so each transaction count starts b10StatsLag after the last request
	// that is not its own.
	stats, err := pgx.Connect(ctx, e.serverURL) // not the bench database: no xacts of ours in it
	if err != nil {
		return err
	}
	defer stats.Close(ctx)
	if err := sleep(ctx, b.sz.b10StatsLag); err != nil {
		return err
	}
	idleXacts, err := xactRate(ctx, stats, e.dbName, b.sz.b10Duration)
	if err != nil {
		return err
	}

	// No waits: the bystander's baseline.
	cpu := sampleCPU(b.pids())
	base, err := closedLoopLatency(ctx, b10Conc, b.sz.b10Duration, bystander, read)
	if err != nil {
		return fmt.Errorf("B10: reads with no waits: %w", err)
	}
	baseCPU := cpuSince(cpu, b.pids())

	// The waits: perUser loops per waiter, their first starts spread over
	// one timeout so that they end (and start again) evenly, not all at
	// once every httpapi.DefaultCatchUpTimeout.
	var timeouts, tooMany atomic.Int64
	wctx, stopWaits := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var errMu sync.Mutex
	var waitErr error // the first wait that answered neither 504 nor 429
	failed := func() error {
		errMu.Lock()
		defer errMu.Unlock()
		return waitErr
	}
	for i, w := range waiters {
		path := fmt.Sprintf("/v1/storage?min_position=%d", w.position)
		for j := range perUser {
			delay := httpapi.DefaultCatchUpTimeout * time.Duration(i*perUser+j) / time.Duration(held)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if sleep(wctx, delay) != nil {
					return
				}
				for wctx.Err() == nil {
					status, err := w.c.status(wctx, path)
					switch {
					case wctx.Err() != nil:
						return
					case err != nil:
					case status == http.StatusGatewayTimeout:
						timeouts.Add(1)
						continue
					case status == http.StatusTooManyRequests:
						tooMany.Add(1)
						_ = sleep(wctx, time.Second) // its Retry-After
						continue
					default:
						err = fmt.Errorf("GET %s: %d, want 504 (no storage subscriber runs)", path, status)
					}
					errMu.Lock()
					if waitErr == nil {
						waitErr = err
					}
					errMu.Unlock()
					stopWaits()
					return
				}
			}()
		}
	}
	endWaits := func() error {
		stopWaits()
		wg.Wait()
		return failed()
	}
	defer func() { _ = endWaits() }() // on an early return; ended below otherwise

	// Held: every wait in flight at once (a handful between answer and
	// restart at any moment).
	want := b.sz.b10Waits
	if err := waitFor(ctx, httpapi.DefaultCatchUpTimeout+10*time.Second, 50*time.Millisecond, func() (bool, error) {
		if err := failed(); err != nil {
			return false, err
		}
		v, found, err := e.api.metric(ctx, storageWaits)
		if err == nil && !found {
			err = fmt.Errorf("the api has no %s", storageWaits)
		}
		return v >= float64(want), err
	}); err != nil {
		return fmt.Errorf("B10: %d waits never in flight: %w", want, err)
	}

	// The bystander again, with the waits held.
	sampler := newWaitSampler(ctx, e.api)
	timeoutsBefore := timeouts.Load()
	cpu = sampleCPU(b.pids())
	loaded, err := closedLoopLatency(ctx, b10Conc, b.sz.b10Duration, bystander, read)
	if err != nil {
		return fmt.Errorf("B10: reads with %d waits: %w", want, err)
	}
	limited := cpuSince(cpu, b.pids())
	timeoutsDuring := timeouts.Load() - timeoutsBefore

	// The waits alone, b10StatsLag after the bystander's last read: the
	// database's transactions, and the statements the api sent for
	// requests (the waits' first looks; the watcher's looks run on its
	// background pool and are only in the transactions).
	if err := sleep(ctx, b.sz.b10StatsLag); err != nil {
		return err
	}
	stmts0, _, err := e.api.metric(ctx, "epoch_db_statements_total")
	if err != nil {
		return err
	}
	window := max(b.sz.b10Duration, httpapi.DefaultCatchUpTimeout) // one round of every wait
	t0 := time.Now()
	waitXacts, err := xactRate(ctx, stats, e.dbName, window)
	if err != nil {
		return err
	}
	stmts1, _, err := e.api.metric(ctx, "epoch_db_statements_total")
	if err != nil {
		return err
	}
	apiStmts := (stmts1 - stmts0) / time.Since(t0).Seconds()
	inFlight := sampler.stop()
	if err := failed(); err != nil {
		return fmt.Errorf("B10: waits: %w", err)
	}
	if err := endWaits(); err != nil {
		return fmt.Errorf("B10: waits: %w", err)
	}
	// The cancelled waits leave the api before the next figure starts.
	if err := waitFor(ctx, 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		v, _, err := e.api.metric(ctx, storageWaits)
		return v == 0, err
	}); err != nil {
		return fmt.Errorf("B10: waits still in the api after they were cancelled: %w", err)
	}

	f := (&figure{Figure: "B10", Name: fmt.Sprintf("bystander_get_p99_with_%d_waits", want), Concurrency: b10Conc,
		Value: percentile(loaded, 99), Unit: "ms", LimitedBy: limited, Detail: map[string]any{
			"ceiling_is":          "the bystander's p99 with no waits, in the same run",
			"reads":               "GET /v1/jobs/{id} and GET /v1/files in turn, closed loop",
			"seconds":             b.sz.b10Duration.Seconds(),
			"gets_no_waits":       len(base),
			"gets_with_waits":     len(loaded),
			"get_p50_ms_no_waits": round3(percentile(base, 50)), "get_p50_ms_with_waits": round3(percentile(loaded, 50)),
			"get_max_ms_no_waits": round3(base[len(base)-1]), "get_max_ms_with_waits": round3(loaded[len(loaded)-1]),
			"no_waits_cpu":  baseCPU,
			"waiting_users": users, "waits_per_user": perUser, "waits_held": held,
			"waits_in_flight": inFlight,
			"timeouts_504":    timeouts.Load(), "timeouts_504_during_reads": timeoutsDuring,
			"too_many_waits_429":           tooMany.Load(),
			"db_xacts_per_s_while_waiting": round(waitXacts), "db_xacts_per_s_idle": round(idleXacts),
			"db_xacts_window_s":                  round3(window.Seconds()),
			"api_statements_per_s_while_waiting": round(apiStmts),
		}}).withCeiling(percentile(base, 99))
	b.r.add(f.judge("ratio<=2", f.Ratio != nil && *f.Ratio <= 2))
	b.note("B10: no storage subscriber runs, so each of %d users, who uploaded one file, holds %d GET /v1/storage?min_position= waits (catchup.DefaultMaxWaitsPerOwner) that each end after httpapi.DefaultCatchUpTimeout (%s) with a 504 and start again at once, the first starts spread over one timeout; with %d or more in flight (epoch_api_catchup_waits, sampled every 250 ms in the detail), a bystander user reads its job (%d files) and its file list in turn from %d closed-loop clients for %s, against the same reads with no waits just before. The waits in flight are sampled over the reads with waits and the window after. db_xacts_per_s_while_waiting is the bench database's pg_stat_database xact_commit delta over %s with only the waits running, %s after the bystander's last read (a backend that falls idle reports its statistics up to 10 s later, PGSTAT_IDLE_INTERVAL); db_xacts_per_s_idle the same over %s with the api alone (its backpressure gate looks at the outbox every 200 ms), %s after the setup; api_statements_per_s_while_waiting is epoch_db_statements_total over the waits' window (their first looks; the watcher's looks run on the api's background pool).",
		users, perUser, httpapi.DefaultCatchUpTimeout, want, b10Files, b10Conc, b.sz.b10Duration, window, b.sz.b10StatsLag, b.sz.b10Duration, b.sz.b10StatsLag)
	return nil
}

// closedLoopLatency runs op from c clients (each its own connection) back
// to back for d and returns every op's latency in ms, sorted.
func closedLoopLatency(ctx context.Context, c int, d time.Duration, user *client, op func(context.Context, *client, int) error) ([]float64, error) {
	var mu sync.Mutex
	var lat []float64
	g, gctx := errgroup.WithContext(ctx)
	deadline := time.Now().Add(d)
	for k := range c {
		conn := user.withConn(1)
		g.Go(func() error {
			for i := k; time.Now().Before(deadline); i++ {
				t0 := time.Now()
				if err := op(gctx, conn, i); err != nil {
					return err
				}
				ms := float64(time.Since(t0).Microseconds()) / 1000
				mu.Lock()
				lat = append(lat, ms)
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, errors.New("no read finished")
	}
	sort.Float64s(lat)
	return lat, nil
}

// xactRate is the transactions committed per second in database db over d
// (pg_stat_database.xact_commit), read through conn, which must be
// connected to another database so its reads are not counted.
func xactRate(ctx context.Context, conn *pgx.Conn, db string, d time.Duration) (float64, error) {
	read := func() (int64, time.Time, error) {
		var n int64
		err := conn.QueryRow(ctx, "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", db).Scan(&n)
		return n, time.Now(), err
	}
	n0, t0, err := read()
	if err != nil {
		return 0, err
	}
	if err := sleep(ctx, d); err != nil {
		return 0, err
	}
	n1, t1, err := read()
	if err != nil {
		return 0, err
	}
	return float64(n1-n0) / t1.Sub(t0).Seconds(), nil
}

// waitSampler reads the api's storage waits gauge every 250 ms until
// stopped.
type waitSampler struct {
	stopc   chan struct{}
	done    chan struct{}
	samples []float64
}

func newWaitSampler(ctx context.Context, api *proc) *waitSampler {
	s := &waitSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if v, found, err := api.metric(ctx, storageWaits); err == nil && found {
				s.samples = append(s.samples, v)
			}
			select {
			case <-s.stopc:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the sampling and describes the samples.
func (s *waitSampler) stop() map[string]any {
	close(s.stopc)
	<-s.done
	if len(s.samples) == 0 {
		return map[string]any{"samples": 0}
	}
	lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
	for _, v := range s.samples {
		lo, hi, sum = min(lo, v), max(hi, v), sum+v
	}
	return map[string]any{"samples": len(s.samples), "min": lo, "max": hi, "mean": round(sum / float64(len(s.samples)))}
}

// uploadFileOut uploads a file and returns the answer (its id and the
// command's position).
func (c *client) uploadFileOut(ctx context.Context, name string, size int64) (fileOut, error) {
	var f fileOut
	err := c.call(ctx, http.MethodPost, "/v1/files", map[string]any{"name": name, "size_bytes": size, "content_type": "application/octet-stream"}, http.StatusCreated, &f)
	return f, err
}

// status GETs path and returns the answer's status, the body read and
// dropped so the connection is kept.
func (c *client) status(ctx context.Context, path string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
