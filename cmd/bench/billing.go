package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// billingHistory writes n uploads of owner, spread evenly over the year
// before end, straight into the event store (times of their own, as no
// command can write them), and has billing apply them through its own code
// in batches, as its consumer would.
func billingHistory(ctx context.Context, e *env, owner uuid.UUID, n int, end time.Time) error {
	step := (365 * 24 * time.Hour) / time.Duration(n)
	start := end.Add(-time.Duration(n) * step)
	return applyUploads(ctx, e, n, 20000, func(i int) (uuid.UUID, int64, time.Time) {
		return owner, int64(1000 + i%5000), start.Add(time.Duration(i) * step)
	})
}

// applyUploads writes n uploads (upload(i) gives the i-th's owner, size
// and time) straight into the event store, batch at a time, each batch
// applied by billing's own code in the same transaction, as its consumer
// would, then folds them into the ledgers.
func applyUploads(ctx context.Context, e *env, n, batch int, upload func(i int) (uuid.UUID, int64, time.Time)) error {
	for done := 0; done < n; done += batch {
		k := min(batch, n-done)
		evs := make([]eventstore.Event, k)
		for i := range k {
			owner, size, at := upload(done + i)
			ev, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
				domain.FileUploadedData{OwnerID: owner, Name: "bench", SizeBytes: size, ContentType: "a/b"}, at)
			if err != nil {
				return err
			}
			evs[i] = ev
		}
		err := database.InTx(ctx, e.pool, func(tx *database.Tx) error {
			if err := eventstore.Append(ctx, tx, evs); err != nil {
				return err
			}
			return dispatch.Deliver(ctx, tx, billing.Subscriber{}, evs)
		})
		if err != nil {
			return fmt.Errorf("%d uploads: %w", n, err)
		}
	}
	// Into the ledgers, as the billing worker's closer folds them.
	if _, err := billing.Fold(ctx, e.pool); err != nil {
		return err
	}
	return nil
}

// timeGets is the median and p99 latency of n GETs of path.
func timeGets(ctx context.Context, c *harness.Client, path string, n int) (p50, p99 float64, err error) {
	lat := make([]float64, 0, n)
	for range n {
		start := time.Now()
		if _, err := c.DrainBody(ctx, path); err != nil {
			return 0, 0, err
		}
		lat = append(lat, float64(time.Since(start).Microseconds())/1000)
	}
	sort.Float64s(lat)
	return percentile(lat, 0.5), percentile(lat, 0.99), nil
}

// b14 measures whether a usage read grows with history: GET /v1/usage over
// the last month, and its series of 744 hourly windows, for a user with
// b14Files files (1,000,000 in a full run), each beside the same read for
// a user with 1,000 files (the ceiling: at most 2×).
func (b *bench) b14(ctx context.Context) error {
	e := b.env
	now := time.Now().UTC().Truncate(time.Hour)
	users := map[string]int{"small": 1000, "large": b.sz.b14Files}
	clients := map[string]*harness.Client{}
	for name, n := range users {
		c, err := e.NewUser(ctx, "b14-"+name, 1)
		if err != nil {
			return err
		}
		owner, err := uuid.Parse(c.ID)
		if err != nil {
			return fmt.Errorf("B14: owner of %s: %w", name, err)
		}
		start := time.Now()
		if err := billingHistory(ctx, e, owner, n, now); err != nil {
			return fmt.Errorf("B14: %w", err)
		}
		b.log.Info("B14 history written", "user", name, "files", n, "took", time.Since(start))
		clients[name] = c
	}
	if err := settle(ctx, e); err != nil {
		return err
	}
	from, to := now.Add(-744*time.Hour), now
	month := "/v1/usage?" + url.Values{"from": {from.Format(time.RFC3339)}, "to": {to.Format(time.RFC3339)}}.Encode()
	hourly := month + "&window=hour&tz=Europe%2FBerlin"
	const n = 200
	for _, read := range []struct{ name, path string }{{"usage_month", month}, {"usage_744_hourly_windows", hourly}} {
		// Warm both first, so neither pays for the other's cold pages.
		for _, c := range clients {
			if _, _, err := timeGets(ctx, c, read.path, 10); err != nil {
				return fmt.Errorf("B14: %w", err)
			}
		}
		smallP50, smallP99, err := timeGets(ctx, clients["small"], read.path, n)
		if err != nil {
			return fmt.Errorf("B14: %w", err)
		}
		largeP50, largeP99, err := timeGets(ctx, clients["large"], read.path, n)
		if err != nil {
			return fmt.Errorf("B14: %w", err)
		}
		f := (&figure{Figure: "B14", Name: read.name + "_p50_ms", Value: round(largeP50), Unit: "ms",
			Detail: map[string]any{"large_files": b.sz.b14Files, "small_files": 1000, "reads": n,
				"large_p99_ms": round(largeP99), "small_p99_ms": round(smallP99)}}).withCeiling(smallP50)
		b.r.add(f.judge("≤ 2× the same read for a user with 1,000 files", *f.Ratio <= 2))
	}
	b.note("B14: one user's history of uploads (one a second-or-so over the year before, written into the event store with their own times and applied by billing's own code in batches of 20,000), and a user with 1,000 the same way; each read %d times after 10 warm-ups, p50 compared; the hourly series is 744 windows of Europe/Berlin's calendar.", n)
	return nil
}

// b15 measures how soon statements close: a deployment of its own with
// 10 s billing periods (an api and a worker with every role), commands
// landing at about 200 a second from 20 users for b15Duration, and for each
// statement of a period that ended during the load, the time from the
// period's end to its closed_at. Target: p99 ≤ 5 s.
func (b *bench) b15(ctx context.Context) error {
	e, err := b.env.sibling(ctx, "EPOCH_BILLING_PERIOD=10s")
	if err != nil {
		return err
	}
	defer e.close()
	if err := e.StartAPI(ctx); err != nil {
		return err
	}
	worker, err := e.startWorker(ctx, "relay,storage,billing")
	if err != nil {
		return err
	}
	defer harness.Stop(worker)
	const users, rate = 20, 200
	clients := make([]*harness.Client, users)
	for i := range clients {
		if clients[i], err = e.NewUser(ctx, fmt.Sprintf("b15-%d", i), 2); err != nil {
			return err
		}
	}
	loadStart := time.Now()
	g, gctx := errgroup.WithContext(ctx)
	interval := time.Second * users / rate
	var sent sync.WaitGroup
	for _, c := range clients {
		sent.Add(1)
		g.Go(func() error {
			defer sent.Done()
			var files []string
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for end := time.Now().Add(b.sz.b15Duration); time.Now().Before(end); <-tick.C {
				if len(files) > 5 {
					if err := c.DeleteFile(gctx, files[0]); err != nil {
						return err
					}
					files = files[1:]
					continue
				}
				f, err := c.UploadFile(gctx, "b15", 1_000_000)
				if err != nil {
					return err
				}
				files = append(files, f.ID)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("B15: load: %w", err)
	}
	loadEnd := time.Now()
	// The periods that ended while commands landed, all closed.
	var lat []float64
	deadline := time.Now().Add(60 * time.Second)
	for {
		rows, err := e.pool.Query(ctx, `SELECT extract(epoch FROM closed_at - period_end)::float8 FROM billing_statements
			WHERE period_end > $1 AND period_end <= $2`, loadStart.Add(10*time.Second), loadEnd)
		if err == nil {
			lat, err = pgx.CollectRows(rows, pgx.RowTo[float64])
		}
		if err != nil {
			return err
		}
		var due int
		err = e.pool.QueryRow(ctx, `SELECT count(*) FROM billing_owners o,
			generate_series(date_bin('10 seconds', o.first_upload_at, 'epoch') + interval '10 seconds', $2::timestamptz, interval '10 seconds') p
			WHERE p > $1`, loadStart.Add(10*time.Second), loadEnd).Scan(&due)
		if err != nil {
			return err
		}
		if len(lat) >= due && due > 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("B15: %d of %d statements closed after a minute", len(lat), due)
		}
		time.Sleep(500 * time.Millisecond)
	}
	sort.Float64s(lat)
	p99 := percentile(lat, 0.99)
	b.r.add((&figure{Figure: "B15", Name: "statement_close_after_period_end_p99_s", Value: round3(p99), Unit: "s",
		Detail: map[string]any{"statements": len(lat), "p50_s": round3(percentile(lat, 0.5)), "max_s": round3(lat[len(lat)-1]),
			"period": "10s", "commands_per_s": rate, "load_s": round(loadEnd.Sub(loadStart).Seconds())}}).
		judge("p99 ≤ 5 s (Stripe's grace period is an hour)", p99 <= 5))
	return nil
}

// b16 measures closing the statements of b16Users users at one period's
// end: each user uploaded once in the last period, billing applied it, and
// a closer (billing's own, in this process) that kept up through the
// period (Advance) closes every statement, from its first look after the
// end until the last is written. The ceiling: writing as many
// event rows of the same size and their outbox rows with COPY in one
// transaction (rolled back), in the same run: at most 3×.
func (b *bench) b16(ctx context.Context) error {
	e, err := b.env.sibling(ctx)
	if err != nil {
		return err
	}
	defer e.close()
	// The api applies the schema; B16 needs nothing else of it.
	if err := e.StartAPI(ctx); err != nil {
		return err
	}
	harness.Stop(e.API)
	e.API = nil
	n := b.sz.b16Users
	settings, err := billing.NewSettings("1h", "UTC", "", "")
	if err != nil {
		return err
	}
	var now time.Time
	if err := e.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&now); err != nil {
		return err
	}
	periodStart := now.Truncate(time.Hour).Add(-time.Hour)
	err = applyUploads(ctx, e, n, 10000, func(i int) (uuid.UUID, int64, time.Time) {
		return uuid.New(), 1_000_000_000, periodStart.Add(time.Duration(i) * time.Millisecond)
	})
	if err != nil {
		return fmt.Errorf("B16: users: %w", err)
	}
	if err := settle(ctx, e); err != nil {
		return err
	}

	// The ceiling first: n statement-sized events and outbox rows, COPY.
	sampleData := statementSample()
	copyStart := time.Now()
	err = database.InTx(ctx, e.pool, func(tx *database.Tx) error {
		var base int64
		if err := tx.QueryRow(ctx, "SELECT coalesce(max(position), 0) + 1000000 FROM events").Scan(&base); err != nil {
			return err
		}
		rows := make([][]any, n)
		outbox := make([][]any, n)
		for i := range n {
			id := uuid.New()
			rows[i] = []any{base + int64(i), id, domain.StreamStatement, id, int32(1), domain.StatementClosed, sampleData, now}
			outbox[i] = []any{base + int64(i), base + int64(i), int16(i % 64)}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"events"}, []string{"position", "id", "stream_type", "stream_id", "version", "type", "data", "occurred_at"}, pgx.CopyFromRows(rows)); err != nil {
			return err
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"outbox"}, []string{"position", "last_position", "partition"}, pgx.CopyFromRows(outbox)); err != nil {
			return err
		}
		return errRollback
	})
	if err != nil && err != errRollback {
		return fmt.Errorf("B16 ceiling: %w", err)
	}
	ceiling := time.Since(copyStart)

	closer := billing.NewCloser(e.pool, billing.CloserConfig{Settings: settings}, slog.New(slog.DiscardHandler))
	// A running closer looks four times a second through the period, so
	// at its end the ledger is folded and billing's progress is current:
	// the close starts from there.
	if err := harness.WaitFor(ctx, time.Minute, 50*time.Millisecond, func() (bool, error) {
		if err := closer.Advance(ctx); err != nil {
			return false, err
		}
		var current bool
		err := e.pool.QueryRow(ctx, "SELECT complete_through >= (SELECT max(position) FROM events WHERE stream_type = 'file') FROM billing_progress").Scan(&current)
		return current, err
	}); err != nil {
		return fmt.Errorf("B16: advance: %w", err)
	}
	stopSelfProfile := b.profileSelf("B16") // the closer runs in this process
	defer stopSelfProfile()
	closeStart := time.Now()
	for {
		if err := closer.Tick(ctx); err != nil {
			return fmt.Errorf("B16: close: %w", err)
		}
		var closed int
		if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM billing_statements").Scan(&closed); err != nil {
			return err
		}
		if closed >= n {
			break
		}
		if time.Since(closeStart) > 10*time.Minute {
			return fmt.Errorf("B16: %d of %d closed after 10 minutes", closed, n)
		}
	}
	took := time.Since(closeStart)
	f := (&figure{Figure: "B16", Name: "close_statements_s", Value: round3(took.Seconds()), Unit: "s",
		Detail: map[string]any{"users": n, "ceiling_copy_s": round3(ceiling.Seconds()), "batch": billing.DefaultCloseBatch}}).
		withCeiling(ceiling.Seconds())
	b.r.add(f.judge("≤ 3× writing as many event and outbox rows with COPY in one transaction", *f.Ratio <= 3))
	return nil
}

var errRollback = fmt.Errorf("rolled back on purpose")

// statementSample is a statement.closed event's data of the usual size.
func statementSample() []byte {
	return []byte(`{"id": "0d2b8f4e-5a71-4c3e-9f0a-7e6b1c9d4a22", "lines": [{"tier": 1, "amount": "0.000030000000000000", "gb_hours": "1", "price_per_gb_hour": "0.00003"}], "state": "closed", "amount": "0.00003", "currency": "USD", "gb_hours": "1", "owner_id": "6b1f0d3a-9c6e-4e0b-8a55-5d9c2f1e7a01", "closed_at": "2026-12-07T12:00:01.123456Z", "period_end": "2026-12-07T12:00:00Z", "amount_due": "0.00", "byte_seconds": "3600000000000", "period_start": "2026-12-07T11:00:00Z", "events_sha256": "c1d1710736a0a7612cb029d480d873bf01656256331a53eca32fcdffab274675", "price_version": 0, "covered_position": 123456}`)
}
