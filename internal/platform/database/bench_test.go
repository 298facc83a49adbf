package database_test

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// BenchmarkTransaction times a three-statement transaction (as a small
// command: an insert, a read, an update) with BEGIN riding with the first
// statement (InTx) and with BEGIN sent on its own (pgx.BeginFunc):
//
//	go test -run '^$' -bench Transaction -count 5 ./internal/platform/database
func BenchmarkTransaction(b *testing.B) {
	_, url := testdb.Empty(b)
	ctx := context.Background()
	pool, err := database.Connect(ctx, url, 1, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, n int NOT NULL)"); err != nil {
		b.Fatal(err)
	}
	next := 0
	body := func(tx database.DBTX) error {
		next++
		if _, err := tx.Exec(ctx, "INSERT INTO t VALUES ($1, 0)", next); err != nil {
			return err
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT n FROM t WHERE id = $1", next).Scan(&n); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "UPDATE t SET n = n + 1 WHERE id = $1", next)
		return err
	}
	run := func(b *testing.B, tx func() error) {
		for range b.N {
			if err := tx(); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("begin-rides-along", func(b *testing.B) {
		run(b, func() error { return database.InTx(ctx, pool, func(tx *database.Tx) error { return body(tx) }) })
	})
	b.Run("begin-alone", func(b *testing.B) {
		run(b, func() error { return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return body(tx) }) })
	})
}
