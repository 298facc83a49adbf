// Package catchup implements min_position on the reads of remote
// subscribers (GET /v1/storage, GET /v1/usage): wait until a subscriber has
// applied every committed event of the caller's up to a position, so a
// client reads its own writes past the outbox.
package catchup

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

var (
	// ErrBeyondHead is a position past every committed event (a 400).
	ErrBeyondHead = errors.New("min_position is beyond every committed position")
	// ErrTimeout means the subscriber did not catch up in time (a 504).
	ErrTimeout = errors.New("subscriber did not catch up in time")
)

// What a wait waits for: subscriber has applied (has inbox rows for, or a
// watermark above) every committed file event of owner's with a position ≤
// minPosition (Watcher.Wait).
//
// The owner's file events are found through events_file_owner_idx (the owner
// is in the event data). A wait keeps no bookkeeping of its own: the first
// look scans the owner's events up to minPosition, and later looks start at
// the lowest one still missing, since everything below it was applied
// already. An event that commits after the first look with a lower position
// belongs to a transaction that was still open when the caller's write
// answered: not one the caller can have seen, so not waited for.

// firstLook checks minPosition against the head and returns the lowest
// position still missing (0: none).
func firstLook(ctx context.Context, db database.DBTX, subscriber string, owner uuid.UUID, minPosition int64) (int64, error) {
	head, err := dbsqlc.New().EventMaxPosition(ctx, db)
	if err != nil {
		return 0, fmt.Errorf("catchup: head position: %w", err)
	}
	if minPosition > head {
		return 0, ErrBeyondHead
	}
	return missing(ctx, db, subscriber, owner, 0, minPosition)
}

func missing(ctx context.Context, db database.DBTX, subscriber string, owner uuid.UUID, from, minPosition int64) (int64, error) {
	pos, err := dbsqlc.New().InboxFileEventMissing(ctx, db, &dbsqlc.InboxFileEventMissingParams{
		OwnerID: owner.String(), FromPosition: from, MaxPosition: minPosition, Subscriber: subscriber,
	})
	if err != nil {
		return 0, fmt.Errorf("catchup: %s: %w", subscriber, err)
	}
	return pos, nil
}
