package database_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/database"
)

func insert(ctx context.Context, id int) database.Statement {
	return func(db database.DBTX) error {
		_, err := db.Exec(ctx, "INSERT INTO t VALUES ($1)", id)
		return err
	}
}

// Deferred writes wait for the next statement, which reads them.
func TestDeferredStatementsGoWithTheNextOne(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	var n int
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		require.NoError(t, database.Defer(tx, insert(ctx, 1)))
		require.NoError(t, database.Defer(tx, insert(ctx, 2)))
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			return err
		}
		return database.Defer(tx, insert(ctx, 3))
	}))
	require.Equal(t, 2, n, "the read did not see the deferred writes")
	require.Equal(t, [][]string{
		{"begin", "insert into t values ($1)", "insert into t values ($1)", "select count(*) from t"},
		{"insert into t values ($1)", "commit"},
	}, rec.Take())
	require.Equal(t, []int{1, 2, 3}, ids(t, pool))
}

// A transaction of deferred writes only is one round trip.
func TestDeferredWritesAndCommitInOneRoundTrip(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		return errors.Join(database.Defer(tx, insert(ctx, 1)), database.Defer(tx, insert(ctx, 2)))
	}))
	require.Equal(t, [][]string{{"begin", "insert into t values ($1)", "insert into t values ($1)", "commit"}}, rec.Take())
	require.Equal(t, []int{1, 2}, ids(t, pool))
}

// A deferred write that fails fails the commit it went with (or the
// statement it went with), the transaction rolls back whole, and the one
// connection is usable afterwards.
func TestFailedDeferredWriteFailsTheTransaction(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	_, err := pool.Exec(ctx, "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	cases := map[string]func(tx pgx.Tx) error{
		"at commit": func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES (5)")
			return errors.Join(err, database.Defer(tx, insert(ctx, 1)))
		},
		"at the next statement": func(tx pgx.Tx) error {
			if err := database.Defer(tx, insert(ctx, 5)); err != nil {
				return err
			}
			if err := database.Defer(tx, insert(ctx, 1)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES (6)")
			return err
		},
	}
	for name, fn := range cases {
		err := database.InTx(ctx, pool, fn)
		require.True(t, database.IsUniqueViolation(err, "t_pkey"), "%s: %v", name, err)
		require.Equal(t, []int{1}, ids(t, pool), name)
		require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error { return database.Defer(tx, insert(ctx, 7)) }), name)
		_, err = pool.Exec(ctx, "DELETE FROM t WHERE id = 7")
		require.NoError(t, err)
	}
}

// A transaction that fails before its deferred writes went anywhere sends
// nothing at all.
func TestRolledBackDeferredWritesAreNeverSent(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	boom := errors.New("boom")
	err := database.InTx(ctx, pool, func(tx pgx.Tx) error {
		require.NoError(t, database.Defer(tx, insert(ctx, 1)))
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Empty(t, rec.Take())
	require.Empty(t, ids(t, pool))
}

// CopyFrom cannot carry them: the deferred writes go first, then the copy.
func TestCopyFromSendsDeferredWritesFirst(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		if err := database.Defer(tx, insert(ctx, 1)); err != nil {
			return err
		}
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id"}, pgx.CopyFromRows([][]any{{2}}))
		return err
	}))
	require.Equal(t, []int{1, 2}, ids(t, pool))
}

// On another pgx.Tx, Defer runs the statement at once.
func TestDeferOutsideInTxRunsAtOnce(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := database.Defer(tx, insert(ctx, 1)); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
			return errors.Join(err, errors.New("not written at once"))
		}
		return nil
	}))
	require.Equal(t, []int{1}, ids(t, pool))
}

// A deferred read goes with the COMMIT and has its results once Commit
// returned: it sees the transaction's own writes.
func TestDeferredReadGoesWithTheCommit(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	n := -1
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			return err
		}
		require.NoError(t, database.Defer(tx, insert(ctx, 2)))
		return database.Defer(tx, func(db database.DBTX) error {
			return db.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
		})
	}))
	require.Equal(t, 2, n, "the deferred read did not see the transaction's writes")
	require.Equal(t, [][]string{
		{"begin", "insert into t values (1)"},
		{"insert into t values ($1)", "select count(*) from t", "commit"},
	}, rec.Take())
}

// Flush sends what waits now, so a deferred read has its results before
// the transaction goes on; with nothing waiting it sends nothing.
func TestFlushSendsWhatWaits(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	require.NoError(t, database.InTx(ctx, pool, func(tx pgx.Tx) error {
		require.NoError(t, database.Flush(ctx, tx))
		n := -1
		require.NoError(t, database.Defer(tx, insert(ctx, 1)))
		require.NoError(t, database.Defer(tx, func(db database.DBTX) error {
			return db.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n)
		}))
		require.Equal(t, -1, n)
		require.NoError(t, database.Flush(ctx, tx))
		require.Equal(t, 1, n, "Flush did not run the deferred read")
		require.NoError(t, database.Flush(ctx, tx))
		return database.Defer(tx, insert(ctx, 2))
	}))
	require.Equal(t, [][]string{
		{"begin", "insert into t values ($1)", "select count(*) from t"},
		{"insert into t values ($1)", "commit"},
	}, rec.Take())
}
