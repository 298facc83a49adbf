package harness

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/platform/database"
)

// DatabaseServerURL is the URL of the maintenance database the databases
// are created from: EPOCH_DATABASE_URL, as the binaries read it
// (database.DefaultURL when it is not set).
func DatabaseServerURL() string { return cmp.Or(os.Getenv("EPOCH_DATABASE_URL"), database.DefaultURL) }

// Database is a database of its own on the server of DatabaseServerURL.
type Database struct {
	Server string // the maintenance database's URL
	Name   string
	URL    string
}

// NewDatabase creates a database named prefix and a random suffix: a copy
// of the migrated template when migrated is true, empty otherwise (the api
// migrates it when it starts).
func NewDatabase(ctx context.Context, prefix string, migrated bool) (*Database, error) {
	d := &Database{Server: DatabaseServerURL(), Name: prefix + RandomHex(6)}
	var err error
	if d.URL, err = WithDatabase(d.Server, d.Name); err != nil {
		return nil, err
	}
	admin, err := pgx.Connect(ctx, d.Server)
	if err != nil {
		return nil, fmt.Errorf("Postgres is not reachable at %s: %w", d.Server, err)
	}
	defer admin.Close(ctx)
	statement := "CREATE DATABASE " + d.Name
	if migrated {
		template, err := ensureTemplate(ctx, admin, d.Server)
		if err != nil {
			return nil, fmt.Errorf("template: %w", err)
		}
		statement += " TEMPLATE " + template
	}
	// CREATE DATABASE ... TEMPLATE fails while another session is connected
	// to the template; ours only ever is for an instant, so retry briefly.
	for attempt := 0; ; attempt++ {
		_, err = admin.Exec(ctx, statement)
		if err == nil || attempt == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return nil, fmt.Errorf("create database: %w", err)
	}
	return d, nil
}

// Drop drops the database, whoever is still connected to it.
func (d *Database) Drop(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, d.Server)
	if err != nil {
		return fmt.Errorf("drop %s: %w", d.Name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.Name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop %s: %w", d.Name, err)
	}
	return nil
}

// WithDatabase swaps the database name of a postgres:// URL.
func WithDatabase(raw, name string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("EPOCH_DATABASE_URL must be a postgres:// URL: %w", err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// ensureTemplate makes, once per schema version, a migrated template
// database named after a hash of the migrations and their bookkeeping. An
// advisory lock keeps concurrent test binaries from building it twice.
func ensureTemplate(ctx context.Context, admin *pgx.Conn, server string) (string, error) {
	migrations, err := migrate.Load()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	// The table the versions are recorded in is part of what a template
	// holds: one the runner before goose built must not be taken for one
	// goose built, although the files are the same.
	fmt.Fprintf(h, "%s\n", migrate.VersionTable)
	for _, m := range migrations {
		fmt.Fprintf(h, "%d\n%s\n", m.Version, m.SQL)
	}
	name := "epoch_template_" + hex.EncodeToString(h.Sum(nil))[:12]

	if _, err := admin.Exec(ctx, "SELECT pg_advisory_lock(7357)"); err != nil {
		return "", err
	}
	defer admin.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock(7357)") //nolint:errcheck

	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	building := name + "_building"
	if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	buildingURL, err := WithDatabase(server, building)
	if err != nil {
		return "", err
	}
	pool, err := pgxpool.New(ctx, buildingURL)
	if err != nil {
		return "", err
	}
	_, err = migrate.Up(ctx, pool)
	pool.Close()
	if err != nil {
		return "", err
	}
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+building+" RENAME TO "+name); err != nil {
		return "", err
	}
	return name, nil
}
