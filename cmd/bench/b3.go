package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// b3 measures commit-to-billing-commit latency at a steady command rate:
// inbox.handled_at (the billing subscriber's transaction) minus the moment
// the command's answer reached the bench (just after its commit), matched
// by Epoch-Position. Its ceiling is the raw broker round trip, measured during the
// same load (and, for reference, before it).
func (b *bench) b3(ctx context.Context) error {
	worker, err := b.fullWorker(ctx)
	if err != nil {
		return err
	}
	rtt, err := newRoundTripper(b.env)
	if err != nil {
		return err
	}
	defer rtt.close()
	if err := b.commitToBilling(ctx, "B3", "", worker, rtt, b.pids(worker), nil); err != nil {
		return err
	}
	b.note("B3: %d commands/s for %s, open-loop (a command every 1/rate s whatever the answers' latency), alternating POST /v1/files and DELETE /v1/files/{id}, with one worker running relay, storage and billing. Latency = inbox.handled_at of subscriber billing − the moment the command's answer (with its Epoch-Position) reached the bench, just after the commit; the same from events.occurred_at (set before the command's transaction began, an upper bound) is in the detail. The round trip publishes one persistent message with a confirm to a quorum queue and times it until a consumer on another connection receives it; it runs repeatedly during the load (its ceiling) and before it (idle, in the detail).", b.sz.b3Rate, b.sz.b3Duration)
	return nil
}

// fullWorker is one worker running relay, storage and billing, shared by
// B3 and B7 and stopped at the end of the run.
func (b *bench) fullWorker(ctx context.Context) (*harness.Proc, error) {
	if b.worker != nil {
		return b.worker, nil
	}
	w, err := b.env.startWorker(ctx, "relay,storage,billing")
	if err != nil {
		return nil, err
	}
	b.worker = w
	// Whatever earlier figures left (a B2 backlog B8 did not drain) must be
	// worked off first, or B3 and B7 would measure that instead.
	if err := harness.WaitFor(ctx, b.sz.drainBudget, 100*time.Millisecond, func() (bool, error) {
		return drained(ctx, b.env, func(q string) (int, error) { return harness.QueueMessages(b.env.Vhost.URL, q) })
	}); err != nil {
		return nil, fmt.Errorf("the system did not settle before the load: %w", err)
	}
	return w, nil
}

// drained reports whether the outbox and the subscriber queues (messages
// counts a queue's) are empty.
func drained(ctx context.Context, e *env, messages func(queue string) (int, error)) (bool, error) {
	var left bool
	if err := e.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM outbox)").Scan(&left); err != nil || left {
		return false, err
	}
	for _, s := range workerSubscriptions() {
		if n, err := messages(broker.QueueName(s.Name)); err != nil || n > 0 {
			return false, err
		}
	}
	return true, nil
}

// commitToBilling drives B3's load through the api while worker (relay,
// storage and billing, settled) runs, and reports fig's p50, p95 and p99
// of commit-to-billing latency (named with prefix) beside rtt's round
// trips during the same load. pids names the processes for the CPU
// breakdown; extra goes into the p50's detail.
func (b *bench) commitToBilling(ctx context.Context, fig, prefix string, worker *harness.Proc, rtt *roundTripper, pids map[int]string, extra map[string]any) error {
	e := b.env
	user, err := e.NewUser(ctx, strings.ToLower(fig), 64)
	if err != nil {
		return err
	}
	idle, err := rtt.measure(ctx, b.sz.rttCount/3, 10*time.Millisecond)
	if err != nil {
		return fmt.Errorf("raw round trip: %w", err)
	}
	from, err := dbsqlc.New().EventMaxPosition(ctx, e.pool)
	if err != nil {
		return err
	}
	phasesBefore, err := worker.Metrics(ctx)
	if err != nil {
		return err
	}
	answers := newAnswerLog()
	user.Answered = answers.record
	load := &harness.FileLoad{User: user, Rate: float64(b.sz.b3Rate), MaxInFlight: 256}
	type rttResult struct {
		ms  []float64
		err error
	}
	rttDone := make(chan rttResult, 1)
	loadCtx, stopRTT := context.WithCancel(ctx)
	go func() {
		every := max(b.sz.b3Duration/time.Duration(b.sz.rttCount), 5*time.Millisecond)
		ms, err := rtt.measureUntil(loadCtx, every)
		rttDone <- rttResult{ms, err}
	}()
	cpu := harness.SampleCPU(pids)
	waitProfile := b.profile(ctx, worker, fig, b.sz.b3Duration)
	waitAPIProfile := b.profile(ctx, e.API, fig, b.sz.b3Duration)
	stopSelfProfile := b.profileSelf(fig)
	start := time.Now()
	loadErr := load.Run(ctx, b.sz.b3Duration)
	stopSelfProfile()
	waitProfile()
	waitAPIProfile()
	elapsed := time.Since(start)
	stopRTT()
	busy := <-rttDone
	limited := cpu.Since(pids)
	phasesAfter, err := worker.Metrics(ctx)
	if err != nil {
		return err
	}
	if err := errors.Join(loadErr, busy.err); err != nil {
		return err
	}
	// Wait until billing handled every file event of the load.
	var want int
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM events WHERE position > $1 AND stream_type = 'file'", from).Scan(&want); err != nil {
		return err
	}
	if err := harness.WaitFor(ctx, time.Minute, 50*time.Millisecond, func() (bool, error) {
		var n int
		err := e.pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE subscriber = 'billing' AND position > $1", from).Scan(&n)
		return n >= want, err
	}); err != nil {
		return fmt.Errorf("billing did not catch up after the load: %w\n%s", err, worker.Tail(3000))
	}
	// Latency from the command's commit: the moment its answer reached the
	// bench (just after the commit) to the billing transaction's
	// handled_at. Both are this machine's clock. occurred_at, set before
	// the command's transaction even began, gives the upper bound kept in
	// the detail.
	rows, err := e.pool.Query(ctx, `SELECT e.position,
			extract(epoch FROM i.handled_at)::float8,
			extract(epoch FROM i.handled_at - e.occurred_at)::float8 * 1000
		FROM inbox i JOIN events e ON e.id = i.event_id
		WHERE i.subscriber = 'billing' AND e.position > $1`, from)
	if err != nil {
		return err
	}
	var lat, fromOccurred []float64
	var pos int64
	var handled, sinceOccurred float64
	if _, err := pgx.ForEachRow(rows, []any{&pos, &handled, &sinceOccurred}, func() error {
		fromOccurred = append(fromOccurred, sinceOccurred)
		if answered, ok := answers.get(pos); ok {
			lat = append(lat, (handled-float64(answered.UnixNano())/1e9)*1000)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Float64s(lat)
	sort.Float64s(fromOccurred)
	if len(lat) == 0 {
		return fmt.Errorf("%s: no billing latencies", fig)
	}
	sort.Float64s(busy.ms)
	rttP50, rttP99 := percentile(busy.ms, 50), percentile(busy.ms, 99)
	detail := map[string]any{
		"events": len(lat), "rate_sent_per_s": round(float64(load.Sent.Load()) / elapsed.Seconds()),
		"missed_slots": load.Missed.Load(), "round_trips": len(busy.ms),
		"idle_round_trip_p50_ms":  round3(percentile(idle, 50)),
		"from_occurred_at_p50_ms": round3(percentile(fromOccurred, 50)), "from_occurred_at_p99_ms": round3(percentile(fromOccurred, 99)), "idle_round_trip_p99_ms": round3(percentile(idle, 99)),
		"ceiling_is":   "raw broker round trip during the same load",
		"relay_cycles": relayPhaseDetail(phasesBefore, phasesAfter),
	}
	if mean, ok := phasesAfter.Since(phasesBefore).Mean("epoch_consumer_batch_seconds", `subscriber="billing"`); ok {
		// handled_at, the end of each latency, is stamped in the first of
		// a billing transaction's two round trips: its COMMIT comes back
		// at most this much later on average.
		detail["billing_tx_mean_ms"] = round3(mean * 1000)
	}
	for k, v := range extra {
		detail[k] = v
	}
	p50 := (&figure{Figure: fig, Name: prefix + "commit_to_billing_p50", Value: percentile(lat, 50), Unit: "ms", LimitedBy: limited, Detail: detail}).withCeiling(rttP50)
	b.r.add(p50.judge("ratio<=3", *p50.Ratio <= 3))
	b.r.add(&figure{Figure: fig, Name: prefix + "commit_to_billing_p95", Value: percentile(lat, 95), Unit: "ms"})
	p99 := (&figure{Figure: fig, Name: prefix + "commit_to_billing_p99", Value: percentile(lat, 99), Unit: "ms"}).withCeiling(rttP99)
	b.r.add(p99.judge("ratio<=10", *p99.Ratio <= 10))
	return nil
}

// answerLog maps a command's position to the time its answer arrived:
// B3 measures from there (just after the commit).
type answerLog struct {
	mu sync.Mutex
	at map[int64]time.Time
}

func newAnswerLog() *answerLog { return &answerLog{at: make(map[int64]time.Time)} }

func (l *answerLog) record(position int64, at time.Time) {
	l.mu.Lock()
	l.at[position] = at
	l.mu.Unlock()
}

func (l *answerLog) get(position int64) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	at, ok := l.at[position]
	return at, ok
}

// roundTripper times single persistent messages through a quorum queue:
// publish with a confirm on one connection, consume on another.
type roundTripper struct {
	pubConn, subConn *amqp.Connection
	pub              *amqp.Channel
	deliveries       <-chan amqp.Delivery
	exchange, key    string   // where a message is published
	queue            string   // where it is consumed
	declared         []string // queues close removes
}

// newRoundTripper goes through a quorum queue of its own on the bench's
// vhost, by the default exchange.
func newRoundTripper(e *env) (*roundTripper, error) {
	const queue = "bench.roundtrip"
	return dialRoundTripper(e.Vhost.URL, e.Vhost.URL, queue, func(ch *amqp.Channel) (string, string, []string, error) {
		_, err := ch.QueueDeclare(queue, true, false, false, false, amqp.Table{
			amqp.QueueTypeArg: amqp.QueueTypeQuorum, "x-delivery-limit": int64(20),
		})
		return "", queue, []string{queue}, err
	})
}

// dialRoundTripper publishes on a connection to pubURL and consumes queue
// on one to subURL; declare (on the publishing connection) makes the
// queue and says where to publish and what close removes.
func dialRoundTripper(pubURL, subURL, queue string, declare func(*amqp.Channel) (exchange, key string, declared []string, err error)) (_ *roundTripper, err error) {
	r := &roundTripper{queue: queue}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if r.pubConn, err = amqp.Dial(pubURL); err != nil {
		return nil, err
	}
	if r.subConn, err = amqp.Dial(subURL); err != nil {
		return nil, err
	}
	if r.pub, err = r.pubConn.Channel(); err != nil {
		return nil, err
	}
	r.exchange, r.key, r.declared, err = declare(r.pub)
	if err != nil {
		return nil, err
	}
	if err = r.pub.Confirm(false); err != nil {
		return nil, err
	}
	sub, err := r.subConn.Channel()
	if err != nil {
		return nil, err
	}
	if err = sub.Qos(10, 0, false); err != nil {
		return nil, err
	}
	if r.deliveries, err = sub.Consume(r.queue, "", true, false, false, false, nil); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *roundTripper) close() {
	if r.pub != nil {
		for _, q := range r.declared {
			_, _ = r.pub.QueueDelete(q, false, false, false)
		}
	}
	for _, c := range []*amqp.Connection{r.pubConn, r.subConn} {
		if c != nil {
			_ = c.Close()
		}
	}
}

// once times one message from publish to delivery, in ms; the confirm is
// awaited too (a relay must have it before the row is done).
func (r *roundTripper) once(ctx context.Context) (float64, error) {
	body := []byte(`{"id":"00000000-0000-0000-0000-000000000000","type":"file.uploaded","data":{}}`)
	start := time.Now()
	c, err := r.pub.PublishWithDeferredConfirmWithContext(ctx, r.exchange, r.key, true, false, amqp.Publishing{
		DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: body,
	})
	if err != nil {
		return 0, err
	}
	if ok, err := c.WaitContext(ctx); err != nil || !ok {
		return 0, fmt.Errorf("round trip confirm: ok=%v err=%v", ok, err)
	}
	select {
	case <-r.deliveries:
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(10 * time.Second):
		return 0, errors.New("round trip: no delivery in 10s")
	}
	return float64(time.Since(start).Microseconds()) / 1000, nil
}

func (r *roundTripper) measure(ctx context.Context, n int, every time.Duration) ([]float64, error) {
	var ms []float64
	for range max(n, 1) {
		v, err := r.once(ctx)
		if err != nil {
			return nil, err
		}
		ms = append(ms, v)
		time.Sleep(every)
	}
	sort.Float64s(ms)
	return ms, nil
}

// measureUntil times round trips every interval until ctx ends.
func (r *roundTripper) measureUntil(ctx context.Context, every time.Duration) ([]float64, error) {
	var ms []float64
	for ctx.Err() == nil {
		v, err := r.once(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			return nil, err
		}
		ms = append(ms, v)
		select {
		case <-ctx.Done():
		case <-time.After(every):
		}
	}
	if len(ms) == 0 {
		return nil, errors.New("no round trip finished during the load")
	}
	return ms, nil
}

// relayPhaseNames are the phases of a relay cycle the worker times.
var relayPhaseNames = []string{"claim", "publish", "settle"}

// claimWaitBounds are the upper bounds of epoch_relay_claim_wait_seconds'
// buckets, as the worker's /metrics writes them.
var claimWaitBounds = []string{"0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.5", "1", "5"}

// relayPhaseDetail is, between two readings of the worker's /metrics, the
// mean time of each relay phase, the number of cycles and of those that
// found nothing, and how long rows waited to be claimed.
func relayPhaseDetail(before, after harness.Metrics) map[string]any {
	d := after.Since(before)
	means := map[string]any{}
	for _, ph := range relayPhaseNames {
		if mean, ok := d.Mean("epoch_relay_cycle_phase_seconds", `phase="`+ph+`"`); ok {
			means[ph] = round3(mean * 1000)
		}
	}
	// Every cycle claims; one that found rows publishes them.
	count := func(ph string) float64 { return d[`epoch_relay_cycle_phase_seconds_count{phase="`+ph+`"}`] }
	detail := map[string]any{"mean_ms": means, "cycles": count("claim"), "empty_cycles": count("claim") - count("publish")}
	if mean, ok := d.Mean("epoch_relay_claim_wait_seconds", ""); ok {
		// From a row's insert, just before its command's commit, to its
		// claim: the part of the latency spent waiting for a cycle.
		detail["claim_wait_mean_ms"] = round3(mean * 1000)
		detail["claim_wait_p50_ms"] = round3(d.Quantile(0.5, "epoch_relay_claim_wait_seconds", claimWaitBounds) * 1000)
	}
	return detail
}
