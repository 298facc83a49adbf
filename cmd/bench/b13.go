package main

import (
	"context"
)

// b13 times one relay worker process draining a backlog on the cluster,
// then two started at once draining the very same backlog again (its
// outbox rows queued anew), and reports both rates and two ÷ one. The
// relays split the partitions between them (partition locks, each cycle
// taking at most its share), so a second process should never cost the
// drain; what it can add is bounded by the CPU the first left idle.
func (b *bench) b13(ctx context.Context) error {
	c, err := b.cluster(ctx)
	if err != nil {
		return err
	}
	events, err := b.backlog(ctx, "B13", b.sz.b2Events)
	if err != nil {
		return err
	}
	one, err := b.clusterDrain(ctx, c, "B13-one", events, 1)
	if err != nil {
		return err
	}
	if err := requeue(ctx, b.env, events); err != nil {
		return err
	}
	two, err := b.clusterDrain(ctx, c, "B13-two", events, 2)
	if err != nil {
		return err
	}
	detail := func(d drainTime) map[string]any {
		return map[string]any{"messages": len(events), "seconds": round3(d.elapsed.Seconds()), "queued": d.queued,
			"timed": "from starting the worker process(es) to an empty outbox", "placement": d.placement}
	}
	b.r.add(&figure{Figure: "B13", Name: "cluster_relay_one_worker_msgs_per_s", Value: one.rate, Unit: "msg/s",
		LimitedBy: one.limited, Detail: detail(one)})
	twoDetail := detail(two)
	twoDetail["ceiling_is"] = "one worker's rate on the same backlog (the line before): the ratio is two ÷ one"
	b.r.add((&figure{Figure: "B13", Name: "cluster_relay_two_workers_msgs_per_s", Value: two.rate, Unit: "msg/s",
		LimitedBy: two.limited, Detail: twoDetail}).
		withCeiling(one.rate).judge(">=0.9 (one worker's rate)", two.rate >= 0.9*one.rate))
	b.note("B13: %d file events inserted as in B2, drained on the cluster by one relay worker process, then queued again (the same events' outbox rows) and drained by two relay worker processes started at once, each with the default lanes and partition share; each time from starting the process(es) to an empty outbox, with the subscriber queues purged in between. The target is no loss (two ≥ 0.9 × one): on a machine whose cores one drain already fills (its limited_by) a second process has nothing to add, and more than that needs idle cores.", len(events))
	return nil
}
