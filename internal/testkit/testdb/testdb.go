// Package testdb gives each test its own migrated Postgres database on the
// real server, so tests run in parallel and twice in a row. The server comes
// from EPOCH_DATABASE_URL (default: the local one); a test fails, never
// skips, when it cannot be reached.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/platform/database"
)

// ServerURL is the URL of the maintenance database tests create theirs
// from: EPOCH_DATABASE_URL, as the binaries read it (database.DefaultURL
// when it is not set).
func ServerURL() string {
	if u := os.Getenv("EPOCH_DATABASE_URL"); u != "" {
		return u
	}
	return database.DefaultURL
}

// New creates a fresh, migrated database for t and drops it when t ends.
// It returns the pool and the database's URL (for a subprocess or a second
// pool).
func New(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return create(t, true)
}

// Empty creates a database for t with no schema at all (for migration
// tests) and drops it when t ends.
func Empty(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	return create(t, false)
}

// create makes t's database, a copy of the migrated template when migrated
// is true, and connects to it as the binaries do.
func create(t testing.TB, migrated bool) (*pgxpool.Pool, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	admin, err := pgx.Connect(ctx, ServerURL())
	if err != nil {
		t.Fatalf("testdb: Postgres is not reachable at %s: %v", ServerURL(), err)
	}
	defer admin.Close(ctx)

	name := "epoch_test_" + randomHex(6)
	statement := "CREATE DATABASE " + name
	if migrated {
		template, err := ensureTemplate(ctx, admin)
		if err != nil {
			t.Fatalf("testdb: template: %v", err)
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
		t.Fatalf("testdb: create database: %v", err)
	}
	url := withDatabase(t, ServerURL(), name)
	pool, err := database.Connect(ctx, url, 0, nil) // as the binaries connect
	if err != nil {
		t.Fatalf("testdb: connect: %v", err)
	}
	dropWhenDone(t, pool, name)
	return pool, url
}

// dropWhenDone closes pool and drops database name when t ends.
func dropWhenDone(t testing.TB, pool *pgxpool.Pool, name string) {
	t.Cleanup(func() {
		pool.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, ServerURL())
		if err != nil {
			t.Logf("testdb: drop %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", name)); err != nil {
			t.Logf("testdb: drop %s: %v", name, err)
		}
	})
}

// ensureTemplate makes, once per schema version, a migrated template
// database named after a hash of the migrations and their bookkeeping. An advisory lock keeps
// concurrent test binaries from building it twice.
func ensureTemplate(ctx context.Context, admin *pgx.Conn) (string, error) {
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
	pool, err := pgxpool.New(ctx, withDatabaseURL(ServerURL(), building))
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

func withDatabase(t testing.TB, raw, name string) string {
	t.Helper()
	return withDatabaseURL(raw, name)
}

// withDatabaseURL swaps the database name of a postgres:// URL.
func withDatabaseURL(raw, name string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(fmt.Sprintf("testdb: EPOCH_DATABASE_URL must be a postgres:// URL: %v", err))
	}
	u.Path = "/" + name
	return u.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Held is a transaction a test holds open across its steps (a writer
// that commits late, or never): InTx's, run on a goroutine of its own
// until Commit or Rollback. Use Tx only from the test's goroutine.
type Held struct {
	Tx   *database.Tx
	end  chan error
	done chan error
	once sync.Once
	err  error
}

var errHeldRolledBack = errors.New("testdb: held transaction rolled back")

// Hold begins a transaction on pool, rolled back when t ends unless
// committed before.
func Hold(t testing.TB, pool *pgxpool.Pool) *Held {
	h := &Held{end: make(chan error), done: make(chan error, 1)}
	began := make(chan *database.Tx)
	go func() {
		h.done <- database.InTx(context.Background(), pool, func(tx *database.Tx) error {
			began <- tx
			return <-h.end
		})
	}()
	h.Tx = <-began
	t.Cleanup(func() { _ = h.Rollback() })
	return h
}

// Commit commits the held transaction.
func (h *Held) Commit() error { return h.finish(nil) }

// Rollback rolls the held transaction back.
func (h *Held) Rollback() error {
	if err := h.finish(errHeldRolledBack); !errors.Is(err, errHeldRolledBack) {
		return err
	}
	return nil
}

func (h *Held) finish(err error) error {
	h.once.Do(func() { h.end <- err; h.err = <-h.done })
	return h.err
}
