// Package e2ekit holds what the tests that run the built binaries share
// (internal/systemtest/e2e against the machine's broker, internal/systemtest/clustertest against
// a three-node cluster): building and running the api and worker
// processes, an outside consumer recording the exchange, HTTP calls, and
// the brute-force truth that storage and billing are checked against. It
// is imported by tests only.
package e2ekit

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/catacloud/epoch/internal/platform/syncbuf"
)

// Binaries is a directory holding the api and worker binaries.
type Binaries struct{ Dir string }

// Build builds the module's api and worker into a new temporary directory,
// so a test runs exactly what ships. Remove deletes it.
func Build() (Binaries, error) {
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return Binaries{}, fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	dir, err := os.MkdirTemp("", "epoch-e2e-bin-")
	if err != nil {
		return Binaries{}, err
	}
	build := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "./cmd/api", "./cmd/worker")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return Binaries{}, fmt.Errorf("go build: %w\n%s", err, out)
	}
	return Binaries{Dir: dir}, nil
}

// Remove deletes the binaries' directory.
func (b Binaries) Remove() { _ = os.RemoveAll(b.Dir) }

// logTail is how much of a process's output goes into a failed test's log.
const logTail = 32 << 10

// Proc is one api or worker process of a test.
type Proc struct {
	Name string
	Addr string // EPOCH_HTTP_ADDR
	cmd  *exec.Cmd
	out  *syncbuf.Buffer
	done chan struct{} // closed once the process has exited
	err  error         // cmd.Wait's answer, set before done closes
}

// Start starts binary (api or worker) with the EPOCH_ settings in env (the
// parent's EPOCH_ variables are not inherited) and a free EPOCH_HTTP_ADDR.
// The process is killed when t ends; its output goes into the test log
// when t failed.
func (b Binaries) Start(t testing.TB, binary, name string, env map[string]string) *Proc {
	t.Helper()
	p := &Proc{Name: name, Addr: FreeAddr(t), out: &syncbuf.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(b.Dir, binary))
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EPOCH_") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	p.cmd.Env = append(p.cmd.Env, "EPOCH_HTTP_ADDR="+p.Addr)
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("--- output of %s (pid %d, exit: %v) ---\n%s", p.Name, p.cmd.Process.Pid, p.err, p.Tail(logTail))
		}
	})
	return p
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is everything the process wrote so far.
func (p *Proc) Output() string { return p.out.String() }

// Tail is the last n bytes of the process's output.
func (p *Proc) Tail(n int) string {
	out := p.out.String()
	if len(out) > n {
		out = "…" + out[len(out)-n:]
	}
	return out
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig syscall.Signal) error { return p.cmd.Process.Signal(sig) }

// Kill SIGKILLs the process (if it still runs) and waits until it is gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is cmd.Wait's answer; only valid once Done is closed.
func (p *Proc) Err() error { return p.err }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// KilledBySIGKILL reports whether the process ended on SIGKILL (its own or
// ours). Only valid once it has exited.
func (p *Proc) KilledBySIGKILL() bool {
	ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// WaitReady polls /readyz until it answers 200; the process ending or the
// deadline passing fails t.
func (p *Proc) WaitReady(t testing.TB, within time.Duration) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := client.Get("http://" + p.Addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if p.Exited() {
			t.Fatalf("%s exited before it was ready: %v", p.Name, p.err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready within %s (last: %v)", p.Name, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
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
