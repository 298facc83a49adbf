package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// b4 counts stale previews over link-then-read pairs: PUT a link, then GET
// the job on another HTTP client (its own connections) right after.
func (b *bench) b4(ctx context.Context) error {
	const workers, filesPerWorker = 8, 4
	writer, err := b.env.NewUser(ctx, "b4", workers)
	if err != nil {
		return err
	}
	reader := writer.WithConns(workers)
	jobs, err := writer.CreateJobs(ctx, workers, workers, "b4-job")
	if err != nil {
		return err
	}
	files, err := writer.UploadMany(ctx, workers*filesPerWorker, workers, "b4-file")
	if err != nil {
		return err
	}
	var next, stale, pairs atomic.Int64
	start := time.Now()
	cpu := harness.SampleCPU(b.pids())
	var g errgroup.Group
	for w := range workers {
		g.Go(func() error {
			for i := 0; next.Add(1) <= int64(b.sz.b4Pairs); i++ {
				file := files[w*filesPerWorker+i%filesPerWorker]
				if _, err := writer.Link(ctx, jobs[w], file); err != nil {
					return err
				}
				j, err := reader.GetJob(ctx, jobs[w])
				if err != nil {
					return err
				}
				pairs.Add(1)
				if !j.Has(file) {
					stale.Add(1)
				}
				if _, err := writer.Unlink(ctx, jobs[w], file); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if pairs.Load() != int64(b.sz.b4Pairs) {
		return fmt.Errorf("B4 ran %d pairs of %d", pairs.Load(), b.sz.b4Pairs)
	}
	b.r.add((&figure{Figure: "B4", Name: "stale_previews", Value: float64(stale.Load()), Unit: "stale",
		LimitedBy: cpu.Since(b.pids()),
		Detail:    map[string]any{"pairs": pairs.Load(), "workers": workers, "seconds": round3(time.Since(start).Seconds())}}).
		judge("0", stale.Load() == 0))
	return nil
}
