package httpapi

import (
	"cmp"
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
	"github.com/catacloud/epoch/internal/dispatch"
	"github.com/catacloud/epoch/internal/domain"
	"github.com/catacloud/epoch/internal/eventstore"
)

// maxReplayIDs is the most ids one replay names.
const maxReplayIDs = 1000

// replayBatch is how many dead letters a replay of all of them takes in
// one transaction.
const replayBatch = 500

// deadLetter is an item of GET /v1/admin/subscribers/{name}/dead-letters.
// Position, Type and StreamID are the stored event's, nil when the dead
// letter names none: a body is never believed.
type deadLetter struct {
	EventID     string     `json:"event_id"`
	Position    *int64     `json:"position"`
	Type        *string    `json:"type"`
	StreamID    *uuid.UUID `json:"stream_id"`
	Reason      string     `json:"reason"`
	Deaths      int32      `json:"deaths"`
	FirstDeadAt time.Time  `json:"first_dead_at"`
	LastDeadAt  time.Time  `json:"last_dead_at"`
}

type deadLetterPage struct {
	Items      []deadLetter `json:"items"`
	NextCursor *string      `json:"next_cursor"`
}

// subscriber reads the {name} path segment: one of Config.Movable, or a
// 404.
func (s *server) subscriber(r *http.Request) (dispatch.Subscriber, error) {
	sub, ok := s.subs[r.PathValue("name")]
	if !ok {
		return nil, errNotFound("no such subscriber")
	}
	return sub, nil
}

// listDeadLetters is GET /v1/admin/subscribers/{name}/dead-letters: a page,
// oldest death first.
func (s *server) listDeadLetters(w http.ResponseWriter, r *http.Request) {
	sub, err := s.subscriber(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := parseLimit(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	after, err := parseDeadLetterCursor(r.URL.Query().Get("cursor"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	rows, err := dbsqlc.New().DeadLetterList(ctx, s.cfg.Pool, &dbsqlc.DeadLetterListParams{
		Subscriber: sub.Name(), AfterAt: after.at, AfterID: after.id, MaxCount: limit + 1})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := deadLetterPage{Items: make([]deadLetter, 0, min(len(rows), int(limit)))}
	for i, row := range rows {
		if i == int(limit) {
			next := deadLetterCursor{at: rows[i-1].FirstDeadAt, id: rows[i-1].EventID}.String()
			page.NextCursor = &next
			break
		}
		d := deadLetter{EventID: row.EventID, StreamID: row.StreamID, Reason: row.Reason, Deaths: row.Deaths,
			FirstDeadAt: row.FirstDeadAt.UTC(), LastDeadAt: row.LastDeadAt.UTC()}
		if row.StoredPosition.Valid {
			d.Position = &row.StoredPosition.Int64
		}
		if row.Type.Valid {
			d.Type = &row.Type.String
		}
		page.Items = append(page.Items, d)
	}
	writeJSON(w, http.StatusOK, page)
}

type replayInput struct {
	EventIDs *[]string `json:"event_ids"`
	All      *bool     `json:"all"`
}

// parseReplay checks a replay's body: exactly one of a non-empty list of
// distinct ids and "all": true. It returns the ids, or nil for all.
func parseReplay(in replayInput) ([]string, error) {
	switch {
	case in.EventIDs != nil && in.All != nil:
		return nil, errInvalid(`give either event_ids or "all": true, not both`)
	case in.All != nil:
		if !*in.All {
			return nil, errInvalid(`all must be true when given; to replay some, give event_ids`)
		}
		return nil, nil
	case in.EventIDs == nil:
		return nil, errInvalid(`give event_ids (the dead letters to replay) or "all": true`)
	}
	ids := *in.EventIDs
	if len(ids) == 0 {
		return nil, errInvalid("event_ids must not be empty")
	}
	if len(ids) > maxReplayIDs {
		return nil, errInvalid(fmt.Sprintf("event_ids holds at most %d ids; replay more in several calls", maxReplayIDs))
	}
	if err := domain.CheckDeadLetterIDs(ids); err != nil {
		return nil, err
	}
	return ids, nil
}

// replayDeadLetters is POST /v1/admin/subscribers/{name}/dead-letters/replay:
// the stored events the dead letters name are handed to that subscriber
// alone, in Postgres (not through RabbitMQ: no other subscriber and no
// outside consumer sees them again), and those dead letters leave the list.
func (s *server) replayDeadLetters(w http.ResponseWriter, r *http.Request) {
	sub, err := s.subscriber(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	_, in, err := readJSON[replayInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ids, err := parseReplay(in)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var replayed int64
	if ids != nil {
		replayed, err = s.replayIDs(r, sub, ids)
	} else {
		replayed, err = s.replayAll(r, sub)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"replayed": replayed})
}

// replayIDs replays the named dead letters in one transaction.
func (s *server) replayIDs(r *http.Request, sub dispatch.Subscriber, ids []string) (int64, error) {
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	var replayed int64
	err := database.InTx(ctx, s.cfg.Pool, func(tx *database.Tx) error {
		rows, err := dbsqlc.New().DeadLetterClaimByIDs(ctx, tx, &dbsqlc.DeadLetterClaimByIDsParams{
			Subscriber: sub.Name(), EventIds: ids})
		if err != nil {
			return fmt.Errorf("claim dead letters: %w", err)
		}
		claimed := make([]*dbsqlc.DeadLetterClaimPageRow, len(rows))
		for i, row := range rows {
			claimed[i] = (*dbsqlc.DeadLetterClaimPageRow)(row)
		}
		replayed, err = s.replayClaimed(ctx, tx, sub, claimed)
		return err
	})
	return replayed, err
}

// replayAll replays every dead letter of sub, a batch per transaction, in
// list order; the ones that stay are stepped over by the cursor.
func (s *server) replayAll(r *http.Request, sub dispatch.Subscriber) (int64, error) {
	var total int64
	var after deadLetterCursor
	for {
		var rows []*dbsqlc.DeadLetterClaimPageRow
		var replayed int64
		ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
		err := database.InTx(ctx, s.cfg.Pool, func(tx *database.Tx) error {
			var err error
			rows, err = dbsqlc.New().DeadLetterClaimPage(ctx, tx, &dbsqlc.DeadLetterClaimPageParams{
				Subscriber: sub.Name(), AfterAt: after.at, AfterID: after.id, MaxCount: replayBatch})
			if err != nil {
				return fmt.Errorf("claim dead letters: %w", err)
			}
			replayed, err = s.replayClaimed(ctx, tx, sub, rows)
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
		after = deadLetterCursor{at: last.FirstDeadAt, id: last.EventID}
	}
}

// replayClaimed applies, in tx, the stored events of the claimed dead
// letters that name one, in position order, and deletes those dead letters:
// they are no longer dead, whether the subscriber's inbox took them now or
// had them already. The others stay as they are. It returns how many left
// the list.
func (s *server) replayClaimed(ctx context.Context, tx *database.Tx, sub dispatch.Subscriber, rows []*dbsqlc.DeadLetterClaimPageRow) (int64, error) {
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
	applied, fresh, err := s.applyIsolated(ctx, tx, sub, events)
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

// applyIsolated delivers events to sub in a savepoint; when the subscriber
// fails on them, it delivers each in a savepoint of its own, so an event
// that fails again (a dead letter kept as failed) stays dead without
// keeping the others from being applied. It returns the events applied
// and how many were new to sub. An unreachable database fails it all.
func (s *server) applyIsolated(ctx context.Context, tx *database.Tx, sub dispatch.Subscriber, events []eventstore.Event) ([]eventstore.Event, int, error) {
	fresh, err := deliverInSavepoint(ctx, tx, sub, events)
	if err == nil {
		return events, fresh, nil
	}
	if unavailable(err) || ctx.Err() != nil {
		return nil, 0, err
	}
	applied := events[:0:0]
	fresh = 0
	for _, e := range events {
		n, err := deliverInSavepoint(ctx, tx, sub, []eventstore.Event{e})
		if err != nil {
			if unavailable(err) || ctx.Err() != nil {
				return nil, 0, err
			}
			s.log.ErrorContext(ctx, "replayed dead letter failed again; it stays", "subscriber", sub.Name(),
				"event_id", e.ID, "position", e.Position, "error", err)
			continue
		}
		applied = append(applied, e)
		fresh += n
	}
	return applied, fresh, nil
}

// deliverInSavepoint is dispatch.DeliverCount in a savepoint of tx,
// rolled back (inbox rows included) when it fails. The subscriber's queued
// writes are sent and checked before the savepoint is released, so their
// errors surface here rather than at COMMIT.
func deliverInSavepoint(ctx context.Context, tx *database.Tx, sub dispatch.Subscriber, events []eventstore.Event) (n int, err error) {
	err = tx.Savepoint(ctx, func(tx *database.Tx) (err error) {
		n, err = dispatch.DeliverCount(ctx, tx, sub, events)
		return err
	})
	return n, err
}

// discardDeadLetter is DELETE /v1/admin/subscribers/{name}/dead-letters/{event_id}.
func (s *server) discardDeadLetter(w http.ResponseWriter, r *http.Request) {
	sub, err := s.subscriber(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("event_id")
	if err := domain.CheckDeadLetterID("event_id", id); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	n, err := dbsqlc.New().DeadLetterDelete(ctx, s.cfg.Pool, &dbsqlc.DeadLetterDeleteParams{
		Subscriber: sub.Name(), EventIds: []string{id}})
	if err == nil && n == 0 {
		err = errNotFound("no such dead letter")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deadLetterCursor is a place in a subscriber's dead letters: after the
// one that died first at at with id (the list's order). The zero value is
// before them all.
type deadLetterCursor struct {
	at time.Time
	id string
}

const deadLetterCursorPrefix = "d:"

// maxCursorMicros bounds a cursor's time to what Postgres keeps
// (year 9999), so a forged one is a 400 rather than a database error.
const maxCursorMicros = 253402300799999999

// String encodes the cursor as an opaque URL-safe token.
func (c deadLetterCursor) String() string {
	raw := deadLetterCursorPrefix + strconv.FormatInt(c.at.UnixMicro(), 10) + ":" + c.id
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// parseDeadLetterCursor reads a token from String; "" is the first page.
func parseDeadLetterCursor(token string) (deadLetterCursor, error) {
	bad := errInvalid("cursor is not one this API handed out")
	if token == "" {
		return deadLetterCursor{}, nil
	}
	if len(token) > 512 {
		return deadLetterCursor{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return deadLetterCursor{}, bad
	}
	rest, ok := strings.CutPrefix(string(raw), deadLetterCursorPrefix)
	if !ok {
		return deadLetterCursor{}, bad
	}
	micros, id, ok := strings.Cut(rest, ":")
	if !ok {
		return deadLetterCursor{}, bad
	}
	n, err := strconv.ParseInt(micros, 10, 64)
	if err != nil || n < 0 || n > maxCursorMicros || domain.CheckDeadLetterID("cursor", id) != nil {
		return deadLetterCursor{}, bad
	}
	return deadLetterCursor{at: time.UnixMicro(n), id: id}, nil
}
