// Package testbroker gives each test its own vhost on the real RabbitMQ, so
// broker tests run in parallel and twice in a row. The broker comes from
// EPOCH_AMQP_URL (default: the local one); its management HTTP API (port
// 15672 on the same host, or EPOCH_RABBITMQ_MANAGEMENT_URL) creates and
// deletes the vhosts. A test fails, never skips, when the broker cannot be
// reached.
//
// A few tests must restart the whole broker. They call NewExclusive: it waits
// until no other broker test runs (in any test binary on this machine: the
// lock is a file lock), and holds new ones back until it ends. A test may
// call New more than once (it holds the lock once); NewExclusive must be its
// only call.
package testbroker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/broker"
	"github.com/catacloud/epoch/internal/rabbitadmin"
)

// ServerURL is the broker's URL (default vhost): EPOCH_AMQP_URL, as the
// binaries read it (broker.DefaultURL when it is not set).
func ServerURL() string {
	if u := os.Getenv("EPOCH_AMQP_URL"); u != "" {
		return u
	}
	return broker.DefaultURL
}

// New creates a fresh vhost for t (guest has full permissions on it) and
// deletes it when t ends. It returns the vhost's AMQP URL.
func New(t testing.TB) string {
	t.Helper()
	lock(t, syscall.LOCK_SH)
	return newVhost(t)
}

// NewExclusive is New for a test that disturbs the whole broker (stop_app,
// start_app): it runs alone among broker tests.
func NewExclusive(t testing.TB) string {
	t.Helper()
	lock(t, syscall.LOCK_EX)
	return newVhost(t)
}

// Vhost returns the vhost of an AMQP URL made by New.
func Vhost(t testing.TB, amqpURL string) string {
	t.Helper()
	u, err := amqp.ParseURI(amqpURL)
	if err != nil {
		t.Fatalf("testbroker: parse %s: %v", amqpURL, err)
	}
	return u.Vhost
}

// CloseConnections closes every client connection of the vhost, the way an
// operator's `rabbitmqctl close_all_connections` does, without touching
// other tests' vhosts.
func CloseConnections(t testing.TB, amqpURL string) {
	t.Helper()
	rabbitmqctl(t, "close_all_connections", "-p", Vhost(t, amqpURL), "testbroker: closed by test")
}

// RestartApp stops and starts the RabbitMQ application (rabbitmqctl
// stop_app, then start_app after down), and waits until the vhost accepts
// connections again. Only for tests that called NewExclusive.
func RestartApp(t testing.TB, amqpURL string, down time.Duration) {
	t.Helper()
	rabbitmqctl(t, "stop_app")
	time.Sleep(down)
	rabbitmqctl(t, "start_app")
	waitAMQP(t, amqpURL, 60*time.Second)
}

func rabbitmqctl(t testing.TB, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rabbitmqctl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("testbroker: rabbitmqctl %v: %v\n%s", args, err, out)
	}
}

func newVhost(t testing.TB) string {
	t.Helper()
	base, err := amqp.ParseURI(ServerURL())
	if err != nil {
		t.Fatalf("testbroker: EPOCH_AMQP_URL: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	admin := rabbitadmin.New(base)
	if err := admin.Ready(ctx); err != nil {
		t.Fatalf("testbroker: %v", err)
	}
	name := "epoch_test_" + randomHex(6)
	amqpURL, err := admin.CreateVhost(ctx, base, name)
	t.Cleanup(func() {
		// The vhost goes with its queues and connections.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := admin.DeleteVhost(ctx, name); err != nil {
			t.Logf("testbroker: delete vhost %s: %v", name, err)
		}
	})
	if err != nil {
		t.Fatalf("testbroker: %v", err)
	}
	return amqpURL
}

// waitAMQP fails t unless the vhost accepts an AMQP connection within d.
func waitAMQP(t testing.TB, amqpURL string, d time.Duration) {
	t.Helper()
	if err := rabbitadmin.WaitAMQP(context.Background(), amqpURL, d); err != nil {
		t.Fatalf("testbroker: %v", err)
	}
}

// locked records the tests that hold the broker test lock in this process.
var locked = struct {
	sync.Mutex
	tests map[testing.TB]bool
}{tests: map[testing.TB]bool{}}

// lock takes the machine-wide broker test lock, shared or exclusive, until
// t ends. A gate file gives a waiting exclusive test priority over shared
// ones that arrive after it, so it is not starved. A test takes it once:
// asking again while holding it would queue behind a waiting exclusive test
// that in turn waits for this one, a deadlock across test binaries, so a
// second New of the same test goes straight through.
func lock(t testing.TB, how int) {
	t.Helper()
	locked.Lock()
	already := locked.tests[t]
	locked.tests[t] = true
	locked.Unlock()
	if already {
		if how == syscall.LOCK_EX {
			t.Fatal("testbroker: NewExclusive in a test that already called New")
		}
		return
	}
	t.Cleanup(func() {
		locked.Lock()
		delete(locked.tests, t)
		locked.Unlock()
	})
	dir := os.TempDir()
	gate := openLock(t, filepath.Join(dir, "epoch-testbroker.gate"))
	main := openLock(t, filepath.Join(dir, "epoch-testbroker.lock"))
	flock(t, gate, how)
	flock(t, main, how)
	if how == syscall.LOCK_SH {
		_ = gate.Close() // a shared holder only passes the gate
	} else {
		t.Cleanup(func() { _ = gate.Close() })
	}
	t.Cleanup(func() { _ = main.Close() })
}

func openLock(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		t.Fatalf("testbroker: lock file: %v", err)
	}
	return f
}

func flock(t testing.TB, f *os.File, how int) {
	t.Helper()
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EINTR) {
			t.Fatalf("testbroker: flock: %v", err)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
