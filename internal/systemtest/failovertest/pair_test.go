package failovertest_test

import (
	"context"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/catacloud/epoch/internal/testkit/testpgpair"
)

// scriptWait bounds a run of the pair's script.
const scriptWait = 2 * time.Minute

// dbName is the database the binaries use on the pair; a fresh pair per
// test makes it fresh too, and the api migrates it at start.
const dbName = "epoch_failover"

// pair is the test's own primary and standby.
type pair struct {
	t *testing.T
	// database is EPOCH_DATABASE_URL for the binaries (both hosts,
	// target_session_attrs=read-write); primary and standby reach one
	// server each, all on dbName.
	database, primary, standby string
}

// usePair takes the pair's lock for the rest of the test, brings up a
// fresh pair in mode (testpgpair.Sync or Async) and creates the test's
// database on it; the pair goes down when the test ends, before the lock
// is let go.
func usePair(t *testing.T, mode string) *pair {
	t.Helper()
	lock, err := testpgpair.Lock(t.Context(), func() {
		t.Logf("waiting for %s (another user of the Postgres pair holds it)", testpgpair.LockPath)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lock.Close() })
	start := time.Now()
	urls, log, err := testpgpair.Up(root, mode, scriptWait)
	// Registered even when up failed: down removes what a half-started
	// pair left.
	t.Cleanup(func() {
		if err := testpgpair.Down(root, scriptWait); err != nil {
			t.Errorf("%v", err)
		}
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, log)
	}
	t.Logf("%s pair up in %s", mode, time.Since(start).Round(time.Millisecond))
	p := &pair{t: t, database: withDB(t, urls.Database), primary: withDB(t, urls.Primary), standby: withDB(t, urls.Standby)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, urls.Primary)
	if err != nil {
		t.Fatalf("connect to the primary: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return p
}

// withDB is a postgres:// URL (one host or several) naming dbName.
func withDB(t *testing.T, raw string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("pair URL %q: %v", raw, err)
	}
	u.Path = "/" + dbName
	return u.String()
}

// withApplicationName tells a process's Postgres sessions apart.
func withApplicationName(raw, name string) string {
	sep := "?"
	if strings.Contains(raw, "?") {
		sep = "&"
	}
	return raw + sep + "application_name=" + url.QueryEscape(name)
}

// kill SIGKILLs the primary's postmaster and returns when the script was
// asked to (the moment is an upper bound for what the primary did).
func (p *pair) kill() time.Time {
	p.t.Helper()
	at := time.Now()
	if err := testpgpair.Kill(root, testpgpair.Primary, scriptWait); err != nil {
		p.t.Fatal(err)
	}
	return at
}

// promote promotes the standby and returns when pg_ctl promote was
// started: the failover's figures and bounds count from then, so they are
// never shorter than from the end of the promotion.
func (p *pair) promote() time.Time {
	p.t.Helper()
	at := time.Now()
	if err := testpgpair.Promote(root, scriptWait); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("standby promoted in %s", time.Since(at).Round(time.Millisecond))
	return at
}

// cut drops the replication traffic (how: "both" or "acks") until heal;
// the test's end heals too.
func (p *pair) cut(how string) time.Time {
	p.t.Helper()
	p.t.Cleanup(func() { _ = testpgpair.Heal(root, scriptWait) })
	at := time.Now()
	if err := testpgpair.Cut(root, how, scriptWait); err != nil {
		p.t.Fatal(err)
	}
	return at
}

func (p *pair) heal() {
	p.t.Helper()
	if err := testpgpair.Heal(root, scriptWait); err != nil {
		p.t.Fatal(err)
	}
}
