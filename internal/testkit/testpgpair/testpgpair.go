// Package testpgpair is the one way code on this machine uses the Postgres
// primary and standby of scripts/postgres-pair (the failover tests): the
// lock every user holds, the script's runs, the URLs its `up` prints and
// the postmasters' pids. The pair's ports and state dir are fixed, so there
// is one per machine, and a user kills its primary and promotes its
// standby: whoever uses it holds LockPath exclusive for the whole time,
// taking it down before letting go.
package testpgpair

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// LockPath is the pair's machine-wide lock.
const LockPath = "/tmp/epoch-pgpair.lock"

// Script is the pair's script, relative to the module root.
const Script = "scripts/postgres-pair"

// Replication modes of `up`.
const (
	Sync  = "sync"
	Async = "async"
)

// Nodes of the pair as the script names them: the primary at start, and
// the standby made from it.
const (
	Primary = "primary"
	Standby = "standby"
)

// Lock holds LockPath exclusive until the returned file is closed, polling
// so that ctx can end the wait. waiting, when not nil, is called once if
// somebody else holds it.
func Lock(ctx context.Context, waiting func()) (*os.File, error) {
	return harness.LockFile(ctx, LockPath, "postgres pair lock", waiting)
}

// Run runs the script with args from the module root, bounded by d, and
// returns its stdout (where `up` prints the URLs) and its log (stderr),
// which a failure's error carries too.
func Run(root string, d time.Duration, args ...string) (stdout, log []byte, err error) {
	stdout, log, err = harness.RunScript(root, Script, d, args...)
	if err != nil {
		err = fmt.Errorf("%w: %s", err, bytes.TrimSpace(log))
	}
	return stdout, log, err
}

// URLs are what `up` prints: each server's own URL (database postgres),
// and the two-host URL the binaries take.
type URLs struct {
	Primary  string // EPOCH_PG_PRIMARY_URL
	Standby  string // EPOCH_PG_STANDBY_URL
	Database string // EPOCH_DATABASE_URL: both hosts, target_session_attrs=read-write
}

// Up starts a fresh pair in mode (Sync or Async), whatever pair of ours ran
// before going first, and returns its URLs and the script's log.
func Up(root, mode string, d time.Duration) (URLs, []byte, error) {
	stdout, log, err := Run(root, d, "up", mode)
	if err != nil {
		return URLs{}, log, err
	}
	urls, err := ParseURLs(stdout)
	return urls, log, err
}

// ParseURLs reads the URLs `up` printed, one NAME=value a line.
func ParseURLs(stdout []byte) (URLs, error) {
	var u URLs
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "EPOCH_PG_PRIMARY_URL":
			u.Primary = v
		case "EPOCH_PG_STANDBY_URL":
			u.Standby = v
		case "EPOCH_DATABASE_URL":
			u.Database = v
		}
	}
	if u.Primary == "" || u.Standby == "" || u.Database == "" {
		return URLs{}, fmt.Errorf("%s up printed no URLs of the pair:\n%s", Script, stdout)
	}
	return u, nil
}

// Kill SIGKILLs node's postmaster (Primary or Standby).
func Kill(root, node string, d time.Duration) error { return verb(root, d, "kill", node) }

// Promote promotes the standby and returns once it takes writes.
func Promote(root string, d time.Duration) error { return verb(root, d, "promote") }

// Cut drops the replication traffic between the two, for real (an
// nftables table of the script's own): how is "both" (each way) or "acks"
// (the standby's side only: it still stores the WAL, and the primary never
// learns it did). It needs nft and CAP_NET_ADMIN; a machine without them
// fails, never skips.
func Cut(root, how string, d time.Duration) error { return verb(root, d, "cut", how) }

// Heal removes the cut (a no-op without one).
func Heal(root string, d time.Duration) error { return verb(root, d, "heal") }

// Down stops both servers and removes the pair's state dir and its cut.
func Down(root string, d time.Duration) error { return verb(root, d, "down") }

func verb(root string, d time.Duration, args ...string) error {
	_, _, err := Run(root, d, args...)
	return err
}

// PostmasterPid is node's postmaster pid, from its data folder's pid file
// (in EPOCH_PG_PAIR_DIR, as the script reads it).
func PostmasterPid(node string) (int, error) {
	dir := os.Getenv("EPOCH_PG_PAIR_DIR")
	if dir == "" {
		dir = "/tmp/epoch-postgres-pair"
	}
	b, err := os.ReadFile(filepath.Join(dir, node, "data", "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("postmaster of the %s: %w", node, err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("postmaster of the %s: %w", node, err)
	}
	return pid, nil
}
