package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/catacloud/epoch/internal/platform/syncbuf"
)

// Proc is a started api or worker process.
type Proc struct {
	Name string
	Addr string // its EPOCH_HTTP_ADDR
	cmd  *exec.Cmd
	log  string          // the file its output goes to, or
	mem  *syncbuf.Buffer // its output, kept in memory
	done chan struct{}   // closed once the process has exited
	err  error           // cmd.Wait's answer, set before done closes
}

// Start starts binary as name, with env as its whole environment (which
// must hold EPOCH_HTTP_ADDR=addr), its output written to the file log or,
// when log is empty, kept in memory. It does not wait until the process is
// ready (WaitReady).
func Start(binary, name, addr string, env []string, log string) (*Proc, error) {
	p := &Proc{Name: name, Addr: addr, log: log, done: make(chan struct{})}
	p.cmd = exec.Command(binary)
	p.cmd.Env = env
	var out io.Writer
	var file *os.File
	if log == "" {
		p.mem = &syncbuf.Buffer{}
		out = p.mem
	} else {
		var err error
		if file, err = os.Create(log); err != nil {
			return nil, err
		}
		out = file
	}
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		if file != nil {
			_ = file.Close()
		}
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		if file != nil {
			_ = file.Close()
		}
		close(p.done)
	}()
	return p, nil
}

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Output is everything the process wrote so far.
func (p *Proc) Output() string {
	if p.mem != nil {
		return p.mem.String()
	}
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// Tail is the last n bytes of the process's output.
func (p *Proc) Tail(n int) string {
	out := p.Output()
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

// Stop sends SIGTERM and waits until the process has exited; one still
// running after grace is killed.
func (p *Proc) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.Kill()
	}
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

// WaitReady polls /readyz until it answers 200; the process ending, ctx
// ending or within passing is an error.
func (p *Proc) WaitReady(ctx context.Context, within time.Duration) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(within)
	for {
		resp, err := client.Get("http://" + p.Addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz answered %s", resp.Status)
		}
		if p.Exited() {
			return fmt.Errorf("%s exited before it was ready: %v", p.Name, p.err)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready within %s (last: %v)", p.Name, within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PeakRSS is the process's peak resident set (VmHWM) in bytes.
func (p *Proc) PeakRSS() (int64, error) {
	return procKB(fmt.Sprintf("/proc/%d/status", p.Pid()), "VmHWM:")
}

// ResetPeakRSS starts a new VmHWM window (clear_refs 5), so a peak belongs
// to the phase measured, not to start-up or an earlier phase.
func (p *Proc) ResetPeakRSS() {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.Pid()), []byte("5"), 0)
}

// MemTotal is the machine's memory in bytes (/proc/meminfo).
func MemTotal() (int64, error) { return procKB("/proc/meminfo", "MemTotal:") }

// procKB reads the line of a /proc file that starts with key, a number of
// kB, in bytes.
func procKB(path, key string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), key); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no %s in %s", strings.TrimSuffix(key, ":"), path)
}

// ErrNoProfile is a process that serves no CPU profile: pprof is served
// only when EPOCH_PPROF is set.
var ErrNoProfile = errors.New("pprof not served")

// CPUProfile takes a CPU profile of the process over d (its pprof
// endpoint) and writes it to path.
func (p *Proc) CPUProfile(ctx context.Context, d time.Duration, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.Addr, max(1, int(d.Seconds())))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Timeout: d + 30*time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w (%s)", ErrNoProfile, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, resp.Body)
	return errors.Join(err, f.Close())
}
