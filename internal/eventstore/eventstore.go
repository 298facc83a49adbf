// Package eventstore owns the events table: appending a command's events
// with an expected version per stream, and reading them back in position
// order. It is the truth every projection is rebuilt from.
package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
)

// ErrConcurrency means another transaction appended to one of the streams
// first: the expected version was already taken.
var ErrConcurrency = errors.New("eventstore: stream version already taken")

// Event is one change, as stored. Position is zero until Append sets it.
type Event struct {
	ID         uuid.UUID
	StreamType string
	StreamID   uuid.UUID
	Version    int32
	Type       string
	Data       json.RawMessage
	OccurredAt time.Time
	Position   int64
}

// New makes an event with a fresh time-ordered id. occurredAt is cut to
// microseconds, the precision Postgres keeps, so the event reads back equal.
func New(streamType string, streamID uuid.UUID, version int32, eventType string, data any, occurredAt time.Time) (Event, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s data: %w", eventType, err)
	}
	return Event{
		ID:         uuid.Must(uuid.NewV7()),
		StreamType: streamType,
		StreamID:   streamID,
		Version:    version,
		Type:       eventType,
		Data:       raw,
		OccurredAt: occurredAt.UTC().Truncate(time.Microsecond),
	}, nil
}

// Append writes events in the given order in one statement and sets their
// positions. Each event's Version is its expected version: the stream's
// current version plus one (plus its rank among this call's events of the
// same stream). A version another transaction took first fails the whole
// append with ErrConcurrency.
func Append(ctx context.Context, db database.DBTX, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	p := &dbsqlc.EventAppendParams{
		Ids:         make([]uuid.UUID, len(events)),
		StreamTypes: make([]string, len(events)),
		StreamIds:   make([]uuid.UUID, len(events)),
		Versions:    make([]int32, len(events)),
		Types:       make([]string, len(events)),
		Datas:       make([][]byte, len(events)),
		OccurredAts: make([]time.Time, len(events)),
	}
	for i, e := range events {
		p.Ids[i], p.StreamTypes[i], p.StreamIds[i] = e.ID, e.StreamType, e.StreamID
		p.Versions[i], p.Types[i], p.Datas[i], p.OccurredAts[i] = e.Version, e.Type, e.Data, e.OccurredAt
	}
	rows, err := dbsqlc.New().EventAppend(ctx, db, p)
	if err != nil {
		if database.IsUniqueViolation(err, "events_stream_version_key") {
			return ErrConcurrency
		}
		return fmt.Errorf("append events: %w", err)
	}
	byID := make(map[uuid.UUID]int64, len(rows))
	for _, r := range rows {
		byID[r.ID] = r.Position
	}
	for i := range events {
		events[i].Position = byID[events[i].ID]
	}
	return nil
}

// After returns up to max events with a position above after, in position
// order: the replay feed.
func After(ctx context.Context, db database.DBTX, after int64, max int32) ([]Event, error) {
	rows, err := dbsqlc.New().EventListAfter(ctx, db, &dbsqlc.EventListAfterParams{After: after, MaxCount: max})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	out := make([]Event, len(rows))
	for i, r := range rows {
		out[i] = Event{ID: r.ID, StreamType: r.StreamType, StreamID: r.StreamID, Version: r.Version,
			Type: r.Type, Data: r.Data, OccurredAt: r.OccurredAt, Position: r.Position}
	}
	return out, nil
}
