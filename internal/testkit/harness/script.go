package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// LockFile holds the file at path exclusive until the returned file is
// closed, polling so that ctx can end the wait: the servers a test kit
// starts beside the machine's own (a RabbitMQ cluster, a Postgres pair)
// serve one program at a time. waiting, when not nil, is called once if
// somebody else holds it; what names the lock in errors.
func LockFile(ctx context.Context, path, what string, waiting func()) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		if waiting != nil {
			waiting()
			waiting = nil
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// RunScript runs script (a path below root) with args from root, bounded
// by d, and returns its stdout and its log (stderr). The servers a script
// starts do not inherit a LockFile: Go opens files close-on-exec.
func RunScript(root, script string, d time.Duration, args ...string) (stdout, log []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, script), args...)
	cmd.Dir = root
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.Bytes(), errOut.Bytes(), fmt.Errorf("%s %s: %w", script, strings.Join(args, " "), err)
	}
	return out.Bytes(), errOut.Bytes(), nil
}
