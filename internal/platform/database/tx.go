package database

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"

	"github.com/catacloud/epoch/internal/platform/tracing"
)

// Tx is one transaction, begun and ended by InTx only. It sends nothing
// until something needs an answer: a batch sent through it (what sqlc's
// :batchexec, :batchone and :batchmany methods do) is queued, and goes to
// Postgres with the next thing that needs an answer (the first read of any
// queued batch's results, an Exec, Query or QueryRow, or the COMMIT), all
// in one pgx batch, BEGIN first when not sent yet (pgx.Batch.BeginTx). So
// every transaction saves the round trip of its BEGIN, a write whose result
// nobody reads (a :batchexec with no read) costs no round trip of its own,
// and several statements go in one round trip when their methods are called
// one after another before any of their results is read.
//
// Results are read in queue order. A queued batch whose results nobody
// reads is read by the Tx when a later result is read, or at COMMIT, and
// its error then fails the transaction, named after its statement; its
// results cannot be read after that.
type Tx struct {
	queue
	atCommit func(db DBTX) error
	trailers []trailer // to follow the COMMIT (AfterCommit)
	sp       int       // savepoints made, for their names
}

// trailer is a batch that follows the COMMIT, and who hears of its error.
type trailer struct {
	r      *Results
	failed func(error)
}

// InTx runs fn in one transaction: committed when fn returns nil, rolled
// back otherwise (and when fn panics). It is the only place transactions
// begin and end. A transaction whose fn sends nothing sends nothing.
func InTx(ctx context.Context, pool *pgxpool.Pool, fn func(tx *Tx) error) error {
	return InTxWith(ctx, pool, pgx.TxOptions{}, fn)
}

// InTxWith is InTx with the transaction's options (an isolation level).
// Inside a recorded span (a request's, a delivery's) the transaction has
// a span of its own, and its statements' spans are its children.
func InTxWith(ctx context.Context, pool *pgxpool.Pool, opts pgx.TxOptions, fn func(tx *Tx) error) (err error) {
	ctx, span := tracing.StartTransaction(ctx)
	defer func() { tracing.End(span, err) }()
	c, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection left inside a transaction (a rollback that could not
	// be sent) is closed by the pool on release, not reused.
	defer c.Release()
	tx := &Tx{queue: queue{conn: c.Conn(), begin: &opts, span: span}}
	defer func() {
		if tx.err != pgx.ErrTxClosed { // fn failed or panicked
			tx.rollback(ctx)
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.commit(ctx)
}

// AfterCommit queues what send sends (batch statements only) to follow the
// transaction's COMMIT in the COMMIT's round trip, each statement a
// transaction of its own: for work that must not be part of the
// transaction but should follow it at once (the relays' wake-up NOTIFY:
// see queries/outbox.sql, OutboxWake). send runs at once; its statements
// run only if the COMMIT succeeded. Their error is not the transaction's,
// which has committed by then: failed, when not nil, gets it.
func (t *Tx) AfterCommit(send func(db DBTX), failed func(error)) {
	send(afterCommit{t: t, failed: failed})
}

// ReadAtCommit registers read to run once, at commit: the statements it
// queues go ahead of the COMMIT, in the COMMIT's round trip, so what it
// reads is the transaction's last view of its own writes (a command's
// answer) at no round trip of its own. read must queue all its statements
// before it reads any result. InTx returns its error, even when the
// COMMIT went through (then the after-commit statements ran too). One per
// transaction.
func (t *Tx) ReadAtCommit(read func(db DBTX) error) {
	if t.atCommit != nil {
		panic("database: a second ReadAtCommit in one transaction")
	}
	t.atCommit = read
}

// Savepoint runs fn in a savepoint of t: what fn did is rolled back when
// it fails, the rest of the transaction stays. fn's queued writes are
// sent and checked before the savepoint is released, so their errors are
// fn's.
func (t *Tx) Savepoint(ctx context.Context, fn func(tx *Tx) error) error {
	t.sp++
	name := "sp" + strconv.Itoa(t.sp)
	if _, err := t.Exec(ctx, "SAVEPOINT "+name); err != nil {
		return err
	}
	trailers, atCommit := len(t.trailers), t.atCommit
	err := fn(t)
	if err == nil {
		if _, err = t.Exec(ctx, "RELEASE SAVEPOINT "+name); err == nil {
			return nil
		}
	}
	t.waiting, t.trailers, t.atCommit = nil, t.trailers[:trailers], atCommit
	_ = t.settle()
	t.err = nil
	if _, rbErr := t.Exec(ctx, "ROLLBACK TO SAVEPOINT "+name); rbErr != nil {
		return rbErr
	}
	return err
}

// commit runs the read registered with ReadAtCommit and sends COMMIT with
// what still waits, then the trailers, in one round trip.
func (t *Tx) commit(ctx context.Context) error {
	if t.err != nil {
		return t.err
	}
	committed := &Results{q: &t.queue, ctx: ctx, queries: []*pgx.QueuedQuery{{SQL: "commit"}}, name: "COMMIT"}
	t.tail = []*Results{committed}
	for _, tr := range t.trailers {
		t.tail = append(t.tail, tr.r)
	}
	var readErr error
	if t.atCommit != nil {
		readErr = t.atCommit(t)
	}
	if t.tail != nil { // the read sent nothing: COMMIT goes now
		if readErr != nil {
			return readErr
		}
		if t.begin != nil && len(t.waiting) == 0 {
			t.tail, t.err = nil, pgx.ErrTxClosed
			return nil // nothing was sent: nothing to commit
		}
		if err := t.send(ctx); err != nil {
			return err
		}
	}
	tag, err := committed.Exec()
	if err == nil && tag.String() == "ROLLBACK" {
		err = pgx.ErrTxCommitRollback
	}
	if err == nil {
		for _, tr := range t.trailers {
			if trErr := tr.r.drain(); trErr != nil && tr.failed != nil {
				tr.failed(trErr)
			}
		}
	}
	// Close's own error is the COMMIT's, already in err, or a trailer's.
	t.err = nil
	_ = t.settle()
	if err != nil {
		return err
	}
	t.err = pgx.ErrTxClosed
	return readErr
}

// rollback drops what waits and rolls back what was sent.
func (t *Tx) rollback(ctx context.Context) {
	begun := t.begin == nil
	t.waiting, t.tail = nil, nil
	_ = t.settle()
	t.err = pgx.ErrTxClosed
	if begun && t.conn.PgConn().TxStatus() != 'I' {
		_, _ = t.conn.Exec(t.traced(ctx), "rollback")
	}
}

// afterCommit is the DBTX AfterCommit's send gets: it queues batches to
// follow the COMMIT.
type afterCommit struct {
	t      *Tx
	failed func(error)
}

var errAfterCommit = errors.New("database: only batch statements can follow the COMMIT")

func (a afterCommit) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	r := a.t.results(ctx, b.QueuedQueries)
	a.t.trailers = append(a.t.trailers, trailer{r: r, failed: a.failed})
	return r
}

func (afterCommit) Exec(context.Context, string, ...any) (pgconn.CommandTag, error) {
	return pgconn.CommandTag{}, errAfterCommit
}

func (afterCommit) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errAfterCommit
}

func (afterCommit) QueryRow(context.Context, string, ...any) pgx.Row { return errRow{errAfterCommit} }

func (afterCommit) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, errAfterCommit
}

// Conn is a connection of Pipeline's: the same queue as a Tx, outside a
// transaction, for reads that send several statements in one round trip.
type Conn struct {
	queue
}

// Pipeline runs fn on one connection of pool, whose batches are queued
// and sent as a Tx's are (without BEGIN and COMMIT): a read of two
// statements, both queued before either is read, costs one round trip.
// What still waits when fn returns is sent and checked.
func Pipeline(ctx context.Context, pool *pgxpool.Pool, fn func(db *Conn) error) error {
	c, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	db := &Conn{queue: queue{conn: c.Conn()}}
	if err := fn(db); err != nil {
		db.waiting = nil
		_ = db.settle()
		return err
	}
	return db.Flush(ctx)
}

// queue is what a Tx and a Conn send through: batches wait in it until an
// answer is needed, then go in one pgx batch.
type queue struct {
	conn    *pgx.Conn
	begin   *pgx.TxOptions // BEGIN, until sent
	waiting []*Results     // queued, not sent
	tail    []*Results     // to go last with the next send (COMMIT, trailers)
	last    bool           // the tail went: nothing may follow
	sent    []*Results     // sent, with results still to be read, in order
	br      pgx.BatchResults
	err     error      // the first error of a batch nobody read, or ErrTxClosed
	span    trace.Span // the transaction's, when it is traced
}

// traced is ctx with the transaction's span as the current one: the
// callers pass their own context (a request's), and the statements' spans
// belong under the transaction's.
func (q *queue) traced(ctx context.Context) context.Context {
	if q.span == nil {
		return ctx
	}
	return trace.ContextWithSpan(ctx, q.span)
}

var _ DBTX = (*queue)(nil)

// SendBatch queues b; its results are read from what it returns.
func (q *queue) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	r := q.results(ctx, b.QueuedQueries)
	if len(r.queries) > 0 {
		q.waiting = append(q.waiting, r)
	}
	return r
}

func (q *queue) results(ctx context.Context, queries []*pgx.QueuedQuery) *Results {
	r := &Results{q: q, ctx: ctx, queries: queries, name: "statement"}
	if len(queries) > 0 {
		r.name = tracing.StatementName(queries[0].SQL)
	}
	return r
}

// Exec queues sql, sends it with what waits, and returns its result.
func (q *queue) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return q.SendBatch(ctx, one(sql, args)).Exec()
}

// Query is Exec for rows.
func (q *queue) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return q.SendBatch(ctx, one(sql, args)).Query()
}

// QueryRow is Exec for one row.
func (q *queue) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return q.SendBatch(ctx, one(sql, args)).QueryRow()
}

// CopyFrom sends what waits (with BEGIN), then copies: COPY cannot share
// a batch.
func (q *queue) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	if err := q.Flush(ctx); err != nil {
		return 0, err
	}
	return q.conn.CopyFrom(q.traced(ctx), table, columns, src)
}

func one(sql string, args []any) *pgx.Batch {
	return &pgx.Batch{QueuedQueries: []*pgx.QueuedQuery{{SQL: sql, Arguments: args}}}
}

// Flush sends what waits (with BEGIN, if not sent yet) and reads every
// result nobody read yet, returning the first error; nothing when nothing
// waits.
func (q *queue) Flush(ctx context.Context) error {
	if err := q.send(ctx); err != nil {
		return err
	}
	return q.settle()
}

// send sends BEGIN (if not sent yet), what waits and the tail in one
// batch; nothing when none of them is there.
func (q *queue) send(ctx context.Context) error {
	if err := q.settle(); err != nil {
		return err
	}
	if q.begin == nil && len(q.waiting) == 0 && len(q.tail) == 0 {
		return nil
	}
	if q.last {
		return errors.New("database: a statement sent after the COMMIT")
	}
	q.last = len(q.tail) > 0
	b := &pgx.Batch{}
	if q.begin != nil {
		b.BeginTx(*q.begin)
	}
	q.sent = append(q.waiting, q.tail...)
	q.waiting, q.tail = nil, nil
	for _, r := range q.sent {
		b.QueuedQueries = append(b.QueuedQueries, r.queries...)
	}
	q.br = q.conn.SendBatch(q.traced(ctx), b)
	if q.begin != nil {
		q.begin = nil
		if _, err := q.br.Exec(); err != nil {
			return q.fail(err)
		}
	}
	return nil
}

// settle reads, for nobody, what is left of the last batch sent, and
// closes its results.
func (q *queue) settle() error {
	err := q.err
	for len(q.sent) > 0 && err == nil {
		if err = q.sent[0].drain(); err != nil {
			q.fail(err)
		}
	}
	q.sent = nil
	if q.br != nil {
		if closeErr := q.br.Close(); err == nil {
			err = closeErr
		}
		q.br = nil
	}
	return err
}

func (q *queue) fail(err error) error {
	if q.err == nil {
		q.err = err
	}
	return q.err
}

// Results are the results of one batch queued on a Tx or Conn; the first
// read sends the batch, with what waits before it.
type Results struct {
	q       *queue
	ctx     context.Context
	queries []*pgx.QueuedQuery
	name    string
	read    int  // how many of its results were read
	skipped bool // read by the queue because a later result was read first
}

var _ pgx.BatchResults = (*Results)(nil)

// next makes the next of r's results the next to read: sent, and every
// result before it read.
func (r *Results) next() error {
	q := r.q
	switch {
	case r.skipped:
		return fmt.Errorf("database: the results of %s were read after a later statement's", r.name)
	case r.read == len(r.queries):
		return fmt.Errorf("database: %s: %w", r.name, errNoMoreResults)
	}
	if !slices.Contains(q.sent, r) {
		if err := q.send(r.ctx); err != nil {
			return err
		}
	}
	for q.sent[0] != r {
		if err := q.sent[0].drain(); err != nil {
			return q.fail(err)
		}
	}
	return nil
}

var errNoMoreResults = errors.New("no more results")

// done notes one result of r read.
func (r *Results) done() {
	if r.read++; r.read == len(r.queries) {
		r.q.sent = r.q.sent[1:]
	}
}

// drain reads what is left of r's results (r first in the queue's sent
// batches) and returns the first error, named after r's statement.
func (r *Results) drain() error {
	var first error
	r.skipped = r.read < len(r.queries)
	for r.read < len(r.queries) {
		if _, err := r.q.br.Exec(); err != nil && first == nil {
			first = fmt.Errorf("%s: %w", r.name, err)
		}
		r.done()
	}
	return first
}

// Exec implements pgx.BatchResults.
func (r *Results) Exec() (pgconn.CommandTag, error) {
	if err := r.next(); err != nil {
		return pgconn.CommandTag{}, err
	}
	defer r.done()
	return r.q.br.Exec()
}

// Query implements pgx.BatchResults.
func (r *Results) Query() (pgx.Rows, error) {
	if err := r.next(); err != nil {
		return nil, err
	}
	defer r.done()
	return r.q.br.Query()
}

// QueryRow implements pgx.BatchResults.
func (r *Results) QueryRow() pgx.Row {
	if err := r.next(); err != nil {
		return errRow{err}
	}
	defer r.done()
	return r.q.br.QueryRow()
}

// Close reads what is left of r's results, sending them if they wait, and
// returns the first error.
func (r *Results) Close() error {
	if r.read == len(r.queries) && !r.skipped {
		return nil
	}
	if err := r.next(); err != nil {
		return err
	}
	return r.drain()
}

// Tx implements pgx.BatchResults: r began no pgx transaction.
func (r *Results) Tx() pgx.Tx { return nil }

type errRow struct{ err error }

func (e errRow) Scan(...any) error { return e.err }

// One reads the result of a :batchone statement queued with one set of
// arguments: its row, or its error, no row being ErrNotFound (NotFound).
func One[T any](b interface{ QueryRow(func(int, T, error)) }) (row T, err error) {
	b.QueryRow(func(_ int, r T, e error) { row, err = r, NotFound(e) })
	return row, err
}

// Many reads the rows of a :batchmany statement queued with one set of
// arguments.
func Many[T any](b interface{ Query(func(int, []T, error)) }) (rows []T, err error) {
	b.Query(func(_ int, r []T, e error) { rows, err = r, e })
	return rows, err
}

// Exec reads the result of a :batchexec statement: its first error.
func Exec(b interface{ Exec(func(int, error)) }) (err error) {
	b.Exec(func(_ int, e error) { err = cmp.Or(err, e) })
	return err
}
