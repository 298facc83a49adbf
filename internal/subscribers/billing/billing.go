// Package billing is the billing subscriber and what it answers: from
// file.uploaded and file.deleted it keeps, per file, its size and the times
// it was uploaded and deleted, and per owner a ledger of the instants the
// bytes they store change, with running totals; from those it answers GET
// /v1/usage (exact byte-seconds, GB-hours and cost over any range, or in
// windows of a zone's calendar) and the statements of each billing period,
// priced by the price book (price.scheduled events). Its Closer closes a
// period's statements once the period is complete: every event that could
// occur before its end has committed and been applied. The subscriber runs
// inline or remote (internal/dispatch), with the same rows either way.
package billing

import (
	"bytes"
	"context"
	"maps"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/subscribers/filefacts"
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

// Tables implements dispatch.Rebuildable: the rows that follow from the
// file events alone. The statements and the closer's state are not among
// them: a closed statement never changes, whatever a rebuild finds.
func (Subscriber) Tables() []string {
	return []string{"billing_files", "billing_levels", "billing_pending", "billing_owners"}
}

// Handle applies a batch in two statements: the owners' rows
// (BillingOwnersApply), then the files' rows and the owners' pending ledger
// changes (BillingApply, one row per file: filefacts says why), which Fold
// moves into the ledgers later. Times are the events' occurred_at, so when
// an event is applied does not matter.
func (Subscriber) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	ids, facts, err := filefacts.Fold(events)
	if err != nil {
		return err
	}
	n := len(ids)
	p := &dbsqlc.BillingApplyParams{
		FileIds: ids, OwnerIds: make([]uuid.UUID, n),
		HasUpload: make([]bool, n), Sizes: make([]int64, n), UploadedAts: make([]time.Time, n),
		HasDelete: make([]bool, n), DeletedAts: make([]time.Time, n), Positions: make([]int64, n),
	}
	type ownerFacts struct {
		hasUpload bool
		firstAt   time.Time
		position  int64
	}
	owners := map[uuid.UUID]*ownerFacts{}
	for i, f := range facts {
		p.OwnerIds[i], p.Positions[i] = f.Owner, f.Position
		p.HasUpload[i], p.Sizes[i], p.UploadedAts[i] = f.HasUpload, f.Size, f.UploadedAt
		p.HasDelete[i], p.DeletedAts[i] = f.HasDelete, f.DeletedAt
		o := owners[f.Owner]
		if o == nil {
			o = &ownerFacts{}
			owners[f.Owner] = o
		}
		o.position = max(o.position, f.Position)
		if f.HasUpload && (!o.hasUpload || f.UploadedAt.Before(o.firstAt)) {
			o.hasUpload, o.firstAt = true, f.UploadedAt
		}
	}
	op := &dbsqlc.BillingOwnersApplyParams{}
	for _, id := range slices.SortedFunc(maps.Keys(owners), func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) }) {
		o := owners[id]
		op.OwnerIds = append(op.OwnerIds, id)
		op.HasUpload = append(op.HasUpload, o.hasUpload)
		op.FirstUploadAts = append(op.FirstUploadAts, o.firstAt)
		op.Positions = append(op.Positions, o.position)
	}
	// Queued, unread, to go with the transaction's COMMIT: one round trip
	// fewer per batch. An error comes back from the commit, named after its
	// statement, failing the batch.
	q := dbsqlc.New()
	q.BillingOwnersApply(ctx, tx, []*dbsqlc.BillingOwnersApplyParams{op})
	q.BillingApply(ctx, tx, []*dbsqlc.BillingApplyParams{p})
	return nil
}
