// Package e2ekit holds what the tests that run the built binaries share
// (internal/systemtest/e2e against the machine's broker,
// internal/systemtest/clustertest against a three-node cluster): building
// and running the api and worker processes (internal/testkit/harness's,
// failing the test where the harness returns an error), an outside
// consumer recording the exchange, HTTP calls, and the brute-force truth
// that storage and billing are checked against. It is imported by tests
// only.
package e2ekit

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/catacloud/epoch/internal/testkit/harness"
)

// Binaries is a directory holding the api and worker binaries.
type Binaries struct{ Dir string }

// Build builds the module's api and worker into a new temporary directory,
// so a test runs exactly what ships. Remove deletes it.
func Build() (Binaries, error) {
	ctx := context.Background()
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return Binaries{}, err
	}
	dir, err := os.MkdirTemp("", "epoch-e2e-bin-")
	if err != nil {
		return Binaries{}, err
	}
	if err := harness.Build(ctx, root, dir, "api", "worker"); err != nil {
		_ = os.RemoveAll(dir)
		return Binaries{}, err
	}
	return Binaries{Dir: dir}, nil
}

// Remove deletes the binaries' directory.
func (b Binaries) Remove() { _ = os.RemoveAll(b.Dir) }

// logTail is how much of a process's output goes into a failed test's log.
const logTail = 32 << 10

// Proc is one api or worker process of a test (harness.Proc: Name, Addr,
// Pid, Output, Tail, Signal, Kill, Done, Err, Exited, KilledBySIGKILL).
type Proc struct{ *harness.Proc }

// Start starts binary (api or worker) with the EPOCH_ settings in env (the
// parent's EPOCH_ variables are not inherited) and a free EPOCH_HTTP_ADDR.
// The process is killed when t ends; its output goes into the test log
// when t failed.
func (b Binaries) Start(t testing.TB, binary, name string, env map[string]string) *Proc {
	t.Helper()
	addr := FreeAddr(t)
	var vars []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EPOCH_") {
			vars = append(vars, kv)
		}
	}
	vars = append(vars, "EPOCH_HTTP_ADDR="+addr)
	for k, v := range env {
		vars = append(vars, k+"="+v)
	}
	hp, err := harness.Start(filepath.Join(b.Dir, binary), name, addr, vars, "")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proc{hp}
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- output of %s (pid %d, exit: %v) ---\n%s", p.Name, p.Pid(), p.Err(), p.Tail(logTail))
		}
	})
	return p
}

// WaitReady polls /readyz until it answers 200; the process ending or the
// deadline passing fails t.
func (p *Proc) WaitReady(t testing.TB, within time.Duration) {
	t.Helper()
	if err := p.Proc.WaitReady(context.Background(), within); err != nil {
		t.Fatal(err)
	}
}

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Eventually polls cond every 20 ms until it holds; past the deadline it
// fails t with cond's last explanation.
func Eventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %s", what, within, why)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// CtxFor is a context that ends with t (and at most after d).
func CtxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
