package database

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// InTx runs fn in one transaction: committed when fn returns nil, rolled
// back otherwise (and when fn panics). It is the only place transactions
// begin and end.
//
// The transaction's BEGIN is not sent on its own: it travels with fn's
// first statement, in one pgx batch (pgx.Batch.BeginTx), so every
// transaction costs one round trip fewer. On this path that is a command,
// a relay cycle and a subscriber's batch alike. A transaction whose fn
// sends nothing sends nothing at all.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx pgx.Tx) error) (err error) {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection left inside a transaction (a rollback that could not
	// be sent) is closed by the pool on release, not reused.
	defer c.Release()
	tx := &lazyTx{conn: c.Conn()}
	defer func() {
		if rbErr := tx.Rollback(ctx); rbErr != nil && !errors.Is(rbErr, pgx.ErrTxClosed) && err == nil {
			err = rbErr
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Defer queues stmt to go with the transaction's next statement or its
// COMMIT: one round trip fewer for each. stmt is a write whose result
// nobody reads, or a read whose results are wanted only once that has
// been sent (a command's answer, read back with the COMMIT): stmt runs
// again then, with its results. Its error, if any, comes back from that
// next statement or from Commit, and fails the transaction all the same;
// so defer only statements whose errors no caller tells apart. What stmt
// passes (slices included) must not change until then. Outside InTx's
// transactions stmt runs at once.
func Defer(tx pgx.Tx, stmt Statement) error {
	lt, ok := tx.(*lazyTx)
	if !ok {
		return stmt(tx)
	}
	return lt.queue(&lt.pending, stmt)
}

// AfterCommit queues stmt to run just after the transaction's COMMIT, in
// the COMMIT's round trip, as a transaction of its own: for work that must
// not be part of the transaction but should follow it at once (the
// relays' wake-up NOTIFY: see queries/outbox.sql, OutboxWake). It runs
// only if the COMMIT succeeded. Its error is not the transaction's, which
// has committed by then: stmt gets it on its second run and must deal
// with it there. Outside InTx's transactions it does nothing: nothing
// rides with a COMMIT the caller sends itself.
func AfterCommit(tx pgx.Tx, stmt Statement) error {
	lt, ok := tx.(*lazyTx)
	if !ok {
		return nil
	}
	return lt.queue(&lt.trailers, stmt)
}

// Flush sends what Defer queued on tx now (with BEGIN, if not sent yet),
// so that deferred reads have their results; nothing when nothing waits.
func Flush(ctx context.Context, tx pgx.Tx) error {
	lt, ok := tx.(*lazyTx)
	if !ok || len(lt.pending) == 0 {
		return nil
	}
	_, err := lt.begun(ctx)
	return err
}

// lazyTx is InTx's pgx.Tx. Until it has something to send, it sends
// nothing: its BEGIN and its deferred statements (Defer) wait to go in one
// batch with the next Exec, Query, QueryRow, SendBatch or COMMIT. Once
// begun with nothing deferred, calls go straight to the transaction pgx
// began. The calls that cannot share a batch (CopyFrom, Prepare, a nested
// Begin, large objects) send a plain BEGIN and the deferred statements
// first.
type lazyTx struct {
	conn     *pgx.Conn
	tx       pgx.Tx // the transaction once begun; nil before
	pending  []deferred
	trailers []deferred // to follow the COMMIT (AfterCommit)
	closed   bool       // committed or rolled back
}

type deferred struct {
	stmt Statement
	rec  *recorder
}

var _ pgx.Tx = (*lazyTx)(nil)

// queue records stmt (its SQL and arguments) onto list, to be sent later.
func (t *lazyTx) queue(list *[]deferred, stmt Statement) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	rec, err := record(stmt)
	if err != nil {
		return err
	}
	*list = append(*list, deferred{stmt: stmt, rec: rec})
	return nil
}

// direct reports whether a call can go straight to the begun transaction.
func (t *lazyTx) direct() bool { return t.tx != nil && len(t.pending) == 0 }

// send sends what waits (BEGIN, the deferred statements) with tail in one
// batch and reads the results of what waited; the caller reads tail's and
// closes the results.
func (t *lazyTx) send(ctx context.Context, tail ...*pgx.QueuedQuery) (pgx.BatchResults, error) {
	b := &pgx.Batch{}
	begin := t.tx == nil
	if begin {
		b.BeginTx(pgx.TxOptions{})
	}
	pending := t.pending
	t.pending = nil
	for _, d := range pending {
		b.Queue(d.rec.sql, d.rec.args...)
	}
	b.QueuedQueries = append(b.QueuedQueries, tail...)
	br := t.conn.SendBatch(ctx, b)
	if begin {
		t.tx = br.Tx()
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	for _, d := range pending {
		if err := d.stmt(&replayer{br: br, want: d.rec}); err != nil {
			_ = br.Close()
			return nil, err
		}
	}
	return br, nil
}

func queued(sql string, args []any) *pgx.QueuedQuery {
	return &pgx.QueuedQuery{SQL: sql, Arguments: args}
}

// begun returns the transaction with everything that waited sent, using
// a plain BEGIN when nothing else is to go.
func (t *lazyTx) begun(ctx context.Context) (pgx.Tx, error) {
	if t.closed {
		return nil, pgx.ErrTxClosed
	}
	switch {
	case len(t.pending) > 0:
		br, err := t.send(ctx)
		if err != nil {
			return nil, err
		}
		if err := br.Close(); err != nil {
			return nil, err
		}
	case t.tx == nil:
		tx, err := t.conn.Begin(ctx)
		if err != nil {
			return nil, err
		}
		t.tx = tx
	}
	return t.tx, nil
}

func (t *lazyTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if t.closed {
		return pgconn.CommandTag{}, pgx.ErrTxClosed
	}
	if t.direct() {
		return t.tx.Exec(ctx, sql, args...)
	}
	br, err := t.send(ctx, queued(sql, args))
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	return tag, err
}

func (t *lazyTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if t.closed {
		return nil, pgx.ErrTxClosed
	}
	if t.direct() {
		return t.tx.Query(ctx, sql, args...)
	}
	br, err := t.send(ctx, queued(sql, args))
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

func (t *lazyTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if !t.closed && t.direct() {
		return t.tx.QueryRow(ctx, sql, args...)
	}
	rows, err := t.Query(ctx, sql, args...)
	return &firstRow{rows: rows, err: err}
}

// SendBatch sends b inside the transaction; what waited goes ahead of b's
// queries, and the results start at b's first.
func (t *lazyTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if t.closed {
		return pgx.FailedBatchResults(b, pgx.ErrTxClosed)
	}
	if t.direct() {
		return t.tx.SendBatch(ctx, b)
	}
	br, err := t.send(ctx, b.QueuedQueries...)
	if err != nil {
		return pgx.FailedBatchResults(b, err)
	}
	return br
}

// Commit sends COMMIT, with what still waits in the same batch.
func (t *lazyTx) Commit(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	switch {
	case len(t.pending) > 0 || (t.tx != nil && len(t.trailers) > 0):
		err := t.commitInBatch(ctx)
		if err != nil && t.conn.PgConn().TxStatus() != 'I' {
			// A deferred statement failed, so COMMIT was never run.
			_, _ = t.conn.Exec(ctx, "rollback")
		}
		return err
	case t.tx == nil:
		return nil // nothing was sent: nothing to commit
	default:
		return t.tx.Commit(ctx)
	}
}

// commitInBatch sends what waits, COMMIT and the trailers (AfterCommit)
// in one batch. The trailers run only after a COMMIT that went through;
// their results and errors are theirs, not the commit's.
func (t *lazyTx) commitInBatch(ctx context.Context) error {
	tail := []*pgx.QueuedQuery{queued("commit", nil)}
	for _, d := range t.trailers {
		tail = append(tail, queued(d.rec.sql, d.rec.args))
	}
	br, err := t.send(ctx, tail...)
	if err != nil {
		return err
	}
	tag, err := br.Exec()
	if err == nil && tag.String() == "ROLLBACK" {
		err = pgx.ErrTxCommitRollback
	}
	if err == nil {
		for _, d := range t.trailers {
			_ = d.stmt(&replayer{br: br, want: d.rec})
		}
	}
	// Close's own error is the COMMIT's, already in err, or a trailer's.
	_ = br.Close()
	return err
}

// Rollback drops what waits and rolls back what was sent.
func (t *lazyTx) Rollback(ctx context.Context) error {
	if t.closed {
		return pgx.ErrTxClosed
	}
	t.closed = true
	t.pending, t.trailers = nil, nil
	if t.tx == nil {
		return nil
	}
	return t.tx.Rollback(ctx)
}

func (t *lazyTx) Begin(ctx context.Context) (pgx.Tx, error) {
	tx, err := t.begun(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Begin(ctx)
}

func (t *lazyTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	tx, err := t.begun(ctx)
	if err != nil {
		return 0, err
	}
	return tx.CopyFrom(ctx, table, columns, src)
}

func (t *lazyTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	tx, err := t.begun(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Prepare(ctx, name, sql)
}

// LargeObjects needs a transaction that has begun, and takes no context:
// it begins one with a background context.
func (t *lazyTx) LargeObjects() pgx.LargeObjects {
	tx, err := t.begun(context.Background())
	if err != nil {
		return pgx.LargeObjects{}
	}
	return tx.LargeObjects()
}

func (t *lazyTx) Conn() *pgx.Conn { return t.conn }

// batchRows are the rows of a statement that went in one batch with what
// waited (BEGIN, deferred statements): closing them closes the batch as
// well, and an error there is theirs.
type batchRows struct {
	pgx.Rows
	br     pgx.BatchResults
	err    error
	closed bool
}

func (r *batchRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *batchRows) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = r.br.Close()
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// firstRow is QueryRow's row for a statement that went in one batch with
// what waited; it scans as pgx's own row does.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r *firstRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
