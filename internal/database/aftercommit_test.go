package database_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/database"
)

// trailer records the error its statement got when it ran for real.
type trailer struct {
	ran bool
	err error
}

func (tr *trailer) stmt(ctx context.Context, sql string) database.Statement {
	return func(db database.DBTX) error {
		_, err := db.Exec(ctx, sql)
		if database.IsRecorded(err) {
			return err
		}
		tr.ran, tr.err = true, err
		return nil
	}
}

// A statement queued with AfterCommit goes in the COMMIT's round trip,
// after the COMMIT: its write stands as a transaction of its own.
func TestAfterCommitFollowsTheCommitInItsRoundTrip(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	var tr trailer
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			return err
		}
		return database.AfterCommit(tx, tr.stmt(ctx, "INSERT INTO t VALUES (2)"))
	}))
	require.True(t, tr.ran)
	require.NoError(t, tr.err)
	require.Equal(t, [][]string{
		{"begin", "insert into t values (1)"},
		{"commit", "insert into t values (2)"},
	}, rec.Take())
	require.Equal(t, []int{1, 2}, ids(t, pool))
	rec.Take()

	// With deferred writes still waiting, they go first.
	tr = trailer{}
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		return errors.Join(database.Defer(tx, insert(ctx, 3)), database.AfterCommit(tx, tr.stmt(ctx, "INSERT INTO t VALUES (4)")))
	}))
	require.True(t, tr.ran)
	require.Equal(t, [][]string{{"begin", "insert into t values ($1)", "commit", "insert into t values (4)"}}, rec.Take())
	require.Equal(t, []int{1, 2, 3, 4}, ids(t, pool))
}

// A statement after the COMMIT that fails does not fail the transaction,
// which has committed; the statement gets the error.
func TestAfterCommitFailureLeavesTheCommitStanding(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	var tr trailer
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		if err := database.Defer(tx, insert(ctx, 1)); err != nil {
			return err
		}
		return database.AfterCommit(tx, tr.stmt(ctx, "SELECT 1/0"))
	}))
	require.True(t, tr.ran)
	var pgErr *pgconn.PgError
	require.ErrorAs(t, tr.err, &pgErr)
	require.Equal(t, "22012", pgErr.Code, "division by zero")
	require.Equal(t, []int{1}, ids(t, pool))
	// The one connection is fine afterwards.
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error { return database.Defer(tx, insert(ctx, 2)) }))
	require.Equal(t, []int{1, 2}, ids(t, pool))
}

// A transaction that does not commit runs nothing after it: not when a
// deferred write fails the COMMIT's batch, not when fn fails.
func TestAfterCommitRunsOnlyAfterACommit(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)

	var tr trailer
	err = database.InTx(ctx, pool, func(tx pgx.Tx) error {
		return errors.Join(database.Defer(tx, insert(ctx, 1)), database.AfterCommit(tx, tr.stmt(ctx, "INSERT INTO t VALUES (9)")))
	})
	require.True(t, database.IsUniqueViolation(err, "t_pkey"), "%v", err)
	require.False(t, tr.ran)

	boom := errors.New("boom")
	err = database.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
			return err
		}
		require.NoError(t, database.AfterCommit(tx, tr.stmt(ctx, "INSERT INTO t VALUES (9)")))
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.False(t, tr.ran)
	require.Equal(t, []int{1}, ids(t, pool))
}
