package main

import (
	"context"
	"fmt"
	"time"

	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// b8 times each subscriber working off the backlog B2's relay left in its
// queue: from starting a worker with only that role until its inbox holds
// every message and its queue is empty. Target: at least the relay's rate.
func (b *bench) b8(ctx context.Context) error {
	e := b.env
	if b.b2Messages == 0 {
		return fmt.Errorf("B8 needs the backlog of B2, which did not run")
	}
	for _, sub := range subscribers.Movable().Names() {
		var before int
		if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE subscriber = $1", sub).Scan(&before); err != nil {
			return err
		}
		start := time.Now()
		cpu := harness.SampleCPU(b.pids())
		worker, err := e.startWorker(ctx, sub)
		if err != nil {
			return err
		}
		waitProfile := b.profile(ctx, worker, "B8-"+sub, b.sz.drainBudget/120)
		// Progress is read from the worker's own count of events new to
		// its inbox (counted after each batch commits), not by counting
		// the inbox: a count(*) of a growing table every 20 ms is Postgres
		// work the bench would add to a drain that is itself bound by
		// Postgres. The inbox is counted once, after.
		err = harness.WaitFor(ctx, b.sz.drainBudget, 20*time.Millisecond, func() (bool, error) {
			n, _, err := worker.Metric(ctx, "epoch_consumer_processed_total")
			return int(n) >= b.b2Messages, err
		})
		if err == nil { // duplicates past the inbox count are no-ops still queued
			err = harness.WaitFor(ctx, b.sz.drainBudget, 20*time.Millisecond, func() (bool, error) {
				n, err := harness.QueueMessages(e.Vhost.URL, "catacloud."+sub)
				return n == 0, err
			})
		}
		elapsed := time.Since(start)
		limited := cpu.Since(b.pids(worker))
		if err == nil {
			var n int
			if err = e.pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE subscriber = $1", sub).Scan(&n); err == nil && n-before < b.b2Messages {
				err = fmt.Errorf("its inbox holds %d of the %d events its worker counted", n-before, b.b2Messages)
			}
		}
		var rss int64
		if err == nil {
			rss, err = worker.PeakRSS()
		}
		waitProfile()
		harness.Stop(worker)
		if err != nil {
			return fmt.Errorf("%s did not drain its queue: %w\n%s", sub, err, worker.Tail(3000))
		}
		rate := float64(b.b2Messages) / elapsed.Seconds()
		f := (&figure{Figure: "B8", Name: sub + "_drain_msgs_per_s", Value: rate, Unit: "msg/s", LimitedBy: limited,
			Detail: map[string]any{"messages": b.b2Messages, "seconds": round3(elapsed.Seconds()), "peak_rss_mib": rss >> 20,
				"ceiling_is": "the relay's B2 rate", "timed": "from starting the worker process to a full inbox (the worker's epoch_consumer_processed_total) and an empty queue"}}).withCeiling(b.relayRate)
		b.r.add(f.judge(">=1 (relay's rate)", rate >= b.relayRate))
	}
	b.note("B8: the subscriber queues hold the %d file events B2's relay published (no consumer ran meanwhile), so each subscriber drains real relay output.", b.b2Messages)
	return nil
}
