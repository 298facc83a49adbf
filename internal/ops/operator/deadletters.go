package operator

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// replayBatch is how many dead letters a replay of all of them takes in
// one transaction.
const replayBatch = 500

// ErrNoSuchDeadLetter: the subscriber keeps no dead letter with that id.
var ErrNoSuchDeadLetter = errors.New("no such dead letter")

// DeadLetter is a kept dead letter. Position, Type and StreamID are the
// stored event's, nil when the dead letter names none: a body is never
// believed.
type DeadLetter struct {
	EventID     string     `json:"event_id"`
	Position    *int64     `json:"position"`
	Type        *string    `json:"type"`
	StreamID    *uuid.UUID `json:"stream_id"`
	Reason      string     `json:"reason"`
	Deaths      int32      `json:"deaths"`
	FirstDeadAt time.Time  `json:"first_dead_at"`
	LastDeadAt  time.Time  `json:"last_dead_at"`
}

// Cursor is a place in a subscriber's dead letters: after the one that
// died first at At with id ID (the list's order). The zero value is
// before them all.
type Cursor struct {
	At time.Time
	ID string
}

// DeadLetters lists up to limit of sub's dead letters after after, oldest
// death first, and the cursor of the next page (nil: none).
func (o *Operator) DeadLetters(ctx context.Context, sub dispatch.Subscriber, after Cursor, limit int32) ([]DeadLetter, *Cursor, error) {
	rows, err := dbsqlc.New().DeadLetterList(ctx, o.cfg.Pool, &dbsqlc.DeadLetterListParams{
		Subscriber: sub.Name(), AfterAt: after.At, AfterID: after.ID, MaxCount: limit + 1})
	if err != nil {
		return nil, nil, err
	}
	items := make([]DeadLetter, 0, min(len(rows), int(limit)))
	for i, row := range rows {
		if i == int(limit) {
			return items, &Cursor{At: rows[i-1].FirstDeadAt, ID: rows[i-1].EventID}, nil
		}
		d := DeadLetter{EventID: row.EventID, StreamID: row.StreamID, Reason: row.Reason, Deaths: row.Deaths,
			FirstDeadAt: row.FirstDeadAt.UTC(), LastDeadAt: row.LastDeadAt.UTC()}
		if row.StoredPosition.Valid {
			d.Position = &row.StoredPosition.Int64
		}
		if row.Type.Valid {
			d.Type = &row.Type.String
		}
		items = append(items, d)
	}
	return items, nil, nil
}

// Replay hands the stored events the named dead letters name to sub alone,
// in Postgres (not through RabbitMQ: no other subscriber and no outside
// consumer sees them again), in one transaction; those applied leave the
// list. It returns how many left it.
func (o *Operator) Replay(ctx context.Context, sub dispatch.Subscriber, ids []string) (int64, error) {
	var replayed int64
	err := database.InTx(ctx, o.cfg.Pool, func(tx *database.Tx) error {
		rows, err := dbsqlc.New().DeadLetterClaimByIDs(ctx, tx, &dbsqlc.DeadLetterClaimByIDsParams{
			Subscriber: sub.Name(), EventIds: ids})
		if err != nil {
			return fmt.Errorf("claim dead letters: %w", err)
		}
		claimed := make([]*dbsqlc.DeadLetterClaimPageRow, len(rows))
		for i, row := range rows {
			claimed[i] = (*dbsqlc.DeadLetterClaimPageRow)(row)
		}
		replayed, err = o.replayClaimed(ctx, tx, sub, claimed)
		return err
	})
	return replayed, err
}

// ReplayAll replays every dead letter of sub, a batch per transaction
// (each bounded by Config.Timeout), in list order; the ones that stay are
// stepped over by the cursor.
func (o *Operator) ReplayAll(ctx context.Context, sub dispatch.Subscriber) (int64, error) {
	var total int64
	var after Cursor
	for {
		var rows []*dbsqlc.DeadLetterClaimPageRow
		var replayed int64
		txCtx, cancel := context.WithTimeout(ctx, o.cfg.Timeout)
		err := database.InTx(txCtx, o.cfg.Pool, func(tx *database.Tx) error {
			var err error
			rows, err = dbsqlc.New().DeadLetterClaimPage(txCtx, tx, &dbsqlc.DeadLetterClaimPageParams{
				Subscriber: sub.Name(), AfterAt: after.At, AfterID: after.ID, MaxCount: replayBatch})
			if err != nil {
				return fmt.Errorf("claim dead letters: %w", err)
			}
			replayed, err = o.replayClaimed(txCtx, tx, sub, rows)
			return err
		})
		cancel()
		if err != nil {
			return total, err
		}
		total += replayed
		if len(rows) < replayBatch {
			return total, nil
		}
		last := rows[len(rows)-1]
		after = Cursor{At: last.FirstDeadAt, ID: last.EventID}
	}
}

// replayClaimed applies, in tx, the stored events of the claimed dead
// letters that name one, in position order, and deletes those dead letters:
// they are no longer dead, whether the subscriber's inbox took them now or
// had them already. The others stay as they are. It returns how many left
// the list.
func (o *Operator) replayClaimed(ctx context.Context, tx *database.Tx, sub dispatch.Subscriber, rows []*dbsqlc.DeadLetterClaimPageRow) (int64, error) {
	events := make([]eventstore.Event, 0, len(rows))
	for _, row := range rows {
		if row.ID == nil || !row.Position.Valid {
			continue // no stored event has this id at this position
		}
		events = append(events, eventstore.Event{ID: *row.ID, StreamType: row.StreamType.String, StreamID: *row.StreamID,
			Version: row.Version.Int32, Type: row.Type.String, Data: row.Data, OccurredAt: *row.OccurredAt,
			Position: row.Position.Int64})
	}
	if len(events) == 0 {
		return 0, nil
	}
	slices.SortFunc(events, func(a, b eventstore.Event) int { return cmp.Compare(a.Position, b.Position) })
	applied, fresh, err := o.applyIsolated(ctx, tx, sub, events)
	if err != nil {
		return 0, err
	}
	ids := make([]string, len(applied))
	for i, e := range applied {
		ids[i] = e.ID.String()
	}
	n, err := dbsqlc.New().DeadLetterDelete(ctx, tx, &dbsqlc.DeadLetterDeleteParams{Subscriber: sub.Name(), EventIds: ids})
	if err != nil {
		return 0, fmt.Errorf("delete replayed dead letters: %w", err)
	}
	if fresh > 0 {
		if err := dispatch.Announce(ctx, tx, sub.Name()); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// applyIsolated delivers events to sub, isolating those that fail again
// (dispatch.Isolate) each in a savepoint, so an event that fails again (a
// dead letter kept as failed) stays dead without keeping the others from
// being applied. It returns the events applied and how many were new to
// sub. An unreachable database fails it all.
func (o *Operator) applyIsolated(ctx context.Context, tx *database.Tx, sub dispatch.Subscriber, events []eventstore.Event) ([]eventstore.Event, int, error) {
	applied, fresh := events[:0:0], 0
	whole, err := dispatch.Isolate(events, dispatch.Isolation[eventstore.Event]{
		Apply: func(some []eventstore.Event) error {
			n, err := deliverInSavepoint(ctx, tx, sub, some)
			fresh += n
			return err
		},
		Stop: func(err error) bool { return unreachable(ctx, err) },
		Applied: func(one []eventstore.Event) error {
			applied = append(applied, one[0])
			return nil
		},
		Failed: func(one []eventstore.Event, cause error) error {
			o.cfg.Logger.ErrorContext(ctx, "replayed dead letter failed again; it stays", "subscriber", sub.Name(),
				"event_id", one[0].ID, "position", one[0].Position, "error", cause)
			return nil
		},
	})
	if err != nil {
		return nil, 0, err
	}
	if whole {
		applied = events
	}
	return applied, fresh, nil
}

// deliverInSavepoint is dispatch.DeliverCount in a savepoint of tx,
// rolled back (inbox rows included) when it fails: it counts nothing then.
// The subscriber's queued writes are sent and checked before the savepoint
// is released, so their errors surface here rather than at COMMIT.
func deliverInSavepoint(ctx context.Context, tx *database.Tx, sub dispatch.Subscriber, events []eventstore.Event) (n int, err error) {
	err = tx.Savepoint(ctx, func(tx *database.Tx) (err error) {
		n, err = dispatch.DeliverCount(ctx, tx, sub, events)
		return err
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}

// Discard deletes one of sub's dead letters, applying nothing
// (ErrNoSuchDeadLetter when it keeps none with that id).
func (o *Operator) Discard(ctx context.Context, sub dispatch.Subscriber, id string) error {
	n, err := dbsqlc.New().DeadLetterDelete(ctx, o.cfg.Pool, &dbsqlc.DeadLetterDeleteParams{
		Subscriber: sub.Name(), EventIds: []string{id}})
	if err == nil && n == 0 {
		err = ErrNoSuchDeadLetter
	}
	return err
}
