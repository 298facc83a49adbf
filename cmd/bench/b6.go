package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// statementsMetric counts every statement the api's pool sends.
const statementsMetric = "epoch_db_statements_total"

// b6 measures PUT /v1/jobs/{id}/files with many files against a one-file
// set in the same run: latency (median of several runs) and the number of
// statements the api sent for one request.
func (b *bench) b6(ctx context.Context) error {
	e := b.env
	user, err := e.NewUser(ctx, "b6", 8)
	if err != nil {
		return err
	}
	// Each size has a job of its own, so the one-file sets do not wade
	// through what the 1,000-file sets leave behind in job_files.
	jobs, err := user.CreateJobs(ctx, 2, 2, "b6-job")
	if err != nil {
		return err
	}
	files, err := user.UploadMany(ctx, b.sz.b6Files, 8, "b6-file")
	if err != nil {
		return err
	}
	jobOf := func(files int) string {
		if files == 1 {
			return jobs[1]
		}
		return jobs[0]
	}
	// Warm up: the first request of a kind pays for plan caching.
	for _, set := range [][]string{files, files[:1]} {
		for _, s := range [][]string{set, nil} {
			if _, err := user.SetFiles(ctx, jobOf(len(set)), s); err != nil {
				return err
			}
		}
	}
	// One timed set, then the reset to an empty job (untimed). The first
	// run of each size also counts the statements the api sent.
	timed := func(set []string, count bool) (ms, statements float64, found bool, err error) {
		job := jobOf(len(set))
		var before float64
		if count { // /metrics is read only around the counted sets
			if before, found, err = e.API.Metric(ctx, statementsMetric); err != nil {
				return 0, 0, false, err
			}
		}
		start := time.Now()
		j, err := user.SetFiles(ctx, job, set)
		if err != nil {
			return 0, 0, false, err
		}
		ms = float64(time.Since(start).Microseconds()) / 1000
		if len(j.Files) != len(set) {
			return 0, 0, false, fmt.Errorf("set of %d files answered %d", len(set), len(j.Files))
		}
		if found {
			after, _, err := e.API.Metric(ctx, statementsMetric)
			if err != nil {
				return 0, 0, false, err
			}
			statements = after - before
		}
		if _, err := user.SetFiles(ctx, job, nil); err != nil {
			return 0, 0, false, err
		}
		return ms, statements, found, nil
	}
	// Without HTTP: the same sets run through the application's own code
	// (direct, as B1's ceiling), each followed by the reset (untimed).
	raw, err := newDirect(ctx, e, user)
	if err != nil {
		return err
	}
	defer raw.pool.Close()
	fileIDs := make([]uuid.UUID, len(files))
	for i, f := range files {
		fileIDs[i] = uuid.MustParse(f)
	}
	set := func(job string, files []uuid.UUID) (int64, error) {
		return raw.run(ctx, job, func(ctx context.Context, tx *database.Tx, ref command.JobRef) (command.Outcome, error) {
			return raw.svc.SetJobFiles(ctx, tx, ref, files)
		})
	}
	rawTimed := func(files []uuid.UUID) (ms float64, err error) {
		job := jobOf(len(files))
		start := time.Now()
		count, err := set(job, files)
		ms = float64(time.Since(start).Microseconds()) / 1000
		if err == nil && count != int64(len(files)) {
			err = fmt.Errorf("direct set of %d files: file_count %d read back", len(files), count)
		}
		if err == nil {
			_, err = set(job, nil)
		}
		return ms, err
	}
	for _, set := range [][]uuid.UUID{fileIDs, fileIDs[:1]} { // warm up the pool's plans
		if _, err := rawTimed(set); err != nil {
			return err
		}
	}
	// The two sizes, through the api and raw, take turns, so a machine that
	// slows down or speeds up during the figure moves them all alike.
	var manyRuns, oneRuns, rawManyRuns, rawOneRuns []float64
	var manyStmts, oneStmts float64
	var found bool
	stopSelf := b.profileSelf("B6") // the raw sets' client side
	cpu := harness.SampleCPU(b.pids())
	for run := range b.sz.b6Runs {
		ms, stmts, ok, err := timed(files, run == 0)
		if err != nil {
			return err
		}
		manyRuns = append(manyRuns, ms)
		if run == 0 {
			manyStmts, found = stmts, ok
		}
		if ms, stmts, _, err = timed(files[:1], run == 0); err != nil {
			return err
		}
		oneRuns = append(oneRuns, ms)
		if run == 0 {
			oneStmts = stmts
		}
		if ms, err = rawTimed(fileIDs); err != nil {
			return err
		}
		rawManyRuns = append(rawManyRuns, ms)
		if ms, err = rawTimed(fileIDs[:1]); err != nil {
			return err
		}
		rawOneRuns = append(rawOneRuns, ms)
	}
	limited := cpu.Since(b.pids())
	stopSelf()
	median := func(xs []float64) float64 { sort.Float64s(xs); return xs[len(xs)/2] }
	manyMs, oneMs := median(manyRuns), median(oneRuns)
	rawManyMs, rawOneMs := median(rawManyRuns), median(rawOneRuns)
	if b.pprofDir != "" {
		// Profile the api over more 1,000-file sets than the figure takes.
		const d = 5 * time.Second
		wait := b.profile(ctx, e.API, "B6", d)
		for end := time.Now().Add(d); time.Now().Before(end); {
			if _, err := user.SetFiles(ctx, jobs[0], files); err != nil {
				return err
			}
			if _, err := user.SetFiles(ctx, jobs[0], nil); err != nil {
				return err
			}
		}
		wait()
	}
	f := (&figure{Figure: "B6", Name: fmt.Sprintf("set_%d_files_latency", len(files)), Value: manyMs, Unit: "ms", LimitedBy: limited,
		Detail: map[string]any{"runs": b.sz.b6Runs, "ceiling_is": "median latency of a one-file set in the same run"}}).withCeiling(oneMs)
	b.r.add(f.judge("ratio<=5", f.Ratio != nil && *f.Ratio <= 5))
	b.r.add((&figure{Figure: "B6", Name: fmt.Sprintf("raw_set_%d_files_latency", len(files)), Value: rawManyMs, Unit: "ms",
		Detail: map[string]any{"runs": b.sz.b6Runs, "ceiling_is": "median latency of the one-file set without HTTP in the same run",
			"api_over_raw_many": round3(manyMs / rawManyMs), "api_over_raw_one": round3(oneMs / rawOneMs)}}).withCeiling(rawOneMs))
	if !found {
		return errors.New("the api does not expose " + statementsMetric + " on /metrics: statement count not measured")
	}
	s := (&figure{Figure: "B6", Name: fmt.Sprintf("set_%d_files_statements", len(files)), Value: manyStmts, Unit: "statements",
		Detail: map[string]any{"ceiling_is": "statements of a one-file set", "source": statementsMetric}}).withCeiling(oneStmts)
	b.r.add(s.judge("equal to one-file", manyStmts == oneStmts))
	return nil
}
