package command

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// ErrEffectiveInPast: a price version whose effective_from is before the
// moment of the request (by the database's clock). A price change never
// reaches a period that has begun.
var ErrEffectiveInPast = errors.New("effective_from is in the past")

// PriceScheduled is what SchedulePrice wrote: the version and when it was
// scheduled.
type PriceScheduled struct {
	Version     int32
	ScheduledAt time.Time
	Position    int64
}

// SchedulePrice appends a price version to the price book (price.scheduled
// on the one price_book stream, at its next version). The event's time is
// the database's clock in the insert; an effective_from before it is
// ErrEffectiveInPast, and the transaction, rolled back by the caller,
// writes nothing. Two versions scheduled at once take versions in turn: the
// loser's append is a version conflict, which Run retries.
func (s *Service) SchedulePrice(ctx context.Context, tx *database.Tx, data domain.PriceScheduledData) (PriceScheduled, error) {
	current, err := dbsqlc.New().EventStreamVersion(ctx, tx, domain.PriceBookStream)
	if err != nil {
		return PriceScheduled{}, fmt.Errorf("price book version: %w", err)
	}
	e, err := eventstore.New(domain.StreamPriceBook, domain.PriceBookStream, current+1, domain.PriceScheduled, data, time.Time{})
	if err != nil {
		return PriceScheduled{}, err
	}
	events := []eventstore.Event{e}
	if err := eventstore.Append(ctx, tx, events); err != nil {
		return PriceScheduled{}, err
	}
	if data.EffectiveFrom.Before(events[0].OccurredAt) {
		return PriceScheduled{}, ErrEffectiveInPast
	}
	if err := s.dispatcher.Dispatch(ctx, tx, events); err != nil {
		return PriceScheduled{}, err
	}
	return PriceScheduled{Version: e.Version, ScheduledAt: events[0].OccurredAt, Position: events[0].Position}, nil
}
