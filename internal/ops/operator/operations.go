package operator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/commandside/projection"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/rebuild"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/operations"
	"github.com/catacloud/epoch/internal/subscribers/billing"
)

// ErrNotRebuildable: the subscriber keeps no rows a rebuild can recompute.
var ErrNotRebuildable = errors.New("keeps no rows a rebuild can recompute")

// Each method below starts an operation that runs until it ends or life
// does (the api stops), and returns it as it started;
// operations.ErrRunning when one of the same target runs.

// Redrive hands sub every stored event of its types from position from on,
// through its inbox, and to no one else.
func (o *Operator) Redrive(ctx, life context.Context, sub dispatch.Subscriber, from int64) (operations.Operation, error) {
	return o.ops.Start(ctx, life, "redrive", sub.Name(), func(ctx context.Context, p *operations.Progress) error {
		return redrive(ctx, o.cfg.Background, sub, from, p)
	})
}

// RebuildSubscriber recomputes sub's rows from exactly the events it
// applied, beside the live ones, and swaps in the rows that differ.
func (o *Operator) RebuildSubscriber(ctx, life context.Context, sub dispatch.Subscriber) (operations.Operation, error) {
	rb, ok := sub.(dispatch.Rebuildable)
	if !ok {
		return operations.Operation{}, fmt.Errorf("%s %w", sub.Name(), ErrNotRebuildable)
	}
	target := rebuild.Target{
		Tables: rb.Tables(),
		Apply: func(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
			return rb.Handle(ctx, tx, dispatch.Filter(rb, events))
		},
		Applied: rebuild.Subscriber, AppliedArgs: []any{rb.Name(), rb.EventTypes()},
	}
	if s, ok := sub.(dispatch.Settler); ok {
		target.Settle = s.Settle
	}
	return o.ops.Start(ctx, life, "rebuild", rb.Name(), func(ctx context.Context, p *operations.Progress) error {
		return rebuild.Run(ctx, o.cfg.Background, target, true, p)
	})
}

// RebuildProjections rebuilds files, jobs and job_files from every event
// beside the live tables and counts the rows that differ; with swap it
// rewrites them.
func (o *Operator) RebuildProjections(ctx, life context.Context, swap bool) (operations.Operation, error) {
	p := projection.Subscriber{}
	target := rebuild.Target{Tables: p.Tables(), Apply: p.Handle, Applied: rebuild.Projections}
	return o.ops.Start(ctx, life, "projections_rebuild", projection.Name, func(ctx context.Context, pr *operations.Progress) error {
		return rebuild.Run(ctx, o.cfg.Background, target, swap, pr)
	})
}

// VerifyStatements recomputes the closed statements whose periods end in
// [from, to) from the event store and the price book alone, and counts
// those that disagree.
func (o *Operator) VerifyStatements(ctx, life context.Context, from, to time.Time, settings billing.Settings) (operations.Operation, error) {
	return o.ops.Start(ctx, life, billing.VerifyKind, "statements", func(ctx context.Context, p *operations.Progress) error {
		return billing.Verify(ctx, o.cfg.Background, from, to, settings, o.cfg.Logger, p)
	})
}

// Operation reads an operation as it stands (database.ErrNotFound when
// there is none).
func (o *Operator) Operation(ctx context.Context, id uuid.UUID) (operations.Operation, error) {
	return operations.Get(ctx, o.cfg.Background, id)
}
