package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// statementsMetric counts every statement the api's pool sends.
const statementsMetric = "epoch_db_statements_total"

// b6 measures PUT /v1/jobs/{id}/files with many files against a one-file
// set in the same run: latency (median of several runs) and the number of
// statements the api sent for one request.
func (b *bench) b6(ctx context.Context) error {
	e := b.env
	user, err := e.newUser(ctx, "b6", 8)
	if err != nil {
		return err
	}
	job, err := user.createJob(ctx, "b6-job")
	if err != nil {
		return err
	}
	files, err := user.uploadMany(ctx, b.sz.b6Files, 8, "b6-file")
	if err != nil {
		return err
	}
	// Warm up: the first request of a kind pays for plan caching.
	for _, set := range [][]string{files, nil, files[:1], nil} {
		if _, err := user.setFiles(ctx, job, set); err != nil {
			return err
		}
	}
	measure := func(set []string) (median float64, statements float64, found bool, err error) {
		var ms []float64
		for run := range b.sz.b6Runs {
			before, ok, err := e.api.metric(ctx, statementsMetric)
			if err != nil {
				return 0, 0, false, err
			}
			start := time.Now()
			j, err := user.setFiles(ctx, job, set)
			if err != nil {
				return 0, 0, false, err
			}
			ms = append(ms, float64(time.Since(start).Microseconds())/1000)
			if len(j.Files) != len(set) {
				return 0, 0, false, fmt.Errorf("set of %d files answered %d", len(set), len(j.Files))
			}
			if run == 0 && ok {
				after, _, err := e.api.metric(ctx, statementsMetric)
				if err != nil {
					return 0, 0, false, err
				}
				statements, found = after-before, true
			}
			if _, err := user.setFiles(ctx, job, nil); err != nil {
				return 0, 0, false, err
			}
		}
		sort.Float64s(ms)
		return ms[len(ms)/2], statements, found, nil
	}
	cpu := sampleCPU(b.pids())
	manyMs, manyStmts, found, err := measure(files)
	if err != nil {
		return err
	}
	limited := cpuSince(cpu, b.pids())
	oneMs, oneStmts, _, err := measure(files[:1])
	if err != nil {
		return err
	}
	if b.pprofDir != "" {
		// Profile the api over more 1,000-file sets than the figure takes.
		const d = 5 * time.Second
		wait := b.profile(ctx, e.api, "B6", d)
		for end := time.Now().Add(d); time.Now().Before(end); {
			if _, err := user.setFiles(ctx, job, files); err != nil {
				return err
			}
			if _, err := user.setFiles(ctx, job, nil); err != nil {
				return err
			}
		}
		wait()
	}
	f := (&figure{Figure: "B6", Name: fmt.Sprintf("set_%d_files_latency", len(files)), Value: manyMs, Unit: "ms", LimitedBy: limited,
		Detail: map[string]any{"runs": b.sz.b6Runs, "ceiling_is": "median latency of a one-file set in the same run"}}).withCeiling(oneMs)
	b.r.add(f.judge("ratio<=5", *f.Ratio <= 5))
	if !found {
		return errors.New("the api does not expose " + statementsMetric + " on /metrics: statement count not measured")
	}
	s := (&figure{Figure: "B6", Name: fmt.Sprintf("set_%d_files_statements", len(files)), Value: manyStmts, Unit: "statements",
		Detail: map[string]any{"ceiling_is": "statements of a one-file set", "source": statementsMetric}}).withCeiling(oneStmts)
	b.r.add(s.judge("equal to one-file", manyStmts == oneStmts))
	return nil
}
