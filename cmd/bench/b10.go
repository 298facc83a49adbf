package main

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/catacloud/epoch/internal/testkit/harness"
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
		c        *harness.Client
		position int64
	}
	waiters := make([]waiter, users)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i := range users {
		g.Go(func() error {
			c, err := e.NewUser(gctx, fmt.Sprintf("b10-waiter-%d", i), perUser)
			if err != nil {
				return err
			}
			f, err := c.UploadFile(gctx, fmt.Sprintf("b10-waiter-%d.bin", i), int64(1000+i))
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
	bystander, err := e.NewUser(ctx, "b10-bystander", b10Conc)
	if err != nil {
		return err
	}
	files, err := bystander.UploadMany(ctx, b10Files, b10Files, "b10-bystander")
	if err != nil {
		return err
	}
	job, err := bystander.CreateJob(ctx, "b10-bystander-job")
	if err != nil {
		return err
	}
	if _, err := bystander.SetFiles(ctx, job, files); err != nil {
		return err
	}
	// The bystander alternates its two plain reads, checking each is 200.
	paths := []string{"/v1/jobs/" + job, "/v1/files"}
	read := func(ctx context.Context, c *harness.Client, i int) error {
		_, err := c.DrainBody(ctx, paths[i%len(paths)])
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
	stats, err := pgx.Connect(ctx, e.DB.Server) // not the bench database: no xacts of ours in it
	if err != nil {
		return err
	}
	defer stats.Close(ctx)
	if err := harness.Sleep(ctx, b.sz.b10StatsLag); err != nil {
		return err
	}
	idleXacts, err := harness.CommitRate(ctx, stats, e.DB.Name, b.sz.b10Duration)
	if err != nil {
		return err
	}

	// No waits: the bystander's baseline.
	cpu := harness.SampleCPU(b.pids())
	base, err := closedLoopLatency(ctx, b10Conc, b.sz.b10Duration, bystander, read)
	if err != nil {
		return fmt.Errorf("B10: reads with no waits: %w", err)
	}
	baseCPU := cpu.Since(b.pids())

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
				if harness.Sleep(wctx, delay) != nil {
					return
				}
				for wctx.Err() == nil {
					status, err := w.c.Status(wctx, path)
					switch {
					case wctx.Err() != nil:
						return
					case err != nil:
					case status == http.StatusGatewayTimeout:
						timeouts.Add(1)
						continue
					case status == http.StatusTooManyRequests:
						tooMany.Add(1)
						_ = harness.Sleep(wctx, time.Second) // its Retry-After
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
	if err := harness.WaitFor(ctx, httpapi.DefaultCatchUpTimeout+10*time.Second, 50*time.Millisecond, func() (bool, error) {
		if err := failed(); err != nil {
			return false, err
		}
		v, found, err := e.API.Metric(ctx, storageWaits)
		if err == nil && !found {
			err = fmt.Errorf("the api has no %s", storageWaits)
		}
		return v >= float64(want), err
	}); err != nil {
		return fmt.Errorf("B10: %d waits never in flight: %w", want, err)
	}

	// The bystander again, with the waits held.
	stopSampling := e.API.SampleMetric(ctx, storageWaits, 250*time.Millisecond)
	timeoutsBefore := timeouts.Load()
	cpu = harness.SampleCPU(b.pids())
	loaded, err := closedLoopLatency(ctx, b10Conc, b.sz.b10Duration, bystander, read)
	if err != nil {
		return fmt.Errorf("B10: reads with %d waits: %w", want, err)
	}
	limited := cpu.Since(b.pids())
	timeoutsDuring := timeouts.Load() - timeoutsBefore

	// The waits alone, b10StatsLag after the bystander's last read: the
	// database's transactions, and the statements the api sent for
	// requests (the waits' first looks; the watcher's looks run on its
	// background pool and are only in the transactions).
	if err := harness.Sleep(ctx, b.sz.b10StatsLag); err != nil {
		return err
	}
	stmts0, _, err := e.API.Metric(ctx, "epoch_db_statements_total")
	if err != nil {
		return err
	}
	window := max(b.sz.b10Duration, httpapi.DefaultCatchUpTimeout) // one round of every wait
	t0 := time.Now()
	waitXacts, err := harness.CommitRate(ctx, stats, e.DB.Name, window)
	if err != nil {
		return err
	}
	stmts1, _, err := e.API.Metric(ctx, "epoch_db_statements_total")
	if err != nil {
		return err
	}
	apiStmts := (stmts1 - stmts0) / time.Since(t0).Seconds()
	inFlight := describeSamples(stopSampling())
	if err := failed(); err != nil {
		return fmt.Errorf("B10: waits: %w", err)
	}
	if err := endWaits(); err != nil {
		return fmt.Errorf("B10: waits: %w", err)
	}
	// The cancelled waits leave the api before the next figure starts.
	if err := harness.WaitFor(ctx, 10*time.Second, 50*time.Millisecond, func() (bool, error) {
		v, _, err := e.API.Metric(ctx, storageWaits)
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
// to back for d and returns every op's latency in ms, sorted. Client k's
// ops are numbered from k.
func closedLoopLatency(ctx context.Context, c int, d time.Duration, user *harness.Client, op func(context.Context, *harness.Client, int) error) ([]float64, error) {
	var mu sync.Mutex
	var lat []float64
	conns, next := make([]*harness.Client, c), make([]int, c)
	for k := range c {
		conns[k], next[k] = user.WithConns(1), k
	}
	_, err := harness.ClosedLoop(ctx, c, d, func(ctx context.Context, k int) error {
		t0 := time.Now()
		if err := op(ctx, conns[k], next[k]); err != nil {
			return err
		}
		next[k]++
		ms := float64(time.Since(t0).Microseconds()) / 1000
		mu.Lock()
		lat = append(lat, ms)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(lat) == 0 {
		return nil, errors.New("no read finished")
	}
	sort.Float64s(lat)
	return lat, nil
}

// describeSamples gives the count, the least, the most and the mean of
// samples.
func describeSamples(samples []float64) map[string]any {
	if len(samples) == 0 {
		return map[string]any{"samples": 0}
	}
	lo, hi, sum := math.Inf(1), math.Inf(-1), 0.0
	for _, v := range samples {
		lo, hi, sum = min(lo, v), max(hi, v), sum+v
	}
	return map[string]any{"samples": len(samples), "min": lo, "max": hi, "mean": round(sum / float64(len(samples)))}
}
