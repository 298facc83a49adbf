// Package billing is the billing subscriber: from file.uploaded and
// file.deleted it keeps, per file, its size and the times it was uploaded
// and deleted, and answers GET /v1/usage with the exact byte-seconds a user
// stored over a period, their GB-hours and their cost. It runs inline or
// remote (internal/dispatch), with the same rows either way.
package billing

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
	"github.com/catacloud/epoch/internal/domain"
	"github.com/catacloud/epoch/internal/eventstore"
)

// Name is the subscriber's name: its inbox key and its queue
// (catacloud.billing).
const Name = "billing"

// ErrMalformedEvent is an event whose data does not decode: handling it again
// cannot succeed.
var ErrMalformedEvent = errors.New("billing: malformed event")

// Subscriber applies file events to billing_files. The zero value is ready.
type Subscriber struct{}

// Name implements dispatch.Subscriber.
func (Subscriber) Name() string { return Name }

// EventTypes implements dispatch.Subscriber.
func (Subscriber) EventTypes() []string { return []string{domain.FileUploaded, domain.FileDeleted} }

// fileState is what a batch says about one file.
type fileState struct {
	owner      uuid.UUID
	hasUpload  bool
	size       int64
	uploadedAt time.Time
	hasDelete  bool
	deletedAt  time.Time
	position   int64
}

// Handle applies a batch in one statement: the events are merged to one
// entry per file first (a batch may hold a file's upload and its delete),
// because one INSERT ... ON CONFLICT cannot touch a row twice. Times are the
// events' occurred_at, so when an event is applied does not matter.
func (Subscriber) Handle(ctx context.Context, tx pgx.Tx, events []eventstore.Event) error {
	files := make(map[uuid.UUID]*fileState, len(events))
	for _, e := range events {
		f := files[e.StreamID]
		if f == nil {
			f = &fileState{}
			files[e.StreamID] = f
		}
		f.position = max(f.position, e.Position)
		switch e.Type {
		case domain.FileUploaded:
			var d domain.FileUploadedData
			if err := decode(e, &d); err != nil {
				return err
			}
			if d.SizeBytes < 0 {
				return fmt.Errorf("%w: %s %s has a negative size", ErrMalformedEvent, e.Type, e.ID)
			}
			f.owner = d.OwnerID
			// A file has one upload (version 1); should two ever meet, the
			// earliest wins, as the table's least() does across batches.
			if !f.hasUpload || e.OccurredAt.Before(f.uploadedAt) {
				f.hasUpload, f.size, f.uploadedAt = true, d.SizeBytes, e.OccurredAt
			}
		case domain.FileDeleted:
			var d domain.FileDeletedData
			if err := decode(e, &d); err != nil {
				return err
			}
			f.owner = d.OwnerID
			if !f.hasDelete || e.OccurredAt.Before(f.deletedAt) {
				f.hasDelete, f.deletedAt = true, e.OccurredAt
			}
		default:
			return fmt.Errorf("%w: unexpected type %s", ErrMalformedEvent, e.Type)
		}
		if f.owner == uuid.Nil {
			return fmt.Errorf("%w: %s %s has no owner_id", ErrMalformedEvent, e.Type, e.ID)
		}
	}
	ids := make([]uuid.UUID, 0, len(files))
	for id := range files {
		ids = append(ids, id)
	}
	// One lock order for every transaction: concurrent consumers touching
	// the same files wait for each other instead of deadlocking.
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	n := len(ids)
	p := &dbsqlc.BillingFileApplyParams{
		FileIds: ids, OwnerIds: make([]uuid.UUID, n),
		HasUpload: make([]bool, n), Sizes: make([]int64, n), UploadedAts: make([]time.Time, n),
		HasDelete: make([]bool, n), DeletedAts: make([]time.Time, n), Positions: make([]int64, n),
	}
	for i, id := range ids {
		f := files[id]
		p.OwnerIds[i], p.Positions[i] = f.owner, f.position
		p.HasUpload[i], p.Sizes[i], p.UploadedAts[i] = f.hasUpload, f.size, f.uploadedAt
		p.HasDelete[i], p.DeletedAts[i] = f.hasDelete, f.deletedAt
	}
	if err := dbsqlc.New().BillingFileApply(ctx, tx, p); err != nil {
		return fmt.Errorf("billing: apply %d files: %w", n, err)
	}
	return nil
}

func decode(e eventstore.Event, into any) error {
	if err := json.Unmarshal(e.Data, into); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrMalformedEvent, e.Type, e.ID, err)
	}
	return nil
}

// Usage is the body of GET /v1/usage. The three amounts are decimal strings
// in their shortest exact form: no exponent, no trailing zeros after the
// point, no point at all when whole ("0", "7200", "1.5").
//
//   - ByteSeconds is exact (the events keep microseconds, so at most 6
//     decimals).
//   - GBHours = byte_seconds / (10^9 × 3600) and Cost = that exact quotient
//     × the price, each rounded half-to-even to 18 decimals (a byte stored
//     for a microsecond is 2.8e-19 GB-hours: below that, nothing is billed).
type Usage struct {
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	ByteSeconds string    `json:"byte_seconds"`
	GBHours     string    `json:"gb_hours"`
	Cost        string    `json:"cost"`
	Currency    string    `json:"currency"`
	Position    int64     `json:"position"`
}

// Read returns owner's usage over [from, to) as the billing subscriber has
// applied it so far. now (the time of the request) closes the interval of a
// file not deleted yet. A file whose upload the subscriber has not seen
// counts nothing. Position is the highest event position it applied for
// owner (0 if none).
func Read(ctx context.Context, db database.DBTX, owner uuid.UUID, from, to, now time.Time, price Price) (Usage, error) {
	from, to = from.UTC().Truncate(time.Microsecond), to.UTC().Truncate(time.Microsecond)
	row, err := dbsqlc.New().BillingUsage(ctx, db, &dbsqlc.BillingUsageParams{
		OwnerID: owner, PeriodStart: from, PeriodEnd: to, Now: now.UTC().Truncate(time.Microsecond),
	})
	if err != nil {
		return Usage{}, fmt.Errorf("billing: read usage: %w", err)
	}
	gbHours, cost, err := price.amounts(row.ByteSeconds)
	if err != nil {
		return Usage{}, err
	}
	return Usage{
		From: from, To: to, ByteSeconds: row.ByteSeconds, GBHours: gbHours, Cost: cost,
		Currency: price.currency, Position: row.Position,
	}, nil
}
