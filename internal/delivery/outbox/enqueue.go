// Package outbox owns the transactional outbox: commands enqueue their
// events in their own transaction, and the relay publishes what committed to
// RabbitMQ, deleting rows only once the broker confirmed them.
package outbox

import (
	"cmp"
	"context"
	"hash/fnv"
	"log/slog"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/platform/throttle"
	"github.com/catacloud/epoch/internal/platform/tracing"
)

// Partitions is the number of stream partitions. A relay owns whole
// partitions at a time, so one stream is only ever published by one relay.
const Partitions = 64

// NotifyChannel is the LISTEN/NOTIFY channel that wakes the relay.
const NotifyChannel = "epoch_outbox"

// PartitionOf maps a stream to its partition.
func PartitionOf(streamID uuid.UUID) int16 {
	h := fnv.New32a()
	_, _ = h.Write(streamID[:])
	return int16(h.Sum32() % Partitions)
}

// Enqueue queues appended events (positions set) for the relay in the
// caller's transaction, and the relays' wake-up to follow its commit. It
// writes one row per run: events of one partition whose positions follow
// one another, each row with ctx's trace context (the request's), which
// the relay carries into the messages' headers. A command's events on one
// stream are usually one run, so linking 1,000 files queues one row. The
// insert is a batch statement nobody reads, so it goes with the
// transaction's next statement or its COMMIT; the wake-up NOTIFY goes right
// after that COMMIT, in the same round trip, as a transaction of its own
// (Tx.AfterCommit; OutboxWake says why not inside).
func Enqueue(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	if len(events) == 0 {
		return nil
	}
	rows := runs(events)
	if tc := tracing.Of(ctx); tc.Traceparent != "" {
		rows.Traceparent = pgtype.Text{String: tc.Traceparent, Valid: true}
		rows.Tracestate = pgtype.Text{String: tc.Tracestate, Valid: tc.Tracestate != ""}
	}
	dbsqlc.New().OutboxInsert(ctx, tx, []*dbsqlc.OutboxInsertParams{rows})
	tx.AfterCommit(func(db database.DBTX) { sendWake(ctx, db) }, wakeLost)
	return nil
}

// sendWake sends (or, on a Tx, queues) the relays' wake-up NOTIFY on
// NotifyChannel.
func sendWake(ctx context.Context, db database.DBTX) *dbsqlc.OutboxWakeBatchResults {
	return dbsqlc.New().OutboxWake(ctx, db, []string{NotifyChannel})
}

// Wake wakes the relays at once, as a transaction of its own: for outbox
// rows no Enqueue wrote, whose transactions carried no wake-up (a
// migration's, which goose begins and commits: the api sends one after
// migrate applied them). A wake-up that cannot be
// sent is only logged, as Enqueue's.
func Wake(ctx context.Context, db database.DBTX) {
	if err := database.Exec(sendWake(ctx, db)); err != nil {
		wakeLost(err)
	}
}

// wakeLostLog lets wakeLost log once a minute at most.
var wakeLostLog = &throttle.Every{Interval: time.Minute}

// wakeLost logs a wake-up that could not be sent, once a minute at most:
// during an outage every command loses its own. It is only a hint: the
// relays find the rows when they poll.
func wakeLost(err error) {
	if !wakeLostLog.Allow() {
		return
	}
	slog.Warn("outbox: could not wake the relays; they will find the rows when they poll", "error", err)
}

// runs splits events into outbox rows. A run breaks where the partition
// changes or a position is skipped: another transaction may have taken the
// skipped one, and a row must cover only its own events.
func runs(events []eventstore.Event) *dbsqlc.OutboxInsertParams {
	sorted := slices.SortedFunc(slices.Values(events), func(a, b eventstore.Event) int {
		return cmp.Compare(a.Position, b.Position)
	})
	p := &dbsqlc.OutboxInsertParams{}
	for i, e := range sorted {
		part := PartitionOf(e.StreamID)
		if last := len(p.LastPositions) - 1; i > 0 && part == p.Partitions[last] && e.Position == p.LastPositions[last]+1 {
			p.LastPositions[last] = e.Position
			continue
		}
		p.FirstPositions = append(p.FirstPositions, e.Position)
		p.LastPositions = append(p.LastPositions, e.Position)
		p.Partitions = append(p.Partitions, part)
	}
	return p
}
