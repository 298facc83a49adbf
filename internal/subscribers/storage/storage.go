// Package storage is the storage subscriber: from file.uploaded and
// file.deleted it keeps what each user stores now (file count and bytes),
// and answers GET /v1/storage. It runs inline or remote (internal/delivery/dispatch),
// with the same rows either way.
package storage

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/subscribers/filefacts"
)

// Name is the subscriber's name: its inbox key and its queue
// (catacloud.storage).
const Name = "storage"

// Subscriber applies file events to storage_files. The zero value is ready.
type Subscriber struct{}

// Name implements dispatch.Subscriber.
func (Subscriber) Name() string { return Name }

// EventTypes implements dispatch.Subscriber.
func (Subscriber) EventTypes() []string { return []string{domain.FileUploaded, domain.FileDeleted} }

// Tables implements dispatch.Rebuildable.
func (Subscriber) Tables() []string { return []string{"storage_files"} }

// Handle applies a batch in one statement, one row per file (see
// filefacts: a batch may hold a file's upload and its delete, and one
// INSERT ... ON CONFLICT cannot touch a row twice).
func (Subscriber) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	ids, facts, err := filefacts.Fold(events)
	if err != nil {
		return err
	}
	n := len(ids)
	p := &dbsqlc.StorageFileApplyParams{
		FileIds: ids, OwnerIds: make([]uuid.UUID, n), HasUpload: make([]bool, n),
		Sizes: make([]int64, n), Deleted: make([]bool, n), Positions: make([]int64, n),
	}
	for i, f := range facts {
		p.OwnerIds[i], p.HasUpload[i], p.Sizes[i], p.Deleted[i], p.Positions[i] = f.Owner, f.HasUpload, f.Size, f.HasDelete, f.Position
	}
	// Queued, unread, to go with the transaction's COMMIT: one round trip
	// fewer per batch. An error comes back from the commit, named
	// StorageFileApply, failing the batch.
	dbsqlc.New().StorageFileApply(ctx, tx, []*dbsqlc.StorageFileApplyParams{p})
	return nil
}

// ErrMalformedEvent is an event whose data does not decode: handling it again
// cannot succeed.
var ErrMalformedEvent = filefacts.ErrMalformedEvent

// Usage is the body of GET /v1/storage.
type Usage struct {
	FileCount int64       `json:"file_count"`
	Bytes     json.Number `json:"bytes"`
	Position  int64       `json:"position"`
}

// Read returns what owner stores now, as the storage subscriber has applied
// it so far. Position is the highest event position it applied for owner (0
// if none).
func Read(ctx context.Context, db database.DBTX, owner uuid.UUID) (Usage, error) {
	row, err := dbsqlc.New().StorageUsage(ctx, db, owner)
	if err != nil {
		return Usage{}, fmt.Errorf("storage: read usage: %w", err)
	}
	return Usage{FileCount: row.FileCount, Bytes: json.Number(row.Bytes), Position: row.Position}, nil
}
