package database_test

import (
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/database"
)

// Three statements, written the way sqlc's generated methods call a DBTX,
// go in one round trip with BEGIN; each reads its own results, and a
// later one sees what an earlier one wrote.
func TestBatchSendsStatementsInOneRoundTrip(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	var inserted, counted int
	var ids []int
	err := database.InTx(ctx, pool, func(tx pgx.Tx) error {
		return database.Batch(ctx, tx,
			func(db database.DBTX) error {
				tag, err := db.Exec(ctx, "INSERT INTO t SELECT generate_series(1, $1::int)", 3)
				inserted = int(tag.RowsAffected())
				return err
			},
			func(db database.DBTX) error {
				return db.QueryRow(ctx, "SELECT count(*) FROM t WHERE id >= $1", 2).Scan(&counted)
			},
			func(db database.DBTX) error {
				rows, err := db.Query(ctx, "SELECT id FROM t ORDER BY id DESC")
				if err != nil {
					return err
				}
				ids, err = pgx.CollectRows(rows, pgx.RowTo[int])
				return err
			},
		)
	})
	require.NoError(t, err)
	require.Equal(t, 3, inserted)
	require.Equal(t, 2, counted)
	require.Equal(t, []int{3, 2, 1}, ids)
	require.Equal(t, [][]string{{
		"begin",
		"insert into t select generate_series(1, $1::int)",
		"select count(*) from t where id >= $1",
		"select id from t order by id desc",
	}, {"commit"}}, rec.Take())
}

func TestBatchStatementErrorRollsBack(t *testing.T) {
	t.Parallel()
	pool, _ := setup(t)
	ctx := context.Background()
	third := false
	err := database.InTx(ctx, pool, func(tx pgx.Tx) error {
		return database.Batch(ctx, tx,
			func(db database.DBTX) error { _, err := db.Exec(ctx, "INSERT INTO t VALUES (1)"); return err },
			func(db database.DBTX) error { _, err := db.Exec(ctx, "INSERT INTO t VALUES (1)"); return err },
			func(db database.DBTX) error {
				_, err := db.Exec(ctx, "INSERT INTO t VALUES (3)")
				third = err == nil
				return err
			},
		)
	})
	require.True(t, database.IsUniqueViolation(err, "t_pkey"), "%v", err)
	require.False(t, third, "a statement after the failed one reported success")
	require.Empty(t, ids(t, pool))
}

// A statement that makes no call (here: it returns before reaching db)
// is refused before anything is sent.
func TestBatchRefusesAStatementThatMakesNoCall(t *testing.T) {
	t.Parallel()
	pool, rec := setup(t)
	ctx := context.Background()
	bad := errors.New("invalid argument")
	err := database.InTx(ctx, pool, func(tx pgx.Tx) error {
		return database.Batch(ctx, tx,
			func(db database.DBTX) error { _, err := db.Exec(ctx, "INSERT INTO t VALUES (1)"); return err },
			func(database.DBTX) error { return bad },
		)
	})
	require.ErrorContains(t, err, "made no call")
	require.ErrorIs(t, err, bad)
	require.Empty(t, rec.Take())
	require.Empty(t, ids(t, pool))
}
