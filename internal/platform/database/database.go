// Package database owns the Postgres plumbing shared by every binary: the
// connection pool, the one helper that opens, commits and rolls back
// transactions, and the mapping of driver errors to what callers act on.
package database

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/platform/tracing"
)

// DefaultURL is the Postgres of EPOCH_DATABASE_URL when it is not set: the
// local server, as its superuser, without TLS.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// DBTX is what sqlc's generated methods take: a pool, a connection or a
// transaction.
type DBTX = dbsqlc.DBTX

// Connect opens a pool. It does not wait for the server: a pool that cannot
// reach Postgres yet still works once Postgres is back. tracer, when not
// nil, sees every statement (see StatementCounter); when the process
// exports traces, so does tracing's (a span per round trip sent inside a
// recorded span).
func Connect(ctx context.Context, url string, maxConns int32, tracer pgx.QueryTracer) (*pgxpool.Pool, error) {
	return ConnectWith(ctx, url, maxConns, tracer, nil)
}

// ConnectWith is Connect whose connections start with the session settings
// given (name to value, as SET would take them).
func ConnectWith(ctx context.Context, url string, maxConns int32, tracer pgx.QueryTracer, settings map[string]string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	for k, v := range settings {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	cfg.ConnConfig.Tracer = tracing.PGX(tracer, cfg.ConnConfig.Database, cfg.ConnConfig.Host, cfg.ConnConfig.Port)
	cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
		RegisterTypes(conn)
		return nil
	}
	return pgxpool.NewWithConfig(ctx, cfg)
}

// RegisterTypes teaches a connection google/uuid's UUID as a native uuid:
// without it pgx encodes each one through database/sql's Valuer (a string,
// and an error value made and dropped per element on the way), which made
// a 1,000-id array parameter cost more CPU than the statement itself; and
// it decoded each one through database/sql's Scanner (see uuidCodec).
func RegisterTypes(conn *pgx.Conn) {
	registerUUID(conn.TypeMap())
}

// StatementCounter is a pgx tracer that counts the statements a pool
// sends: the figure behind "a constant number of statements per command".
type StatementCounter struct {
	Counter interface{ Inc() }
}

// TraceQueryStart implements pgx.QueryTracer.
func (c StatementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.Counter.Inc()
	return ctx
}

// TraceQueryEnd implements pgx.QueryTracer.
func (StatementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart implements pgx.BatchTracer: a batch's statements are
// counted one by one (TraceBatchQuery), BEGIN included when it rides with
// a transaction's first statement.
func (StatementCounter) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer.
func (c StatementCounter) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {
	c.Counter.Inc()
}

// TraceBatchEnd implements pgx.BatchTracer.
func (StatementCounter) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// ErrNotFound is the one not-found: the row a read asked for is not there.
// For an owner's resource that is unknown, deleted, or another user's
// alike; the HTTP API answers it 404.
var ErrNotFound = errors.New("not found")

// NotFound maps a read's pgx.ErrNoRows to ErrNotFound, so that no caller
// above this package tests for the driver's error; any other error, and
// nil, come back as they are.
func NotFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

const (
	codeUniqueViolation      = "23505"
	codeSerializationFailure = "40001"
	codeDeadlockDetected     = "40P01"
)

// IsUniqueViolation reports a unique index violation, on the named
// constraint when constraint is not empty.
func IsUniqueViolation(err error, constraint string) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != codeUniqueViolation {
		return false
	}
	return constraint == "" || pgErr.ConstraintName == constraint
}

// IsTransient reports errors after which the same transaction, run again,
// may well succeed: serialization failures and deadlocks.
func IsTransient(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == codeSerializationFailure || pgErr.Code == codeDeadlockDetected
}

// IsUnavailable reports errors that mean Postgres could not be reached or
// the connection broke: the request was fine, the dependency is down.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	// The server answered, and the answer will not change by waiting: a
	// database that does not exist, or credentials it refuses.
	var refused *pgconn.PgError
	if errors.As(err, &refused) && (refused.Code == "3D000" || refused.Code == "28000" || refused.Code == "28P01") {
		return false
	}
	// The connection broke mid-statement: the server went away.
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08: connection exception; 57P01..57P03: admin shutdown,
		// crash shutdown, cannot connect now.
		return pgErr.Code[:2] == "08" || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03"
	}
	return pgconn.SafeToRetry(err)
}
