package httpapi

import (
	"bytes"
	"context"
	"errors"
	"net/http"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dispatch"
	"github.com/catacloud/epoch/internal/eventstore"
	"github.com/catacloud/epoch/internal/operations"
	"github.com/catacloud/epoch/internal/projection"
	"github.com/catacloud/epoch/internal/rebuild"
	"github.com/catacloud/epoch/internal/redrive"
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
	rb, ok := sub.(dispatch.Rebuildable)
	if !ok {
		s.fail(w, r, errInvalid(sub.Name()+" keeps no rows a rebuild can recompute"))
		return
	}
	target := rebuild.Target{
		Tables: rb.Tables(),
		Apply: func(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
			return rb.Handle(ctx, tx, dispatch.Filter(rb, events))
		},
		Applied: rebuild.Subscriber, AppliedArgs: []any{rb.Name(), rb.EventTypes()},
	}
	s.startOperation(w, r, "rebuild", rb.Name(), func(ctx context.Context, p *operations.Progress) error {
		return rebuild.Run(ctx, s.cfg.Background, target, true, p)
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
	p := projection.Subscriber{}
	target := rebuild.Target{Tables: p.Tables(), Apply: p.Handle, Applied: rebuild.Projections}
	s.startOperation(w, r, "projections_rebuild", projection.Name, func(ctx context.Context, pr *operations.Progress) error {
		return rebuild.Run(ctx, s.cfg.Background, target, swap, pr)
	})
}
