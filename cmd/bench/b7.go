package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// b7 drives uploads and deletes at B1's best command rate with the relay
// and both subscribers running, samples the outbox backlog and each
// subscriber's lag every second, and reports their least-squares slopes.
func (b *bench) b7(ctx context.Context) error {
	e := b.env
	worker, err := b.fullWorker(ctx)
	if err != nil {
		return err
	}
	rate := b.bestRate
	if rate <= 0 {
		rate = 500
		b.note("B7: B1 did not run; driven at 500 commands/s.")
	}
	user, err := e.NewUser(ctx, "b7", 128)
	if err != nil {
		return err
	}
	load := &harness.FileLoad{User: user, Rate: rate, MaxInFlight: 128}
	type series struct{ t, backlog, lagStorage, lagBilling, qStorage, qBilling []float64 }
	var s series
	sampleErr := make(chan error, 1)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	start := time.Now()
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				sampleErr <- nil
				return
			case <-tick.C:
			}
			var backlog, head, posStorage, posBilling float64
			err := e.pool.QueryRow(ctx, `SELECT
				(SELECT coalesce(sum(last_position - position + 1), 0) FROM outbox)::float8,
				(SELECT coalesce(max(position), 0) FROM events WHERE stream_type = 'file')::float8,
				(SELECT coalesce(max(position), 0) FROM inbox WHERE subscriber = 'storage')::float8,
				(SELECT coalesce(max(position), 0) FROM inbox WHERE subscriber = 'billing')::float8`).
				Scan(&backlog, &head, &posStorage, &posBilling)
			if err != nil {
				sampleErr <- err
				return
			}
			qs, err1 := harness.QueueMessages(e.Vhost.URL, "catacloud.storage")
			qb, err2 := harness.QueueMessages(e.Vhost.URL, "catacloud.billing")
			if err := errors.Join(err1, err2); err != nil {
				sampleErr <- err
				return
			}
			s.t = append(s.t, time.Since(start).Seconds())
			s.backlog = append(s.backlog, backlog)
			s.lagStorage = append(s.lagStorage, head-posStorage)
			s.lagBilling = append(s.lagBilling, head-posBilling)
			s.qStorage = append(s.qStorage, float64(qs))
			s.qBilling = append(s.qBilling, float64(qb))
		}
	}()
	cpu := harness.SampleCPU(b.pids(worker))
	waitWorker := b.profile(ctx, worker, "B7", b.sz.b7Duration/2)
	waitAPI := b.profile(ctx, e.API, "B7", b.sz.b7Duration/2)
	loadErr := load.Run(ctx, b.sz.b7Duration)
	waitWorker()
	waitAPI()
	elapsed := time.Since(start)
	stopSampling()
	if err := errors.Join(loadErr, <-sampleErr); err != nil {
		return err
	}
	limited := cpu.Since(b.pids(worker))
	if len(s.t) < 2 {
		return fmt.Errorf("B7: only %d samples", len(s.t))
	}
	achieved := float64(load.Done.Load()) / elapsed.Seconds()
	// Flat: growing by less than 1% of the command rate per second, i.e.
	// falling behind by under 1 command in 100 (a backlog that merely
	// wobbles has a slope near 0).
	bound := max(1, 0.01*achieved)
	last := func(v []float64) float64 { return v[len(v)-1] }
	add := func(name string, y, q []float64) {
		sl := slope(s.t, y)
		d := map[string]any{"samples": len(s.t), "final": last(y), "max": maxOf(y),
			"target_rate_per_s": round(rate), "achieved_rate_per_s": round(achieved), "missed_slots": load.Missed.Load()}
		if q != nil {
			d["queue_depth_slope_per_s"] = round3(slope(s.t, q))
			d["queue_depth_final"] = last(q)
		}
		b.r.add((&figure{Figure: "B7", Name: name, Value: sl, Unit: "per s", LimitedBy: limited, Detail: d}).
			judge(fmt.Sprintf("slope<=%.1f/s (1%% of rate)", bound), sl <= bound))
	}
	add("outbox_backlog_slope", s.backlog, nil)
	add("storage_lag_slope", s.lagStorage, s.qStorage)
	add("billing_lag_slope", s.lagBilling, s.qBilling)
	b.note("B7: uploads and deletes open-loop at B1's best rate (%.0f/s) for %s, one worker with relay, storage and billing; every second the outbox backlog (events), each subscriber's lag in positions (newest file event minus the newest position in its inbox) and its queue depth are sampled; the figure is the least-squares slope.", rate, b.sz.b7Duration)
	return nil
}

func maxOf(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	return m
}
