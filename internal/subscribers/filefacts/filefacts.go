// Package filefacts folds a batch of file events into one row of facts per
// file: the shape the storage and billing subscribers each upsert in one
// statement. Facts only ever accumulate (the earliest upload, the earliest
// delete, the highest position), so applying them is commutative: order and
// duplicates across batches do not change the result.
package filefacts

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
)

// ErrMalformedEvent: an event that no subscriber can apply (wrong type,
// undecodable data, no owner, a negative size). It fails its batch, and the
// consumer then dead-letters that message alone.
var ErrMalformedEvent = errors.New("malformed file event")

// Facts is what a batch says about one file.
type Facts struct {
	Owner      uuid.UUID
	HasUpload  bool
	Size       int64
	UploadedAt time.Time
	HasDelete  bool
	DeletedAt  time.Time
	Position   int64 // the highest position among the file's events
}

// Fold merges file.uploaded and file.deleted events per file. The files come
// back in id order: one lock order for every transaction, so concurrent
// consumers touching the same files wait for each other instead of
// deadlocking. A file has one upload and one delete; should two ever meet,
// the earliest wins, as the subscribers' tables do across batches.
func Fold(events []eventstore.Event) (ids []uuid.UUID, facts []Facts, err error) {
	byFile := make(map[uuid.UUID]*Facts, len(events))
	for _, e := range events {
		f := byFile[e.StreamID]
		if f == nil {
			f = &Facts{}
			byFile[e.StreamID] = f
		}
		f.Position = max(f.Position, e.Position)
		switch e.Type {
		case domain.FileUploaded:
			var d domain.FileUploadedData
			if err := decode(e, &d); err != nil {
				return nil, nil, err
			}
			if d.SizeBytes < 0 {
				return nil, nil, fmt.Errorf("%w: %s %s has a negative size", ErrMalformedEvent, e.Type, e.ID)
			}
			f.Owner = d.OwnerID
			if !f.HasUpload || e.OccurredAt.Before(f.UploadedAt) {
				f.HasUpload, f.Size, f.UploadedAt = true, d.SizeBytes, e.OccurredAt
			}
		case domain.FileDeleted:
			var d domain.FileDeletedData
			if err := decode(e, &d); err != nil {
				return nil, nil, err
			}
			f.Owner = d.OwnerID
			if !f.HasDelete || e.OccurredAt.Before(f.DeletedAt) {
				f.HasDelete, f.DeletedAt = true, e.OccurredAt
			}
		default:
			return nil, nil, fmt.Errorf("%w: unexpected type %s", ErrMalformedEvent, e.Type)
		}
		if f.Owner == uuid.Nil {
			return nil, nil, fmt.Errorf("%w: %s %s has no owner_id", ErrMalformedEvent, e.Type, e.ID)
		}
	}
	ids = make([]uuid.UUID, 0, len(byFile))
	for id := range byFile {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	facts = make([]Facts, len(ids))
	for i, id := range ids {
		facts[i] = *byFile[id]
	}
	return ids, facts, nil
}

func decode(e eventstore.Event, into any) error {
	if err := json.Unmarshal(e.Data, into); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrMalformedEvent, e.Type, e.ID, err)
	}
	return nil
}
