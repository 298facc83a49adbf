package database_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// ctx is the context of every call of these tests.
var ctx = context.Background()

// named is setup with the round trips' statements named as sqlc names
// them (the others upper-cased).
func named(t *testing.T) (*pgxpool.Pool, *testdb.Trips) {
	pool, rec := setup(t)
	rec.Name = testdb.StatementName
	return pool, rec
}

// queue sends sql the way sqlc's batch methods do: one pgx batch through
// db, named TStatement.
func queue(ctx context.Context, db database.DBTX, sql string, args ...any) pgx.BatchResults {
	b := &pgx.Batch{}
	b.Queue("-- name: TStatement :batchexec\n"+sql, args...)
	return db.SendBatch(ctx, b)
}

// commit runs fn in a transaction that must commit.
func commit(t *testing.T, pool *pgxpool.Pool, fn func(tx *database.Tx) error) {
	t.Helper()
	require.NoError(t, database.InTx(context.Background(), pool, fn))
}

// requireSent checks the round trips sent since the last look, and the
// rows t holds.
func requireSent(t *testing.T, pool *pgxpool.Pool, rec *testdb.Trips, trips [][]string, rows []int) {
	t.Helper()
	require.Equal(t, trips, rec.Take())
	require.Equal(t, rows, ids(t, pool))
}

func insert(ctx context.Context, db database.DBTX, id int) pgx.BatchResults {
	return queue(ctx, db, "INSERT INTO t VALUES ($1)", id)
}

func count(ctx context.Context, db database.DBTX) pgx.BatchResults {
	return queue(ctx, db, "SELECT count(*) FROM t")
}

// Queued writes nobody reads wait for the next statement, which sees them.
func TestQueuedWritesGoWithTheNextStatement(t *testing.T) {
	t.Parallel()
	pool, rec := named(t)
	var n int
	commit(t, pool, func(tx *database.Tx) error {
		insert(ctx, tx, 1)
		insert(ctx, tx, 2)
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
			return err
		}
		insert(ctx, tx, 3)
		return nil
	})
	require.Equal(t, 2, n, "the read did not see the queued writes")
	requireSent(t, pool, rec, [][]string{
		{"BEGIN", "TStatement", "TStatement", "SELECT COUNT(*) FROM T"},
		{"TStatement", "COMMIT"},
	}, []int{1, 2, 3})
}

// A transaction of queued writes only is one round trip; one that fails
// before they went anywhere sends nothing at all.
func TestQueuedWritesGoWithTheCommit(t *testing.T) {
	t.Parallel()
	pool, rec := named(t)
	commit(t, pool, func(tx *database.Tx) error {
		insert(ctx, tx, 1)
		insert(ctx, tx, 2)
		return nil
	})
	require.Equal(t, [][]string{{"BEGIN", "TStatement", "TStatement", "COMMIT"}}, rec.Take())
	boom := errors.New("boom")
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		insert(ctx, tx, 3)
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Empty(t, rec.Take())
	require.Equal(t, []int{1, 2}, ids(t, pool))
}

// A queued write that fails fails the transaction at the statement or the
// COMMIT it went with, named after its own statement; the transaction
// rolls back whole and the one connection is usable afterwards.
func TestFailedQueuedWriteNamesItsStatement(t *testing.T) {
	t.Parallel()
	pool := seeded(t)
	cases := map[string]func(tx *database.Tx) error{
		"at commit": func(tx *database.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES (5)")
			insert(ctx, tx, 1)
			return err
		},
		"at the next statement": func(tx *database.Tx) error {
			insert(ctx, tx, 5)
			insert(ctx, tx, 1)
			_, err := tx.Exec(ctx, "INSERT INTO t VALUES (6)")
			return err
		},
		"at the next read": func(tx *database.Tx) error {
			insert(ctx, tx, 1)
			var n int
			return count(ctx, tx).QueryRow().Scan(&n)
		},
	}
	for name, fn := range cases {
		err := database.InTx(ctx, pool, fn)
		require.True(t, database.IsUniqueViolation(err, "t_pkey"), "%s: %v", name, err)
		require.ErrorContains(t, err, "TStatement", name)
		require.Equal(t, []int{1}, ids(t, pool), name)
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { insert(ctx, tx, 7); return nil }), name)
		_, err = pool.Exec(ctx, "DELETE FROM t WHERE id = 7")
		require.NoError(t, err)
	}
}

// Batches queued one after another go in one round trip with BEGIN when
// the first is read; each reads its own results, and a later one sees
// what an earlier one wrote.
func TestQueuedBatchesAreReadInOrderInOneRoundTrip(t *testing.T) {
	t.Parallel()
	pool, rec := named(t)
	var inserted, counted int
	var got []int
	commit(t, pool, func(tx *database.Tx) error {
		write := queue(ctx, tx, "INSERT INTO t SELECT generate_series(1, $1::int)", 3)
		read := queue(ctx, tx, "SELECT count(*) FROM t WHERE id >= $1", 2)
		list := queue(ctx, tx, "SELECT id FROM t ORDER BY id DESC")
		require.Empty(t, rec.Take(), "sent before a result was read")
		tag, err := write.Exec()
		if err != nil {
			return err
		}
		inserted = int(tag.RowsAffected())
		if err := read.QueryRow().Scan(&counted); err != nil {
			return err
		}
		rows, err := list.Query()
		if err != nil {
			return err
		}
		got, err = pgx.CollectRows(rows, pgx.RowTo[int])
		return err
	})
	require.Equal(t, 3, inserted)
	require.Equal(t, 2, counted)
	require.Equal(t, []int{3, 2, 1}, got)
	require.Equal(t, [][]string{{"BEGIN", "TStatement", "TStatement", "TStatement"}, {"COMMIT"}}, rec.Take())
}

// A batch whose results are read after a later one's was read for nobody
// meanwhile: asking for them is an error.
func TestResultsReadOutOfOrderAreAnError(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		first, second := count(ctx, tx), count(ctx, tx)
		var n int
		require.NoError(t, second.QueryRow().Scan(&n))
		return first.QueryRow().Scan(&n)
	})
	require.ErrorContains(t, err, "results of TStatement were read after a later statement's")
}

// A statement queued with AfterCommit goes in the COMMIT's round trip,
// after the COMMIT, as a transaction of its own; queued writes go first.
func TestAfterCommitFollowsTheCommitInItsRoundTrip(t *testing.T) {
	t.Parallel()
	pool, rec := named(t)
	var failed []error
	commit(t, pool, func(tx *database.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			return err
		}
		insert(ctx, tx, 2)
		tx.AfterCommit(func(db database.DBTX) { insert(ctx, db, 3) }, func(err error) { failed = append(failed, err) })
		return nil
	})
	require.Empty(t, failed)
	requireSent(t, pool, rec, [][]string{
		{"BEGIN", "INSERT INTO T VALUES (1)"},
		{"TStatement", "COMMIT", "TStatement"},
	}, []int{1, 2, 3})
}

// A statement after the COMMIT that fails does not fail the transaction,
// which has committed; its failed function gets the error.
func TestAfterCommitFailureLeavesTheCommitStanding(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	var failed error
	commit(t, pool, func(tx *database.Tx) error {
		tx.AfterCommit(func(db database.DBTX) { queue(ctx, db, "SELECT 1/0") }, func(err error) { failed = err })
		insert(ctx, tx, 1)
		return nil
	})
	var pgErr *pgconn.PgError
	require.ErrorAs(t, failed, &pgErr)
	require.Equal(t, "22012", pgErr.Code, "division by zero")
	require.Equal(t, []int{1}, ids(t, pool))
	commit(t, pool, func(tx *database.Tx) error { insert(ctx, tx, 2); return nil })
	require.Equal(t, []int{1, 2}, ids(t, pool))
}

// A transaction that does not commit runs nothing after it: not when a
// queued write fails the COMMIT's batch, not when fn fails.
func TestAfterCommitRunsOnlyAfterACommit(t *testing.T) {
	t.Parallel()
	pool := seeded(t)
	var err error
	ran := 0
	after := func(tx *database.Tx) {
		tx.AfterCommit(func(db database.DBTX) { insert(ctx, db, 9) }, func(error) {})
		ran++
	}
	err = database.InTx(ctx, pool, func(tx *database.Tx) error {
		insert(ctx, tx, 1)
		after(tx)
		return nil
	})
	require.True(t, database.IsUniqueViolation(err, "t_pkey"), "%v", err)
	boom := errors.New("boom")
	err = database.InTx(ctx, pool, func(tx *database.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
			return err
		}
		after(tx)
		return boom
	})
	require.ErrorIs(t, err, boom)
	require.Equal(t, 2, ran)
	require.Equal(t, []int{1}, ids(t, pool), "an after-commit statement ran")
}

// A read registered with ReadAtCommit runs once, at the commit: its
// statements go with the COMMIT and see the transaction's own writes. A
// read that finds nothing fails Commit with ErrNotFound; the COMMIT it
// went with stands.
func TestReadAtCommitGoesWithTheCommit(t *testing.T) {
	t.Parallel()
	pool, rec := named(t)
	n, reads := -1, 0
	commit(t, pool, func(tx *database.Tx) error {
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES (1)"); err != nil {
			return err
		}
		insert(ctx, tx, 2)
		tx.ReadAtCommit(func(db database.DBTX) error {
			reads++
			return count(ctx, db).QueryRow().Scan(&n)
		})
		require.Zero(t, reads)
		return nil
	})
	require.Equal(t, 1, reads)
	require.Equal(t, 2, n, "the read did not see the transaction's writes")
	requireSent(t, pool, rec, [][]string{
		{"BEGIN", "INSERT INTO T VALUES (1)"},
		{"TStatement", "TStatement", "COMMIT"},
	}, []int{1, 2})

	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		insert(ctx, tx, 3)
		tx.ReadAtCommit(func(db database.DBTX) error {
			var id int
			return database.NotFound(queue(ctx, db, "SELECT id FROM t WHERE id = 42").QueryRow().Scan(&id))
		})
		return nil
	})
	require.ErrorIs(t, err, database.ErrNotFound)
	require.Equal(t, []int{1, 2, 3}, ids(t, pool), "the transaction committed")
}

// Flush sends what waits now; with nothing waiting it sends nothing.
func TestFlushSendsWhatWaits(t *testing.T) {
	t.Parallel()
	pool, rec := named(t)
	commit(t, pool, func(tx *database.Tx) error {
		insert(ctx, tx, 1)
		require.NoError(t, tx.Flush(ctx))
		require.Equal(t, [][]string{{"BEGIN", "TStatement"}}, rec.Take())
		require.NoError(t, tx.Flush(ctx))
		require.Empty(t, rec.Take())
		insert(ctx, tx, 2)
		return nil
	})
	require.Equal(t, [][]string{{"TStatement", "COMMIT"}}, rec.Take())
}

// Pipeline queues as a Tx does, without BEGIN and COMMIT: two reads in
// one round trip; what is left is sent and checked when fn returns.
func TestPipelineSendsReadsInOneRoundTrip(t *testing.T) {
	t.Parallel()
	pool, rec := named(t)
	var before, after int
	require.NoError(t, database.Pipeline(ctx, pool, func(db *database.Conn) error {
		first, second := count(ctx, db), queue(ctx, db, "SELECT count(*) + 1 FROM t")
		if err := first.QueryRow().Scan(&before); err != nil {
			return err
		}
		if err := second.QueryRow().Scan(&after); err != nil {
			return err
		}
		insert(ctx, db, 1)
		return nil
	}))
	require.Equal(t, []int{0, 1}, []int{before, after})
	requireSent(t, pool, rec, [][]string{{"TStatement", "TStatement"}, {"TStatement"}}, []int{1})
	err := database.Pipeline(ctx, pool, func(db *database.Conn) error { insert(ctx, db, 1); return nil })
	require.True(t, database.IsUniqueViolation(err, "t_pkey"), "%v", err)
	require.ErrorContains(t, err, "TStatement")
}

// A savepoint that fails rolls back its own part, queued writes included,
// named; the rest of the transaction commits.
func TestSavepointRollsBackItsPart(t *testing.T) {
	t.Parallel()
	pool := seeded(t)
	var inner error
	commit(t, pool, func(tx *database.Tx) error {
		inner = tx.Savepoint(ctx, func(tx *database.Tx) error {
			insert(ctx, tx, 2)
			insert(ctx, tx, 1)
			return nil
		})
		require.NoError(t, tx.Savepoint(ctx, func(tx *database.Tx) error { insert(ctx, tx, 3); return nil }))
		require.Error(t, tx.Savepoint(ctx, func(tx *database.Tx) error {
			insert(ctx, tx, 4)
			return errors.New("never sent")
		}))
		return nil
	})
	require.True(t, database.IsUniqueViolation(inner, "t_pkey"), "%v", inner)
	require.ErrorContains(t, inner, "TStatement")
	require.Equal(t, []int{1, 3}, ids(t, pool))
}

// CopyFrom cannot share a batch: the queued writes go first, then the
// copy.
func TestCopyFromSendsQueuedWritesFirst(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	commit(t, pool, func(tx *database.Tx) error {
		insert(ctx, tx, 1)
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"t"}, []string{"id"}, pgx.CopyFromRows([][]any{{2}}))
		return err
	})
	require.Equal(t, []int{1, 2}, ids(t, pool))
}
