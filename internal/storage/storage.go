// Package storage is the storage subscriber: from file.uploaded and
// file.deleted it keeps what each user stores now (file count and bytes),
// and answers GET /v1/storage. It runs inline or remote (internal/dispatch),
// with the same rows either way.
package storage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
	"github.com/catacloud/epoch/internal/domain"
	"github.com/catacloud/epoch/internal/eventstore"
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

// fileState is what a batch says about one file.
type fileState struct {
	owner     uuid.UUID
	hasUpload bool
	size      int64
	deleted   bool
	position  int64
}

// Handle applies a batch in one statement: the events are merged to one
// entry per file first (a batch may hold a file's upload and its delete),
// because one INSERT ... ON CONFLICT cannot touch a row twice.
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
			f.owner = d.OwnerID
			if !f.hasUpload {
				f.hasUpload, f.size = true, d.SizeBytes
			}
		case domain.FileDeleted:
			var d domain.FileDeletedData
			if err := decode(e, &d); err != nil {
				return err
			}
			f.owner, f.deleted = d.OwnerID, true
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
	p := &dbsqlc.StorageFileApplyParams{
		FileIds:   ids,
		OwnerIds:  make([]uuid.UUID, len(ids)),
		HasUpload: make([]bool, len(ids)),
		Sizes:     make([]int64, len(ids)),
		Deleted:   make([]bool, len(ids)),
		Positions: make([]int64, len(ids)),
	}
	for i, id := range ids {
		f := files[id]
		p.OwnerIds[i], p.HasUpload[i], p.Sizes[i], p.Deleted[i], p.Positions[i] = f.owner, f.hasUpload, f.size, f.deleted, f.position
	}
	if err := dbsqlc.New().StorageFileApply(ctx, tx, p); err != nil {
		return fmt.Errorf("storage: apply %d files: %w", len(ids), err)
	}
	return nil
}

// decode reads an event's data strictly enough that a malformed event fails
// its batch (and ends, alone, in the dead-letter queue) instead of being
// applied as zeros.
func decode(e eventstore.Event, into any) error {
	dec := json.NewDecoder(bytes.NewReader(e.Data))
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrMalformedEvent, e.Type, e.ID, err)
	}
	return nil
}

// ErrMalformedEvent is an event whose data does not decode: handling it again
// cannot succeed.
var ErrMalformedEvent = errors.New("storage: malformed event")

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
