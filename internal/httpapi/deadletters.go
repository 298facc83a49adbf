package httpapi

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/operator"
)

// maxReplayIDs is the most ids one replay names.
const maxReplayIDs = 1000

// replayBatch is how many dead letters a replay of all of them takes in
// one transaction.
const replayBatch = 500

type deadLetterPage struct {
	Items      []operator.DeadLetter `json:"items"`
	NextCursor *string               `json:"next_cursor"`
}

// subscriber reads the {name} path segment: one of Config.Movable, or a
// 404.
func (s *server) subscriber(r *http.Request) (dispatch.Subscriber, error) {
	sub, ok := s.op.Subscriber(r.PathValue("name"))
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
	items, next, err := s.op.DeadLetters(ctx, sub, operator.Cursor(after), limit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := deadLetterPage{Items: items}
	if next != nil {
		token := deadLetterCursor(*next).String()
		page.NextCursor = &token
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
		ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
		defer cancel()
		replayed, err = s.op.Replay(ctx, sub, ids)
	} else {
		replayed, err = s.op.ReplayAll(r.Context(), sub)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"replayed": replayed})
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
	err = s.op.Discard(ctx, sub, id)
	if errors.Is(err, operator.ErrNoSuchDeadLetter) {
		err = errNotFound("no such dead letter")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// deadLetterCursor is operator.Cursor written as an opaque URL-safe token.
type deadLetterCursor operator.Cursor

const deadLetterCursorPrefix = "d:"

// maxCursorMicros bounds a cursor's time to what Postgres keeps
// (year 9999), so a forged one is a 400 rather than a database error.
const maxCursorMicros = 253402300799999999

// String encodes the cursor as an opaque URL-safe token.
func (c deadLetterCursor) String() string {
	raw := deadLetterCursorPrefix + strconv.FormatInt(c.At.UnixMicro(), 10) + ":" + c.ID
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
	return deadLetterCursor{At: time.UnixMicro(n), ID: id}, nil
}
