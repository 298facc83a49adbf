package command

import (
	"errors"
	"fmt"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/platform/database"
)

// Errors a command answers with; the HTTP layer maps them to statuses. An
// unknown, deleted, or another user's resource is database.ErrNotFound
// (404), or a NotFoundError naming it.
var (
	// ErrVersionMismatch: If-Match named another version of the job (412).
	ErrVersionMismatch = errors.New("version does not match")
	// ErrJobFileLimit: the command would take the job past
	// domain.MaxJobFiles files (409).
	ErrJobFileLimit = fmt.Errorf("a job holds at most %d files", domain.MaxJobFiles)
	// ErrConflict wraps a conflict the caller found in its own part of a
	// command's transaction (a key stored concurrently, say): Run runs the
	// command again, as it does after a version conflict.
	ErrConflict = errors.New("conflict")
)

// NotFoundError is database.ErrNotFound naming what was not found: the
// first of a command's files that is missing, deleted or another user's.
type NotFoundError struct {
	What string // "file"
	ID   uuid.UUID
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %s not found", e.What, e.ID) }

// Is makes a NotFoundError match database.ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == database.ErrNotFound }

// InvalidError is bad input found by the domain rules (400).
type InvalidError = domain.RuleError

// UploadFile is the input of Service.UploadFile.
type UploadFile struct {
	Name        string
	SizeBytes   int64
	ContentType string // empty: application/octet-stream
}

// Outcome is what every command reports besides its resource: the position
// for the Epoch-Position header (the last event written, or, when none was,
// the highest position of what it read).
type Outcome struct {
	ID       uuid.UUID // the file or job the command wrote or created
	Position int64
	Events   int // how many events the command wrote
}

// JobRef names a job of an owner for the job commands. IfMatch, when not
// nil, is the version the job must have (If-Match).
type JobRef struct {
	OwnerID uuid.UUID
	JobID   uuid.UUID
	IfMatch *int32
}
