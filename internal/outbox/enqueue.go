// Package outbox owns the transactional outbox: commands enqueue their
// events in their own transaction, and the relay publishes what committed to
// RabbitMQ, deleting rows only once the broker confirmed them.
package outbox

import (
	"context"
	"fmt"
	"hash/fnv"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
	"github.com/catacloud/epoch/internal/eventstore"
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

// Enqueue writes an outbox row for each appended event (positions set) in
// the caller's transaction, and the wake-up hint that fires at commit.
func Enqueue(ctx context.Context, db database.DBTX, events []eventstore.Event) error {
	if len(events) == 0 {
		return nil
	}
	p := &dbsqlc.OutboxInsertParams{
		Positions:  make([]int64, len(events)),
		Partitions: make([]int16, len(events)),
	}
	for i, e := range events {
		p.Positions[i] = e.Position
		p.Partitions[i] = PartitionOf(e.StreamID)
	}
	if err := dbsqlc.New().OutboxInsert(ctx, db, p); err != nil {
		return fmt.Errorf("enqueue outbox: %w", err)
	}
	return nil
}
