// Package domain holds Catacloud's events, the input rules, and the pure
// decide functions of the commands: given the state a command loaded, which
// events it writes. Nothing here touches a database, so every rule is tested
// without one.
package domain

import (
	"slices"

	"github.com/google/uuid"
)

// Stream types.
const (
	StreamFile      = "file"
	StreamJob       = "job"
	StreamPriceBook = "price_book"
	StreamStatement = "statement"
)

// Event types (also the RabbitMQ routing keys).
const (
	FileUploaded    = "file.uploaded"
	FileDeleted     = "file.deleted"
	JobCreated      = "job.created"
	JobFileLinked   = "job.file_linked"
	JobFileUnlinked = "job.file_unlinked"
	JobDeleted      = "job.deleted"
	PriceScheduled  = "price.scheduled"
	StatementClosed = "statement.closed"
)

// FileEventTypes, JobEventTypes and BillingEventTypes list each stream's
// event types (billing's: the price book's and the statements').
var (
	FileEventTypes    = []string{FileUploaded, FileDeleted}
	JobEventTypes     = []string{JobCreated, JobFileLinked, JobFileUnlinked, JobDeleted}
	BillingEventTypes = []string{PriceScheduled, StatementClosed}
)

// EventTypes is every event type the system stores and publishes, in a
// slice of the caller's own.
func EventTypes() []string {
	return slices.Concat(FileEventTypes, JobEventTypes, BillingEventTypes)
}

// FileUploadedData is the data of file.uploaded.
type FileUploadedData struct {
	OwnerID     uuid.UUID `json:"owner_id"`
	Name        string    `json:"name"`
	SizeBytes   int64     `json:"size_bytes"`
	ContentType string    `json:"content_type"`
}

// FileDeletedData is the data of file.deleted.
type FileDeletedData struct {
	OwnerID uuid.UUID `json:"owner_id"`
}

// JobCreatedData is the data of job.created.
type JobCreatedData struct {
	OwnerID uuid.UUID `json:"owner_id"`
	Name    string    `json:"name"`
}

// JobFileLinkedData is the data of job.file_linked.
type JobFileLinkedData struct {
	FileID uuid.UUID `json:"file_id"`
}

// JobFileUnlinkedData is the data of job.file_unlinked.
type JobFileUnlinkedData struct {
	FileID uuid.UUID `json:"file_id"`
}

// JobDeletedData is the (empty) data of job.deleted.
type JobDeletedData struct{}

// Change is one event a decide function wants written; the command layer
// gives it its stream version and appends it.
type Change struct {
	StreamType string
	StreamID   uuid.UUID
	Type       string
	Data       any
}
