// Package migrate applies the embedded schema migrations with goose: each
// once, in version order, under a Postgres session advisory lock so several
// api processes starting together do not race. goose reads the files'
// annotations: a StatementBegin/StatementEnd block is one statement whatever
// semicolons it holds, and a NO TRANSACTION migration (CREATE INDEX
// CONCURRENTLY, say) runs outside a transaction; every other migration runs
// in its own transaction with its version row.
package migrate

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	goosedb "github.com/pressly/goose/v3/database"
	"github.com/pressly/goose/v3/lock"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/schema"
)

// lockKey is the advisory lock id that serialises migrators ("epochmig").
// The runner before goose took the same one, so an api of either kind
// waits for the other while both start on one database.
const lockKey int64 = 0x65706f63686d6967

// lockPolls bounds how many times, once a second, a migrator asks for the
// lock before it gives up: a day, so the caller's context is what bounds
// the wait.
const lockPolls = 24 * 60 * 60

// VersionTable is where goose records the applied versions.
const VersionTable = goose.DefaultTablename

// LegacyTable is where the runner before goose recorded them. A database it
// migrated has its versions copied into VersionTable once (adoptLegacy);
// the table itself stays, frozen, so that runner still starts on the
// database if a deployment goes back to it.
const LegacyTable = "schema_migrations"

// Migration is one numbered file as goose reads it.
type Migration struct {
	Version int64
	Name    string
	// SQL is the whole file, annotations included: they decide how goose
	// runs it.
	SQL string
}

// Load reads the embedded migrations in version order.
func Load() ([]Migration, error) {
	return load(schema.Migrations)
}

func load(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, name := range names {
		num, _, ok := strings.Cut(name, "_")
		version, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number and _", name)
		}
		raw, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: version, Name: strings.TrimSuffix(path.Base(name), ".sql"), SQL: string(raw)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("two migrations numbered %d", out[i].Version)
		}
	}
	return out, nil
}

// Up applies every migration not applied yet and returns how many it
// applied.
func Up(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	return upTo(ctx, pool, schema.Migrations, math.MaxInt64)
}

// UpTo is Up for the migrations up to version only: tests use it to build
// an older schema and upgrade it.
func UpTo(ctx context.Context, pool *pgxpool.Pool, version int64) (int, error) {
	return upTo(ctx, pool, schema.Migrations, version)
}

// Pending is how many of the embedded migrations db has not applied yet
// (all of them on a database the api never started on).
func Pending(ctx context.Context, db *pgxpool.Pool) (int, error) {
	return pending(ctx, db, schema.Migrations)
}

func upTo(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS, version int64) (int, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	// Before goose looks at its table: its first look creates the table
	// empty, and an empty table would have it apply everything again.
	if err := adoptLegacy(ctx, db); err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	p, err := newProvider(db, fsys)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	results, err := p.UpTo(ctx, version)
	var partial *goose.PartialError
	if errors.As(err, &partial) {
		results = partial.Applied
	}
	if partial != nil {
		return len(results), fmt.Errorf("migrate %s: %w", path.Base(partial.Failed.Source.Path), partial.Err)
	}
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	return len(results), nil
}

func newProvider(db *sql.DB, fsys fs.FS) (*goose.Provider, error) {
	locker, err := lock.NewPostgresSessionLocker(lock.WithLockID(lockKey), lock.WithLockTimeout(1, lockPolls))
	if err != nil {
		return nil, err
	}
	return goose.NewProvider(goose.DialectPostgres, db, fsys,
		goose.WithTableName(VersionTable),
		goose.WithSessionLocker(locker),
		// Only the files of fsys: a Go migration registered anywhere in
		// the binary is none of ours.
		goose.WithDisableGlobalRegistry(true),
	)
}

// adoptLegacy copies the versions the runner before goose recorded into
// goose's table, once: on a database goose has applied nothing to yet. It
// holds the migrators' lock, so it and another migrator's goose never
// interleave, and it commits the table and its rows together, so a
// migrator never sees the table without them.
func adoptLegacy(ctx context.Context, db *sql.DB) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return fmt.Errorf("take lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // released with the session anyway

	var legacy, adopted bool
	if err := conn.QueryRowContext(ctx, `SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL`,
		LegacyTable, VersionTable).Scan(&legacy, &adopted); err != nil {
		return err
	}
	if !legacy {
		return nil
	}
	if adopted {
		var latest int64
		if err := conn.QueryRowContext(ctx, fmt.Sprintf(`SELECT coalesce(max(version_id), 0) FROM %s`, VersionTable)).Scan(&latest); err != nil {
			return err
		}
		if latest > 0 {
			return nil // adopted before, or migrated by goose since
		}
	}
	if err := copyLegacy(ctx, conn, !adopted); err != nil {
		return fmt.Errorf("copy the versions of %s: %w", LegacyTable, err)
	}
	return nil
}

// copyLegacy copies every version of the runner's table into goose's, in
// one transaction, creating goose's table first when create is true.
func copyLegacy(ctx context.Context, conn *sql.Conn, create bool) (err error) {
	store, err := goosedb.NewStore(goosedb.DialectPostgres, VersionTable)
	if err != nil {
		return err
	}
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if create {
		// goose's own table and its zero row, as goose makes them.
		if err := store.CreateVersionTable(ctx, tx); err != nil {
			return err
		}
		if err := store.Insert(ctx, tx, goosedb.InsertRequest{Version: 0}); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`INSERT INTO %s (version_id, is_applied, tstamp)
		SELECT version, true, applied_at FROM %s ORDER BY version`, VersionTable, LegacyTable)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`COMMENT ON TABLE %s IS 'Versions the migration runner before goose applied, no longer written: copied into %s, which goose keeps. Kept so that runner still starts on this database.'`,
		LegacyTable, VersionTable)); err != nil {
		return err
	}
	return tx.Commit()
}

// pending counts the migrations of fsys that db has not applied. It only
// reads: a worker asks it while the api may be migrating, and goose's own
// look (HasPending) would create goose's table, before the api has copied
// the runner's versions into it. A database the runner before goose
// migrated and no api since counts as its table says.
func pending(ctx context.Context, pool *pgxpool.Pool, fsys fs.FS) (int, error) {
	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	p, err := newProvider(db, fsys)
	if err != nil {
		return 0, fmt.Errorf("migrate: pending: %w", err)
	}
	var applied []int64
	err = database.InTx(ctx, pool, func(tx *database.Tx) error {
		var table *string
		if err := tx.QueryRow(ctx, `SELECT CASE WHEN to_regclass($1) IS NOT NULL THEN $1 WHEN to_regclass($2) IS NOT NULL THEN $2 END`,
			VersionTable, LegacyTable).Scan(&table); err != nil || table == nil {
			return err
		}
		query := fmt.Sprintf(`SELECT version_id FROM %s`, VersionTable)
		if *table == LegacyTable {
			query = fmt.Sprintf(`SELECT version FROM %s`, LegacyTable)
		}
		rows, err := tx.Query(ctx, query)
		if err != nil {
			return err
		}
		applied, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("migrate: pending: %w", err)
	}
	done := make(map[int64]bool, len(applied))
	for _, v := range applied {
		done[v] = true
	}
	n := 0
	for _, s := range p.ListSources() { // the files as goose reads them
		if !done[s.Version] {
			n++
		}
	}
	return n, nil
}
