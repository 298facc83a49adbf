package readmodel

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/database"
	"github.com/catacloud/epoch/internal/dbsqlc"
)

// ErrNotRead: a Later's value was asked for before its read was sent.
var ErrNotRead = errors.New("readmodel: read not sent yet")

// Later is a read a command queues for its answer: it travels with the
// transaction's next statement or, usually, its COMMIT (database.Defer),
// one round trip fewer than reading before the COMMIT. It still reads
// inside the transaction, so it sees the command's own writes. Its value
// is there once that has been sent: after the transaction committed, or
// after database.Flush.
type Later[T any] struct {
	value T
	err   error
	read  bool
}

// Value is the read's result; ErrNotRead before it was sent.
func (l *Later[T]) Value() (T, error) {
	if !l.read {
		var zero T
		return zero, ErrNotRead
	}
	return l.value, l.err
}

// ValueNow sends what waits on tx (database.Flush) and returns the value:
// for a caller that needs it before the COMMIT, at the price of that
// round trip.
func (l *Later[T]) ValueNow(ctx context.Context, tx pgx.Tx) (T, error) {
	if err := database.Flush(ctx, tx); err != nil {
		var zero T
		return zero, err
	}
	return l.Value()
}

// GetFileLater queues the read of one file of owner (GetFile).
func GetFileLater(ctx context.Context, tx pgx.Tx, owner, id uuid.UUID) (*Later[File], error) {
	l := &Later[File]{}
	err := database.Defer(tx, func(db database.DBTX) error {
		row, err := dbsqlc.New().FileGet(ctx, db, &dbsqlc.FileGetParams{ID: id, OwnerID: owner})
		return l.settle(err, func() File { return fileFrom(row) })
	})
	return l, err
}

// GetJobLater queues the read of owner's job preview (GetJob): two
// statements, both with the COMMIT.
func GetJobLater(ctx context.Context, tx pgx.Tx, owner, id uuid.UUID) (*Later[Job], error) {
	q := dbsqlc.New()
	l := &Later[Job]{}
	var row *dbsqlc.JobGetRow
	err := database.Defer(tx, func(db database.DBTX) (err error) {
		row, err = q.JobGet(ctx, db, &dbsqlc.JobGetParams{ID: id, OwnerID: owner})
		return l.settle(err, nil) // the value waits for the files
	})
	if err != nil {
		return nil, err
	}
	err = database.Defer(tx, func(db database.DBTX) error {
		files, err := q.JobFileList(ctx, db, &dbsqlc.JobFileListParams{JobID: id, OwnerID: owner})
		if err == nil && l.read { // the job was not found
			return nil
		}
		return l.settle(err, func() Job { return previewFrom(row, files) })
	})
	return l, err
}

// settle records a deferred read's outcome. The statement runs twice
// (database.Defer): first only recorded, when err is the recorder's and
// goes back to it; then with its results. Not found is kept for Value, not
// returned, so it does not fail the COMMIT the read went with. A nil value
// leaves the Later unread: a later statement of the same read sets it.
func (l *Later[T]) settle(err error, value func() T) error {
	switch err = database.NotFound(err); {
	case errors.Is(err, database.ErrNotFound):
		l.err, l.read = err, true
		return nil
	case database.IsRecorded(err):
		return err
	case err != nil:
		return fmt.Errorf("read back: %w", err)
	}
	if value != nil {
		l.value, l.read = value(), true
	}
	return nil
}
