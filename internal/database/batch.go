package database

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Statement is one call of a generated query method, written against the
// DBTX it is given, for example
//
//	func(db database.DBTX) (err error) { rows, err = q.OutboxClaim(ctx, db, arg); return err }
//
// It must make exactly one call on db, the same one each time it runs.
type Statement func(db DBTX) error

// Sender is what Batch sends through: a pool, a connection or a
// transaction.
type Sender interface {
	SendBatch(context.Context, *pgx.Batch) pgx.BatchResults
}

// Batch sends statements in one round trip (a pgx batch) and lets each
// read its own results, so sqlc's generated code both builds the SQL and
// arguments and scans the rows: nothing of it is copied by hand. Each
// statement runs twice: first against a DBTX that only records the call,
// then, once the batch is back, against one that hands it its results.
//
// Within a transaction, each statement sees what the earlier ones did: a
// later one cannot take an earlier one's results as arguments, but it
// can read what that one wrote or locked. On a lazily begun transaction
// (InTx), BEGIN rides along as well.
func Batch(ctx context.Context, db Sender, stmts ...Statement) error {
	b := &pgx.Batch{}
	recorded := make([]*recorder, len(stmts))
	for i, stmt := range stmts {
		rec, err := record(stmt)
		if err != nil {
			return fmt.Errorf("batch statement %d: %w", i, err)
		}
		recorded[i] = rec
		b.Queue(rec.sql, rec.args...)
	}
	br := db.SendBatch(ctx, b)
	var err error
	for i, stmt := range stmts {
		if err = stmt(&replayer{br: br, want: recorded[i]}); err != nil {
			break
		}
	}
	// Close reads what is left; its error is the first statement's that
	// failed, already returned, or the batch's own.
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	return err
}

var errRecorded = errors.New("database: statement recorded, not sent")

// IsRecorded reports whether err is what a Statement got on its first,
// recording run (Batch, Defer): not a result yet, to be returned as it is.
func IsRecorded(err error) bool { return errors.Is(err, errRecorded) }

// record runs stmt against a recorder: the SQL and arguments of its call.
func record(stmt Statement) (*recorder, error) {
	rec := &recorder{}
	if err := stmt(rec); !errors.Is(err, errRecorded) || rec.sql == "" {
		if err == nil {
			err = errors.New("it returned nil")
		}
		return nil, fmt.Errorf("statement made no call to record: %w", err)
	}
	return rec, nil
}

// recorder is the DBTX of Batch's first pass.
type recorder struct {
	sql  string
	args []any
	kind string
}

func (r *recorder) record(kind, sql string, args []any) {
	if r.sql != "" {
		panic("database.Batch: a statement made a second call")
	}
	r.kind, r.sql, r.args = kind, sql, args
}

func (r *recorder) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.record("exec", sql, args)
	return pgconn.CommandTag{}, errRecorded
}

func (r *recorder) Query(_ context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.record("query", sql, args)
	return nil, errRecorded
}

func (r *recorder) QueryRow(_ context.Context, sql string, args ...any) pgx.Row {
	r.record("queryrow", sql, args)
	return errRow{}
}

type errRow struct{}

func (errRow) Scan(...any) error { return errRecorded }

// replayer is the DBTX of Batch's second pass: each statement gets the
// next result of the batch, after a check that it makes the call it made
// when recorded.
type replayer struct {
	br   pgx.BatchResults
	want *recorder
}

func (r *replayer) check(kind, sql string) error {
	if kind != r.want.kind || sql != r.want.sql {
		return fmt.Errorf("database.Batch: a statement made a different call when replayed (%s, was %s)", kind, r.want.kind)
	}
	return nil
}

func (r *replayer) Exec(_ context.Context, sql string, _ ...any) (pgconn.CommandTag, error) {
	if err := r.check("exec", sql); err != nil {
		return pgconn.CommandTag{}, err
	}
	return r.br.Exec()
}

func (r *replayer) Query(_ context.Context, sql string, _ ...any) (pgx.Rows, error) {
	if err := r.check("query", sql); err != nil {
		return nil, err
	}
	return r.br.Query()
}

func (r *replayer) QueryRow(_ context.Context, sql string, _ ...any) pgx.Row {
	if err := r.check("queryrow", sql); err != nil {
		return &firstRow{err: err}
	}
	return r.br.QueryRow()
}
