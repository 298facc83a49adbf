package database_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// setup gives a pool of one connection (so a connection left in a bad
// state would show in the next test step) with a table t(id int primary
// key), and the recorder of its round trips.
func setup(t *testing.T) (*pgxpool.Pool, *testdb.Trips) {
	t.Helper()
	_, url := testdb.Empty(t)
	rec := &testdb.Trips{}
	pool, err := database.Connect(context.Background(), url, 1, rec)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	_, err = pool.Exec(context.Background(), "CREATE TABLE t (id int PRIMARY KEY)")
	require.NoError(t, err)
	rec.Take()
	return pool, rec
}

// seeded is setup with the row 1 in t already.
func seeded(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool, _ := setup(t)
	_, err := pool.Exec(context.Background(), "INSERT INTO t VALUES (1)")
	require.NoError(t, err)
	return pool
}

func ids(t *testing.T, pool *pgxpool.Pool) []int {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT id FROM t ORDER BY id")
	require.NoError(t, err)
	got, err := pgx.CollectRows(rows, pgx.RowTo[int])
	require.NoError(t, err)
	return got
}

func TestBeginRidesWithTheFirstStatement(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, "INSERT INTO t VALUES (1) RETURNING id").Scan(&n); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)")
		return err
	})
	require.NoError(t, err)
	require.Equal(t, [][]string{
		{"begin", "insert into t values (1) returning id"},
		{"insert into t values (2)"},
		{"commit"},
	}, rec.Take())
	require.Equal(t, []int{1, 2}, ids(t, pool))
}

func TestEachFirstCallRidesWithBegin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	first := map[string]func(tx *database.Tx) error{
		"exec": func(tx *database.Tx) error {
			tag, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)")
			if err == nil && tag.RowsAffected() != 1 {
				err = errors.New("no row")
			}
			return err
		},
		"query": func(tx *database.Tx) error {
			rows, err := tx.Query(ctx, "INSERT INTO t VALUES (1) RETURNING id")
			if err != nil {
				return err
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[int])
			if err == nil && len(got) != 1 {
				err = errors.New("no row")
			}
			return err
		},
		"batch": func(tx *database.Tx) error {
			b := &pgx.Batch{}
			b.Queue("INSERT INTO t VALUES (1)")
			b.Queue("SELECT count(*) FROM t")
			br := tx.SendBatch(ctx, b)
			if _, err := br.Exec(); err != nil {
				return err
			}
			var n int
			if err := br.QueryRow().Scan(&n); err != nil {
				return err
			}
			if n != 1 {
				return errors.New("the batch's results are off by one")
			}
			return br.Close()
		},
	}
	for name, fn := range first {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			pool, rec := setup(t)
			require.NoError(t, database.InTx(ctx, pool, fn))
			sent := rec.Take()
			require.Len(t, sent, 2, "%q", sent)
			require.Equal(t, "begin", sent[0][0])
			require.Greater(t, len(sent[0]), 1, "BEGIN went alone")
			require.Equal(t, []int{1}, ids(t, pool))
		})
	}
}

// A failed first statement (BEGIN went through, the statement did not)
// rolls back, and the connection goes back to the pool usable.
func TestFailedFirstStatementRollsBack(t *testing.T) {
	t.Parallel()
	pool := seeded(t)
	ctx := context.Background()
	for _, first := range []func(tx *database.Tx) error{
		func(tx *database.Tx) error { _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); return err },
		func(tx *database.Tx) error {
			var n int
			return tx.QueryRow(ctx, "INSERT INTO t VALUES (1) RETURNING id").Scan(&n)
		},
	} {
		err := database.InTx(ctx, pool, first)
		require.True(t, database.IsUniqueViolation(err, "t_pkey"), "%v", err)
		// The one connection is reusable: a transaction writes again.
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)")
			return err
		}))
		_, err = pool.Exec(ctx, "DELETE FROM t WHERE id = 2")
		require.NoError(t, err)
	}
	require.Equal(t, []int{1}, ids(t, pool))
}

func TestLaterErrorRollsBackTheFirstStatement(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	boom := errors.New("boom")
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			return err
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Panics(t, func() {
		_ = database.InTx(ctx, pool, func(tx *database.Tx) error {
			if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
				return err
			}
			panic("boom")
		})
	})
	require.Empty(t, ids(t, pool))
}

func TestFirstQueryRowWithNoRow(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		var n int
		if err := tx.QueryRow(ctx, "SELECT id FROM t").Scan(&n); !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO t VALUES (3)")
		return err
	})
	require.NoError(t, err)
	require.Equal(t, []int{3}, ids(t, pool))
}

func TestTransactionThatSendsNothingSendsNothing(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	require.NoError(t, database.InTx(context.Background(), pool, func(*database.Tx) error { return nil }))
	require.Empty(t, rec.Take())
}

// CopyFrom cannot share a batch: it begins the transaction on its own,
// and still rolls back with it.
func TestCopyFromBeginsFirst(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	boom := errors.New("boom")
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		n, err := tx.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id"}, pgx.CopyFromRows([][]any{{1}, {2}}))
		if err != nil || n != 2 {
			return errors.Join(err, errors.New("copy"))
		}
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, []string{"begin"}, rec.Take()[0])
	require.Empty(t, ids(t, pool))
}

func TestClosedTransactionRefusesStatements(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	var kept *database.Tx
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { kept = tx; return nil }))
	_, err := kept.Exec(ctx, "INSERT INTO t VALUES (1)")
	require.ErrorIs(t, err, pgx.ErrTxClosed)
	require.Empty(t, ids(t, pool))
}
