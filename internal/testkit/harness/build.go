// Package harness runs Epoch as it ships, for programs and for tests: it
// builds the api and worker binaries, starts and stops their processes,
// reads what they expose (readiness, /metrics, pprof, peak RSS), makes the
// Postgres databases and RabbitMQ vhosts they run on, and calls the api.
// Every function returns an error instead of failing a test: the test kits
// (e2ekit, testdb, testbroker) wrap it for tests, and cmd/bench uses it as
// it is.
package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// ModuleRoot is the directory of the module's go.mod.
func ModuleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the epoch module")
	}
	return filepath.Dir(mod), nil
}

// Build builds the module's commands (./cmd/<name>, e.g. api and worker)
// into dir, so what runs is exactly what ships.
func Build(ctx context.Context, root, dir string, names ...string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, n := range names {
		args = append(args, "./cmd/"+n)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", strings.Join(args[3:], " "), err, out)
	}
	return nil
}

// RandomHex is n random bytes in hex: the suffix that keeps the names of
// databases, vhosts and logs apart between runs and tests.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// WaitFor polls cond every interval until it holds, it errs, d passes or
// ctx ends.
func WaitFor(ctx context.Context, d, interval time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(d)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not done after %s", d)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// KeepLogs copies the *.log files of dir into a new temporary directory,
// so the logs of a failed run outlive the directory they were written in,
// and returns where ("" when there were none).
func KeepLogs(dir string) (string, error) {
	logs, _ := filepath.Glob(filepath.Join(dir, "*.log"))
	if len(logs) == 0 {
		return "", nil
	}
	kept, err := os.MkdirTemp("", "epoch-logs-")
	if err != nil {
		return "", err
	}
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(kept, filepath.Base(l)), b, 0o644)
		}
	}
	return kept, nil
}
