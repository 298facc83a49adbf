// Package testdb gives each test its own migrated Postgres database on the
// real server, so tests run in parallel and twice in a row. The server comes
// from EPOCH_DATABASE_URL (default: the local one); a test fails, never
// skips, when it cannot be reached.
package testdb

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// ServerURL is the URL of the maintenance database tests create theirs
// from: EPOCH_DATABASE_URL, as the binaries read it (database.DefaultURL
// when it is not set).
func ServerURL() string { return harness.DatabaseServerURL() }

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
	db, err := harness.NewDatabase(ctx, "epoch_test_", migrated)
	if err != nil {
		t.Fatalf("testdb: %v", err)
	}
	pool, err := database.Connect(ctx, db.URL, 0, nil) // as the binaries connect
	t.Cleanup(func() {
		if pool != nil {
			pool.Close()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := db.Drop(ctx); err != nil {
			t.Logf("testdb: %v", err)
		}
	})
	if err != nil {
		t.Fatalf("testdb: connect: %v", err)
	}
	return pool, db.URL
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
