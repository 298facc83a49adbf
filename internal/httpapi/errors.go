package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/platform/database"
)

// apiError is an answer in the error shape {"error":{"code","message"}}.
type apiError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter, when positive, is sent as Retry-After (seconds).
	RetryAfter int
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

var (
	errUnauthorized = &apiError{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "a valid bearer token is required"}
	errForbidden    = &apiError{Status: http.StatusForbidden, Code: "forbidden", Message: "no admin token is configured"}
	errUnavailable  = &apiError{Status: http.StatusServiceUnavailable, Code: "unavailable", Message: "the database is unavailable; retry later"}
	errInternal     = &apiError{Status: http.StatusInternalServerError, Code: "internal", Message: "internal error"}
	errBodyTooLarge = &apiError{Status: http.StatusRequestEntityTooLarge, Code: "body_too_large", Message: "the body is larger than 1 MiB"}
	errKeyReused    = &apiError{Status: http.StatusConflict, Code: "idempotency_key_reused", Message: "this Idempotency-Key was used for another request"}
	errPrecondition = &apiError{Status: http.StatusPreconditionFailed, Code: "precondition_failed", Message: "the job has another version than If-Match names"}
	errFileLimit    = &apiError{Status: http.StatusConflict, Code: "job_file_limit", Message: fmt.Sprintf("a job holds at most %d files; this would take it past that", domain.MaxJobFiles)}
)

func errInvalid(msg string) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: "invalid_input", Message: msg}
}

func errNotFound(msg string) *apiError {
	return &apiError{Status: http.StatusNotFound, Code: "not_found", Message: msg}
}

// notFoundSays is err, with the not-found of a read (database.ErrNotFound)
// answered as a 404 that says msg instead of the generic "not found".
func notFoundSays(err error, msg string) error {
	if errors.Is(err, database.ErrNotFound) {
		return errNotFound(msg)
	}
	return err
}

// fail answers err: the caller's mistakes as 4xx, an unreachable database
// as 503, anything else as 500 with a log line.
func (s *server) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, s.classify(r, err))
}

func (s *server) classify(r *http.Request, err error) *apiError {
	var apiErr *apiError
	var invalid *command.InvalidError
	var tooLarge *http.MaxBytesError
	var missing *command.NotFoundError
	switch {
	case errors.As(err, &apiErr):
		return apiErr
	case errors.As(err, &tooLarge):
		return errBodyTooLarge
	case errors.As(err, &missing):
		return errNotFound(missing.Error())
	case errors.Is(err, database.ErrNotFound):
		return errNotFound("not found")
	case errors.Is(err, command.ErrVersionMismatch):
		return errPrecondition
	case errors.Is(err, command.ErrJobFileLimit):
		return errFileLimit
	case errors.As(err, &invalid):
		return errInvalid(invalid.Error())
	case r.Context().Err() != nil:
		// The client went away; nobody reads this answer.
		s.log.DebugContext(r.Context(), "request canceled", "route", r.Pattern, "error", err)
		return errUnavailable
	case unavailable(err):
		s.log.WarnContext(r.Context(), "database unavailable", "route", r.Pattern, "error", err)
		return errUnavailable
	default:
		s.log.ErrorContext(r.Context(), "request failed", "route", r.Pattern, "error", err)
		return errInternal
	}
}

// unavailable reports a database that could not be reached or did not
// answer within the request's deadline.
func unavailable(err error) bool {
	return database.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="epoch"`)
	}
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	type body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	writeJSON(w, e.Status, map[string]body{"error": {e.Code, e.Message}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
