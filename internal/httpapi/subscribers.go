package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/delivery/catchup"
	"github.com/catacloud/epoch/internal/subscribers/storage"
)

// The answers of a wait that ends without its subscriber caught up: each
// says when to try again.
var (
	errCatchUpTimeout = &apiError{Status: http.StatusGatewayTimeout, Code: "timeout",
		Message: "the subscriber has not applied min_position yet; retry later", RetryAfter: 1}
	errTooManyWaits = &apiError{Status: http.StatusTooManyRequests, Code: "too_many_waits",
		Message: "too many min_position waits of this user at once; retry later", RetryAfter: 1}
	errShuttingDown = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable",
		Message: "the server is shutting down; retry", RetryAfter: 1}
)

// parseMinPosition reads ?min_position= (absent: 0, no waiting).
func parseMinPosition(r *http.Request) (int64, error) {
	q := r.URL.Query()
	if !q.Has("min_position") {
		return 0, nil
	}
	v := q.Get("min_position")
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || strings.HasPrefix(v, "+") {
		return 0, errInvalid("min_position must be a non-negative integer")
	}
	return n, nil
}

// catchUp waits until subscriber applied the caller's events up to
// ?min_position= (absent: no wait), holding no connection while it waits
// (catchup.Watcher).
func (s *server) catchUp(r *http.Request, user uuid.UUID, subscriber string) error {
	minPosition, err := parseMinPosition(r)
	if err != nil {
		return err
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout+s.cfg.CatchUpTimeout)
	defer cancel()
	err = s.watchers[subscriber].Wait(ctx, s.cfg.Pool, user, minPosition, s.cfg.CatchUpTimeout)
	switch {
	case errors.Is(err, catchup.ErrBeyondHead):
		return errInvalid(fmt.Sprintf("min_position %d is beyond every committed position", minPosition))
	case errors.Is(err, catchup.ErrTimeout):
		return errCatchUpTimeout
	case errors.Is(err, catchup.ErrTooManyWaits):
		return errTooManyWaits
	case errors.Is(err, catchup.ErrStopped):
		return errShuttingDown
	}
	return err
}

// GET /v1/storage
func (s *server) getStorage(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	if err := s.catchUp(r, user, storage.Name); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	usage, err := storage.Read(ctx, s.cfg.Pool, user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerPosition, position(usage.Position))
	writeJSON(w, http.StatusOK, usage)
}
