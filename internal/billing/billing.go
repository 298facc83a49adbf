// Package billing is the billing subscriber: from file.uploaded and
// file.deleted it keeps, per file, its size and the times it was uploaded
// and deleted, and answers GET /v1/usage with the exact byte-seconds a user
// stored over a period, their GB-hours and their cost. It runs inline or
// remote (internal/dispatch), with the same rows either way.
package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
	"github.com/catacloud/epoch/internal/domain"
	"github.com/catacloud/epoch/internal/eventstore"
	"github.com/catacloud/epoch/internal/filefacts"
)

// Name is the subscriber's name: its inbox key and its queue
// (catacloud.billing).
const Name = "billing"

// ErrMalformedEvent is an event whose data does not decode: handling it again
// cannot succeed.
var ErrMalformedEvent = filefacts.ErrMalformedEvent

// Subscriber applies file events to billing_files. The zero value is ready.
type Subscriber struct{}

// Name implements dispatch.Subscriber.
func (Subscriber) Name() string { return Name }

// EventTypes implements dispatch.Subscriber.
func (Subscriber) EventTypes() []string { return []string{domain.FileUploaded, domain.FileDeleted} }

// Tables implements dispatch.Rebuildable.
func (Subscriber) Tables() []string { return []string{"billing_files"} }

// Handle applies a batch in one statement, one row per file (see
// filefacts: a batch may hold a file's upload and its delete, and one
// INSERT ... ON CONFLICT cannot touch a row twice). Times are the events'
// occurred_at, so when an event is applied does not matter.
func (Subscriber) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	ids, facts, err := filefacts.Fold(events)
	if err != nil {
		return err
	}
	n := len(ids)
	p := &dbsqlc.BillingFileApplyParams{
		FileIds: ids, OwnerIds: make([]uuid.UUID, n),
		HasUpload: make([]bool, n), Sizes: make([]int64, n), UploadedAts: make([]time.Time, n),
		HasDelete: make([]bool, n), DeletedAts: make([]time.Time, n), Positions: make([]int64, n),
	}
	for i, f := range facts {
		p.OwnerIds[i], p.Positions[i] = f.Owner, f.Position
		p.HasUpload[i], p.Sizes[i], p.UploadedAts[i] = f.HasUpload, f.Size, f.UploadedAt
		p.HasDelete[i], p.DeletedAts[i] = f.HasDelete, f.DeletedAt
	}
	// Queued, unread, to go with the transaction's COMMIT: one round trip
	// fewer per batch. An error comes back from the commit, named
	// BillingFileApply, failing the batch.
	dbsqlc.New().BillingFileApply(ctx, tx, []*dbsqlc.BillingFileApplyParams{p})
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
