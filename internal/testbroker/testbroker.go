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
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultURL is the broker tests use when EPOCH_AMQP_URL is not set.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// ServerURL is the broker's URL (default vhost).
func ServerURL() string {
	if u := os.Getenv("EPOCH_AMQP_URL"); u != "" {
		return u
	}
	return DefaultURL
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
	api := newAPI(t, base)
	name := "epoch_test_" + randomHex(6)
	api.do(t, http.MethodPut, "/api/vhosts/"+url.PathEscape(name), nil)
	perm := []byte(`{"configure":".*","write":".*","read":".*"}`)
	api.do(t, http.MethodPut, "/api/permissions/"+url.PathEscape(name)+"/"+url.PathEscape(base.Username), perm)
	t.Cleanup(func() {
		// The vhost goes with its queues and connections.
		if err := api.try(http.MethodDelete, "/api/vhosts/"+url.PathEscape(name), nil); err != nil {
			t.Logf("testbroker: delete vhost %s: %v", name, err)
		}
	})
	u := base
	u.Vhost = name
	amqpURL := u.String()
	waitAMQP(t, amqpURL, 30*time.Second)
	return amqpURL
}

// waitAMQP fails t unless the vhost accepts an AMQP connection within d.
func waitAMQP(t testing.TB, amqpURL string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		conn, err := amqp.DialConfig(amqpURL, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
		if err == nil {
			_ = conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("testbroker: RabbitMQ is not reachable at %s: %v", amqpURL, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type api struct {
	base     string
	user     string
	password string
	client   *http.Client
}

func newAPI(t testing.TB, base amqp.URI) *api {
	t.Helper()
	a := &api{
		base:     os.Getenv("EPOCH_RABBITMQ_MANAGEMENT_URL"),
		user:     base.Username,
		password: base.Password,
		client:   &http.Client{Timeout: 30 * time.Second},
	}
	if a.base == "" {
		a.base = "http://" + net.JoinHostPort(base.Host, "15672")
	}
	enableManagement(t, a)
	return a
}

var enableOnce sync.Once

// enableManagement makes sure the management API answers: when nothing
// listens, it enables the plugin once (on a local broker) and waits. It also
// rides out a broker restart by another test binary.
func enableManagement(t testing.TB, a *api) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := a.try(http.MethodGet, "/api/overview", nil)
		if err == nil {
			return
		}
		var opErr *net.OpError
		if errors.As(err, &opErr) {
			enableOnce.Do(func() {
				if out, err := exec.Command("rabbitmq-plugins", "enable", "rabbitmq_management").CombinedOutput(); err != nil {
					t.Logf("testbroker: rabbitmq-plugins enable rabbitmq_management: %v\n%s", err, out)
				}
			})
		}
		if time.Now().After(deadline) {
			t.Fatalf("testbroker: RabbitMQ management API is not reachable at %s: %v", a.base, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func (a *api) do(t testing.TB, method, path string, body []byte) {
	t.Helper()
	if err := a.try(method, path, body); err != nil {
		t.Fatalf("testbroker: %v", err)
	}
}

func (a *api) try(method, path string, body []byte) error {
	req, err := http.NewRequest(method, a.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.SetBasicAuth(a.user, a.password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, msg)
	}
	return nil
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
