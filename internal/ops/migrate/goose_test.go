package migrate_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// setup gives the test an empty database and n pools on it, each as a
// process of its own would connect.
func setup(t *testing.T, n int) []*pgxpool.Pool {
	t.Helper()
	pool, url := testdb.Empty(t)
	pools := []*pgxpool.Pool{pool}
	for len(pools) < n {
		p, err := database.Connect(context.Background(), url, 0, nil)
		require.NoError(t, err)
		t.Cleanup(p.Close)
		pools = append(pools, p)
	}
	return pools
}

// files is a migration folder: file name to contents.
func files(named map[string]string) fstest.MapFS {
	fsys := fstest.MapFS{}
	for name, text := range named {
		fsys[name] = &fstest.MapFile{Data: []byte(text)}
	}
	return fsys
}

// recorded lists the versions goose's table holds, repeats included.
func recorded(t *testing.T, pool *pgxpool.Pool) []int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), "SELECT version_id FROM "+migrate.VersionTable+" WHERE version_id > 0 ORDER BY version_id")
	require.NoError(t, err)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	return versions
}

func tableExists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var exists bool
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT to_regclass($1) IS NOT NULL", name).Scan(&exists))
	return exists
}

// Two migrators starting together on one database (two api processes)
// apply each migration once between them: the second waits for the lock
// the first holds while it migrates, then finds nothing left to do.
func TestConcurrentMigratorsApplyEachMigrationOnce(t *testing.T) {
	t.Parallel()
	pools := setup(t, 2)
	// A database migrated before, so goose's table is there and neither
	// migrator waits to create it: they meet at the lock alone.
	first := map[string]string{"0001_applied.sql": "-- +goose Up\nCREATE TABLE applied (version integer PRIMARY KEY);\n"}
	_, err := migrate.UpFS(context.Background(), pools[0], files(first))
	require.NoError(t, err)
	// A second application of either new file fails on the primary key,
	// and the first holds the lock long enough for the other to be waiting.
	fsys := files(first)
	fsys["0002_slow.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nINSERT INTO applied VALUES (2);\nSELECT pg_sleep(0.5);\n")}
	fsys["0003_next.sql"] = &fstest.MapFile{Data: []byte("-- +goose Up\nINSERT INTO applied VALUES (3);\n")}
	var wg sync.WaitGroup
	counts := make([]int, len(pools))
	errs := make([]error, len(pools))
	start := make(chan struct{})
	for i, pool := range pools {
		wg.Go(func() {
			<-start
			counts[i], errs[i] = migrate.UpFS(context.Background(), pool, fsys)
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 2, counts[0]+counts[1], "applied between them: %v", counts)

	rows, err := pools[0].Query(context.Background(), "SELECT version FROM applied ORDER BY version")
	require.NoError(t, err)
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	require.NoError(t, err)
	require.Equal(t, []int64{2, 3}, applied)
	require.Equal(t, []int64{1, 2, 3}, recorded(t, pools[0]), "each version recorded once")
}

// A StatementBegin/StatementEnd block is sent as one statement, semicolons
// and all (goose splits everything else at them).
func TestStatementBlockKeepsItsSemicolons(t *testing.T) {
	t.Parallel()
	pool := setup(t, 1)[0]
	fsys := files(map[string]string{"0001_blocks.sql": `-- +goose Up
-- +goose StatementBegin
CREATE FUNCTION twice(n integer) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    result integer;
BEGIN
    result := n * 2;
    RETURN result;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
BEGIN
    CREATE TABLE made_in_a_block (n integer);
    INSERT INTO made_in_a_block VALUES (twice(21));
END;
$$;
-- +goose StatementEnd

-- +goose Down
DROP TABLE made_in_a_block;
DROP FUNCTION twice;
`})
	applied, err := migrate.UpFS(context.Background(), pool, fsys)
	require.NoError(t, err)
	require.Equal(t, 1, applied)
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT n FROM made_in_a_block").Scan(&n))
	require.Equal(t, 42, n)
}

// A NO TRANSACTION migration runs outside a transaction, as CREATE INDEX
// CONCURRENTLY must; every other migration runs inside one, where the
// same statement fails and nothing of its migration is recorded.
func TestNoTransactionMigrationRunsOutsideATransaction(t *testing.T) {
	t.Parallel()
	table := "-- +goose Up\nCREATE TABLE things (n integer);\n"
	index := "-- +goose Up\nCREATE INDEX CONCURRENTLY things_n_idx ON things (n);\n"

	t.Run("annotated", func(t *testing.T) {
		t.Parallel()
		pool := setup(t, 1)[0]
		fsys := files(map[string]string{"0001_things.sql": table, "0002_index.sql": "-- +goose NO TRANSACTION\n" + index})
		applied, err := migrate.UpFS(context.Background(), pool, fsys)
		require.NoError(t, err)
		require.Equal(t, 2, applied)
		var valid bool
		require.NoError(t, pool.QueryRow(context.Background(),
			"SELECT indisvalid FROM pg_index WHERE indexrelid = 'things_n_idx'::regclass").Scan(&valid))
		require.True(t, valid)
		pending, err := migrate.PendingFS(context.Background(), pool, fsys)
		require.NoError(t, err)
		require.Zero(t, pending)
	})
	t.Run("in a transaction", func(t *testing.T) {
		t.Parallel()
		pool := setup(t, 1)[0]
		fsys := files(map[string]string{"0001_things.sql": table, "0002_index.sql": index})
		applied, err := migrate.UpFS(context.Background(), pool, fsys)
		require.ErrorContains(t, err, "cannot run inside a transaction block")
		require.ErrorContains(t, err, "0002_index.sql", "the error names the file")
		require.Equal(t, 1, applied, "the first migration stands")
		require.False(t, tableExists(t, pool, "things_n_idx"))
		pending, err := migrate.PendingFS(context.Background(), pool, fsys)
		require.NoError(t, err)
		require.Equal(t, 1, pending)
	})
}

// Pending counts the schema's migrations not applied yet, and only reads:
// asked before any migrator ran, it leaves the database as it was.
func TestPendingCountsWhatIsNotApplied(t *testing.T) {
	t.Parallel()
	pool := setup(t, 1)[0]
	ctx := context.Background()
	all, err := migrate.Load()
	require.NoError(t, err)
	require.Greater(t, len(all), 3)

	pending, err := migrate.Pending(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, len(all), pending)
	require.False(t, tableExists(t, pool, migrate.VersionTable), "Pending created goose's table")

	_, err = migrate.UpTo(ctx, pool, 3)
	require.NoError(t, err)
	pending, err = migrate.Pending(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, len(all)-3, pending)

	applied, err := migrate.Up(ctx, pool)
	require.NoError(t, err)
	require.Equal(t, len(all)-3, applied)
	pending, err = migrate.Pending(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, pending)

	applied, err = migrate.Up(ctx, pool)
	require.NoError(t, err)
	require.Zero(t, applied, "nothing left to apply")

	migrated, _ := testdb.New(t)
	pending, err = migrate.Pending(ctx, migrated)
	require.NoError(t, err)
	require.Zero(t, pending, "testdb's databases are migrated")
}

// migrateAsTheOldRunner migrates pool through version as the hand-written
// runner goose replaced did: each file's Up section sent whole, in a
// transaction with its row in schema_migrations.
func migrateAsTheOldRunner(t *testing.T, pool *pgxpool.Pool, through int64) {
	t.Helper()
	ctx := context.Background()
	all, err := migrate.Load()
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	require.NoError(t, err)
	for _, m := range all {
		if m.Version > through {
			break
		}
		_, up, ok := strings.Cut(m.SQL, "-- +goose Up")
		require.True(t, ok)
		up, _, _ = strings.Cut(up, "-- +goose Down")
		require.NoError(t, pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, up)
			return err
		}), m.Name)
	}
}

// A database the old runner migrated is taken over without running again
// what it applied (which would fail: its tables exist): its versions are
// copied into goose's table once, even with two migrators starting
// together, and goose applies only what the old runner had not. Until a
// migrator has run, Pending reads the old runner's table, so a worker does
// not wait for a schema that is there.
func TestDatabaseOfTheOldRunnerIsTakenOver(t *testing.T) {
	t.Parallel()
	all, err := migrate.Load()
	require.NoError(t, err)
	latest := all[len(all)-1].Version
	for _, through := range []int64{3, latest} {
		t.Run(fmt.Sprintf("through %d", through), func(t *testing.T) {
			t.Parallel()
			pools := setup(t, 2)
			ctx := context.Background()
			migrateAsTheOldRunner(t, pools[0], through)
			_, err := pools[0].Exec(ctx, `INSERT INTO users (id, name, token_hash) VALUES (gen_random_uuid(), 'kept', 'x')`)
			require.NoError(t, err)

			pending, err := migrate.Pending(ctx, pools[0])
			require.NoError(t, err)
			require.Equal(t, int(latest-through), pending)
			require.False(t, tableExists(t, pools[0], migrate.VersionTable))

			var wg sync.WaitGroup
			counts := make([]int, len(pools))
			errs := make([]error, len(pools))
			for i, pool := range pools {
				wg.Go(func() { counts[i], errs[i] = migrate.Up(ctx, pool) })
			}
			wg.Wait()
			for _, err := range errs {
				require.NoError(t, err)
			}
			require.Equal(t, int(latest-through), counts[0]+counts[1], "applied between them: %v", counts)

			var want []int64
			for _, m := range all {
				want = append(want, m.Version)
			}
			require.Equal(t, want, recorded(t, pools[0]), "each version recorded once")
			pending, err = migrate.Pending(ctx, pools[0])
			require.NoError(t, err)
			require.Zero(t, pending)
			var kept int
			require.NoError(t, pools[0].QueryRow(ctx, "SELECT count(*) FROM users WHERE name = 'kept'").Scan(&kept))
			require.Equal(t, 1, kept)

			// The old table stays as it was, for the old runner should a
			// deployment go back to it.
			var old int64
			require.NoError(t, pools[0].QueryRow(ctx, "SELECT max(version) FROM "+migrate.LegacyTable).Scan(&old))
			require.Equal(t, through, old)
		})
	}
}

// goose builds from the schema's files what the old runner built: same
// tables, columns, constraints and indexes. It sends a file statement by
// statement where the runner sent it whole, so a file goose split
// differently would show here.
func TestGooseBuildsTheSchemaTheOldRunnerBuilt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	byGoose, byRunner := setup(t, 1)[0], setup(t, 1)[0]
	_, err := migrate.Up(ctx, byGoose)
	require.NoError(t, err)
	migrateAsTheOldRunner(t, byRunner, 1<<62)
	require.Equal(t, catalog(t, byRunner), catalog(t, byGoose))
}

// catalog describes the public schema's tables but the bookkeeping ones,
// one sorted line per column, constraint and index.
func catalog(t *testing.T, pool *pgxpool.Pool) []string {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type, is_nullable, coalesce(column_default, ''))
		FROM information_schema.columns WHERE table_schema = 'public' AND table_name <> ALL ($1)
		UNION ALL
		SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
		FROM pg_constraint WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text <> ALL ($1)
		UNION ALL
		SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public' AND tablename <> ALL ($1)
		UNION ALL
		SELECT format('function %s', p.oid::regprocedure) FROM pg_proc p WHERE pronamespace = 'public'::regnamespace
		ORDER BY 1`, []string{migrate.VersionTable, migrate.LegacyTable})
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	require.NotEmpty(t, lines)
	return lines
}
