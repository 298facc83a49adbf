package httpapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/catacloud/epoch/internal/dispatch"
	"github.com/catacloud/epoch/internal/operations"
	"github.com/catacloud/epoch/internal/redrive"
)

var errOperationRunning = &apiError{Status: http.StatusConflict, Code: "operation_running",
	Message: "an operation of this target is running; wait for it to end"}

// movable finds a movable subscriber by the {name} of the path.
func (s *server) movable(r *http.Request) (dispatch.Subscriber, error) {
	name := r.PathValue("name")
	for _, sub := range s.cfg.Movable {
		if sub.Name() == name {
			return sub, nil
		}
	}
	return nil, errNotFound("no such subscriber")
}

type redriveInput struct {
	FromPosition *int64 `json:"from_position"`
}

// redrive is POST /v1/admin/subscribers/{name}/redrive: an operation that
// hands the subscriber every stored event of its types from a position on.
func (s *server) redrive(w http.ResponseWriter, r *http.Request) {
	sub, err := s.movable(r)
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
	s.startOperation(w, r, "redrive", sub.Name(), func(ctx context.Context, p *operations.Progress) error {
		return redrive.Run(ctx, s.cfg.Background, sub, from, p)
	})
}

// startOperation starts work as an operation that outlives the request
// (until the api stops) and answers 202 with it.
func (s *server) startOperation(w http.ResponseWriter, r *http.Request, kind, target string, work operations.Work) {
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	op, err := s.ops.Start(ctx, s.life, kind, target, work)
	if errors.Is(err, operations.ErrRunning) {
		err = errOperationRunning
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
	op, err := operations.Get(ctx, s.cfg.Background, id)
	if errors.Is(err, operations.ErrNotFound) {
		err = errNotFound("no such operation")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, op)
}
