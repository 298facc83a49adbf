package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/catacloud/epoch/internal/ops/operator"
	"github.com/catacloud/epoch/internal/platform/operations"
)

var errOperationRunning = &apiError{Status: http.StatusConflict, Code: "operation_running",
	Message: "an operation of this target is running; wait for it to end"}

type redriveInput struct {
	FromPosition *int64 `json:"from_position"`
}

// redrive is POST /v1/admin/subscribers/{name}/redrive: an operation that
// hands the subscriber every stored event of its types from a position on.
func (s *server) redrive(w http.ResponseWriter, r *http.Request) {
	sub, err := s.subscriber(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	_, in, err := readJSON[redriveInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if in.FromPosition == nil || *in.FromPosition < 0 {
		s.fail(w, r, errInvalid("from_position is required: a position ≥ 0"))
		return
	}
	from := *in.FromPosition
	s.startOperation(w, r, func(ctx context.Context) (operations.Operation, error) {
		return s.op.Redrive(ctx, s.life, sub, from)
	})
}

// startOperation starts an operation that outlives the request (until the
// api stops) and answers 202 with it.
func (s *server) startOperation(w http.ResponseWriter, r *http.Request, start func(ctx context.Context) (operations.Operation, error)) {
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	op, err := start(ctx)
	switch {
	case errors.Is(err, operations.ErrRunning):
		err = errOperationRunning
	case errors.Is(err, operator.ErrNotRebuildable):
		err = errInvalid(err.Error())
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/admin/operations/"+op.ID.String())
	writeJSON(w, http.StatusAccepted, op)
}

// getOperation is GET /v1/admin/operations/{id}.
func (s *server) getOperation(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	op, err := s.op.Operation(ctx, id)
	if err != nil {
		s.fail(w, r, notFoundSays(err, "no such operation"))
		return
	}
	writeJSON(w, http.StatusOK, op)
}

// rebuildSubscriber is POST /v1/admin/subscribers/{name}/rebuild: an
// operation that recomputes the subscriber's rows from the events it
// applied, beside the live ones, and swaps in the rows that differ.
func (s *server) rebuildSubscriber(w http.ResponseWriter, r *http.Request) {
	sub, err := s.subscriber(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.startOperation(w, r, func(ctx context.Context) (operations.Operation, error) {
		return s.op.RebuildSubscriber(ctx, s.life, sub)
	})
}

type projectionsRebuildInput struct {
	Swap *bool `json:"swap"`
}

// rebuildProjections is POST /v1/admin/projections/rebuild: an operation
// that rebuilds files, jobs and job_files from the events beside the live
// tables and counts the rows that differ; with "swap":true it rewrites them.
func (s *server) rebuildProjections(w http.ResponseWriter, r *http.Request) {
	swap := false
	if body, err := readBody(w, r); err != nil {
		s.fail(w, r, err)
		return
	} else if len(bytes.TrimSpace(body)) > 0 {
		var in projectionsRebuildInput
		if err := decodeJSON(body, &in); err != nil {
			s.fail(w, r, err)
			return
		}
		swap = in.Swap != nil && *in.Swap
	}
	s.startOperation(w, r, func(ctx context.Context) (operations.Operation, error) {
		return s.op.RebuildProjections(ctx, s.life, swap)
	})
}
