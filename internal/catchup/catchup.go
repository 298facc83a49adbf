// Package catchup implements min_position on the reads of remote
// subscribers (GET /v1/storage, GET /v1/usage): wait until a subscriber has
// applied every committed event of the caller's up to a position, so a
// client reads its own writes past the outbox.
package catchup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
)

var (
	// ErrBeyondHead is a position past every committed event (a 400).
	ErrBeyondHead = errors.New("min_position is beyond every committed position")
	// ErrTimeout means the subscriber did not catch up in time (a 504).
	ErrTimeout = errors.New("subscriber did not catch up in time")
)

// PollInterval is how often Wait looks again. Each look is one indexed query
// over the caller's not yet confirmed events only, so polling is cheap.
const PollInterval = 15 * time.Millisecond

// Wait returns nil once subscriber has applied (has inbox rows for, or a
// watermark above) every committed file event of owner's with a position ≤
// minPosition. It returns ErrBeyondHead when minPosition is past the
// highest committed position, and ErrTimeout when timeout passes first. A
// minPosition ≤ 0 asks for nothing. It polls every PollInterval, holding a
// connection of db for each look only; the api waits through a Watcher,
// which looks for all its waits at once and only when woken.
//
// The owner's file events are found through events_file_owner_idx (the owner
// is in the event data). Wait does not keep bookkeeping of its own: the
// first look scans the owner's events up to minPosition, and later looks
// start at the lowest one still missing, since everything below it was
// applied already. An event that commits after the first look with a lower
// position belongs to a transaction that was still open when the caller's
// write answered: not one the caller can have seen, so not waited for.
func Wait(ctx context.Context, db database.DBTX, subscriber string, owner uuid.UUID, minPosition int64, timeout time.Duration) error {
	if minPosition <= 0 {
		return nil
	}
	from, err := firstLook(ctx, db, subscriber, owner, minPosition)
	if err != nil || from == 0 {
		return err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return ErrTimeout
		case <-time.After(PollInterval):
		}
		if from, err = missing(ctx, db, subscriber, owner, from, minPosition); err != nil || from == 0 {
			return err
		}
	}
}

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
