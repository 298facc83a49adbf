// Package eventstore owns the events table: appending a command's events
// with an expected version per stream, and reading them back in position
// order. It is the truth every projection is rebuilt from.
package eventstore

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
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
	// Payload is the value Data was encoded from when New made the event
	// in this process; nil when it was read back or received. Inline
	// handlers use it rather than decode Data again (see Decode).
	Payload any
}

// Decode gives the event's data as a T: its Payload when that is one,
// otherwise Data decoded. Both are the same value, so handlers get the
// same result whichever path delivered the event.
func Decode[T any](e Event) (T, error) {
	if d, ok := e.Payload.(T); ok {
		return d, nil
	}
	var d T
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return d, fmt.Errorf("decode %s data: %w", e.Type, err)
	}
	return d, nil
}

// idNamespace is the UUIDv5 namespace of event ids.
var idNamespace = uuid.MustParse("6f1d4c1e-3b0a-4d55-9a8e-0c2f7e8b9a10")

// ID is the id of a stream's event at version: a UUIDv5 of the pair. Only
// one event per (stream, version) ever commits (the store's unique key), so
// ids are unique without an index of their own. An attempt that lost a
// version race may have used the same id, but it rolled back: nothing of it
// was stored or published.
func ID(streamID uuid.UUID, version int32) uuid.UUID {
	var name [20]byte
	copy(name[:16], streamID[:])
	binary.BigEndian.PutUint32(name[16:], uint32(version))
	return uuid.NewSHA1(idNamespace, name[:])
}

// jsonAppender is event data that writes its own JSON, exactly as
// encoding/json would write it (domain.StatementClosedData): New then
// skips encoding/json's reflection and its check of a marshaler's output,
// which cost more than the writing.
type jsonAppender interface {
	AppendJSON(b []byte) ([]byte, error)
}

// New makes the event at version of a stream, its id derived from both
// (ID). occurredAt is cut to microseconds, the precision Postgres keeps, so
// the event reads back equal; the zero time leaves it to Append to take
// the database's clock, as commands do.
func New(streamType string, streamID uuid.UUID, version int32, eventType string, data any, occurredAt time.Time) (Event, error) {
	var raw []byte
	var err error
	if a, ok := data.(jsonAppender); ok {
		raw, err = a.AppendJSON(make([]byte, 0, 512))
	} else {
		raw, err = json.Marshal(data)
	}
	if err != nil {
		return Event{}, fmt.Errorf("encode %s data: %w", eventType, err)
	}
	return Event{
		ID:         ID(streamID, version),
		StreamType: streamType,
		StreamID:   streamID,
		Version:    version,
		Type:       eventType,
		Data:       raw,
		OccurredAt: occurredAt.UTC().Truncate(time.Microsecond),
		Payload:    data,
	}, nil
}

// Append writes events in the given order in one statement and sets their
// positions, and the occurred_at of those with a zero OccurredAt: the
// database's clock in the insert, after the transaction has its id (one
// clock for every process; EventAppend says why the order matters). Only
// tests give events a time of their own. Each event's Version is its expected version: the stream's
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
	byID := make(map[uuid.UUID]*dbsqlc.EventAppendRow, len(rows))
	for _, r := range rows {
		byID[r.ID] = r
	}
	for i := range events {
		r := byID[events[i].ID]
		events[i].Position, events[i].OccurredAt = r.Position, r.OccurredAt.UTC()
	}
	return nil
}

// Copy writes events that carry their own times with COPY (many at once:
// the billing closer's statements) and sets their positions. The
// transaction takes its id first, as Append's insert does, so every
// position it draws is handed out after the id; the positions are drawn
// before the COPY, in the events' order, and written with them. A version
// another transaction took first is ErrConcurrency.
func Copy(ctx context.Context, tx *database.Tx, events []Event) error {
	if len(events) == 0 {
		return nil
	}
	q := dbsqlc.New()
	q.EventTakeXid(ctx, tx, []bool{true})
	positions, err := q.EventPositionsDraw(ctx, tx, int32(len(events)))
	if err != nil {
		return fmt.Errorf("copy events: positions: %w", err)
	}
	if len(positions) != len(events) {
		return fmt.Errorf("copy events: %d positions drawn for %d events", len(positions), len(events))
	}
	rows := make([][]any, len(events))
	for i, e := range events {
		if e.OccurredAt.IsZero() {
			return fmt.Errorf("copy events: %s has no time of its own", e.ID)
		}
		rows[i] = []any{positions[i], e.ID, e.StreamType, e.StreamID, e.Version, e.Type, []byte(e.Data), e.OccurredAt}
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"events"},
		[]string{"position", "id", "stream_type", "stream_id", "version", "type", "data", "occurred_at"}, pgx.CopyFromRows(rows))
	if err != nil {
		if database.IsUniqueViolation(err, "events_stream_version_key") {
			return ErrConcurrency
		}
		return fmt.Errorf("copy events: %w", err)
	}
	for i := range events {
		events[i].Position = positions[i]
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
