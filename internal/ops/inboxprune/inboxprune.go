// Package inboxprune keeps the inbox from growing without bound: behind each
// deduplicated subscriber's progress it moves a watermark (every event of
// the subscriber's types at or below it is applied) and deletes the inbox
// rows at or below it. A redelivery of a pruned event still changes
// nothing: InboxClaim treats every position at or below the watermark as
// applied, with or without its row.
//
// A watermark moves in two sweeps. The first proposes the position below
// the lowest event not applied yet, with the snapshot's xmax; a later sweep
// adopts it only once every transaction running at the proposal has ended
// and the events up to it are still all applied, because a transaction
// that drew a lower position may commit after the proposal was read.
package inboxprune

import (
	"context"
	"errors"
	"fmt"

	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// Span bounds how many positions past the watermark one proposal reads.
const Span = 1_000_000

// batch bounds one DELETE, so a large backlog is worked off in short
// statements that never hold many row locks.
const batch = 5000

// Result is what one Sweep of a subscriber did.
type Result struct {
	// Watermark is the subscriber's watermark after the sweep.
	Watermark int64
	// Proposed is the watermark the next sweep may adopt.
	Proposed int64
	// Pruned is how many inbox rows were deleted.
	Pruned int64
}

// Sweep adopts the subscriber's last proposal if it is safe, proposes the
// next one, and deletes the inbox rows at or below the watermark.
func Sweep(ctx context.Context, db database.DBTX, sub dispatch.Subscriber) (Result, error) {
	q := dbsqlc.New()
	name, types := sub.Name(), sub.EventTypes()
	var res Result
	mark, err := q.InboxWatermarkAdopt(ctx, db, &dbsqlc.InboxWatermarkAdoptParams{Subscriber: name, Types: types})
	if err = database.NotFound(err); err != nil && !errors.Is(err, database.ErrNotFound) { // no row: nothing proposed yet
		return res, fmt.Errorf("inbox watermark %s: adopt: %w", name, err)
	}
	res.Watermark = mark
	proposal, err := q.InboxWatermarkPropose(ctx, db, &dbsqlc.InboxWatermarkProposeParams{Subscriber: name, Types: types, Span: Span})
	if err != nil {
		return res, fmt.Errorf("inbox watermark %s: propose: %w", name, err)
	}
	res.Proposed = proposal.Candidate
	for {
		n, err := q.InboxPrune(ctx, db, &dbsqlc.InboxPruneParams{Subscriber: name, AppliedThrough: res.Watermark, MaxCount: batch})
		res.Pruned += n
		if err != nil {
			return res, fmt.Errorf("inbox prune %s: %w", name, err)
		}
		if n < batch {
			return res, nil
		}
	}
}
