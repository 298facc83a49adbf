// Package migrate applies the embedded schema migrations, each once, in
// number order, under a Postgres advisory lock so several api processes
// starting together do not race.
package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/schema"
)

// lockKey is the advisory lock id that serialises migrators ("epochmig").
const lockKey int64 = 0x65706f63686d6967

// Migration is one numbered file's Up section.
type Migration struct {
	Version int64
	Name    string
	Up      string
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
		up, err := upSection(string(raw))
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", name, err)
		}
		out = append(out, Migration{Version: version, Name: strings.TrimSuffix(path.Base(name), ".sql"), Up: up})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("two migrations numbered %d", out[i].Version)
		}
	}
	return out, nil
}

// upSection returns the text between "-- +goose Up" and "-- +goose Down".
func upSection(text string) (string, error) {
	_, after, ok := strings.Cut(text, "-- +goose Up")
	if !ok {
		return "", fmt.Errorf("no -- +goose Up section")
	}
	up, _, _ := strings.Cut(after, "-- +goose Down")
	return up, nil
}

// Up applies every migration not applied yet and returns how many it
// applied. Each runs in its own transaction with its bookkeeping row.
func Up(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	migrations, err := Load()
	if err != nil {
		return 0, err
	}
	return Apply(ctx, pool, migrations)
}

// Pending is how many of the embedded migrations db has not applied yet
// (all of them on a database the api never started on).
func Pending(ctx context.Context, db *pgxpool.Pool) (int, error) {
	migrations, err := Load()
	if err != nil {
		return 0, err
	}
	var applied []int64
	err = pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
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
	pending := 0
	for _, m := range migrations {
		if !done[m.Version] {
			pending++
		}
	}
	return pending, nil
}

// Apply is Up for the given migrations only (in the order given): tests
// use it to build an older schema and upgrade it.
func Apply(ctx context.Context, pool *pgxpool.Pool, migrations []Migration) (int, error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return 0, fmt.Errorf("migrate: take lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // released with the session anyway

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version bigint PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return 0, fmt.Errorf("migrate: bookkeeping table: %w", err)
	}
	applied := 0
	for _, m := range migrations {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2) ON CONFLICT DO NOTHING`, m.Version, m.Name)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			if _, err := tx.Exec(ctx, m.Up); err != nil {
				return err
			}
			applied++
			return nil
		})
		if err != nil {
			return applied, fmt.Errorf("migrate %d_%s: %w", m.Version, m.Name, err)
		}
	}
	return applied, nil
}
