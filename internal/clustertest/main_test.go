package clustertest_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/catacloud/epoch/internal/e2ekit"
)

// lockPath serialises every use of the machine's one test cluster: its
// nodes, ports and state dir are fixed, and a test here kills its nodes.
const lockPath = "/tmp/epoch-cluster.lock"

var (
	bin e2ekit.Binaries
	// root is the module's directory, where scripts/rabbitmq-cluster is.
	root string
	// nodeURLs are the cluster's AMQP URLs (default vhost), as `up` prints
	// them, in node order a, b, c.
	nodeURLs []string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "clustertest: "+format+"\n", args...)
		return 1
	}
	lock, err := os.OpenFile(lockPath, os.O_CREATE|os.O_RDWR, 0o666)
	if err != nil {
		return fail("cluster lock: %v", err)
	}
	defer lock.Close() // closing it lets go of the lock
	if err := flock(lock, syscall.LOCK_EX|syscall.LOCK_NB); errors.Is(err, syscall.EWOULDBLOCK) {
		fmt.Fprintf(os.Stderr, "clustertest: waiting for %s (another user of the cluster holds it)\n", lockPath)
		err = flock(lock, syscall.LOCK_EX)
		if err != nil {
			return fail("cluster lock: %v", err)
		}
	} else if err != nil {
		return fail("cluster lock: %v", err)
	}

	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fail("go env GOMOD: %v", err)
	}
	root = filepath.Dir(strings.TrimSpace(string(gomod)))
	start := time.Now()
	out, err := clusterScript(5*time.Minute, "up")
	if err != nil {
		return fail("scripts/rabbitmq-cluster up failed, so the cluster tests cannot run: %v\n%s", err, out)
	}
	nodeURLs, err = parseURLs(out)
	if err != nil {
		return fail("%v\n%s", err, out)
	}
	fmt.Fprintf(os.Stderr, "clustertest: cluster up (%s): %s\n", time.Since(start).Round(time.Millisecond), strings.Join(nodeURLs, ","))

	bin, err = e2ekit.Build()
	if err != nil {
		return fail("%v", err)
	}
	defer bin.Remove()
	return m.Run()
}

// parseURLs finds `up`'s last line, EPOCH_AMQP_URL=<a>,<b>,<c>.
func parseURLs(out []byte) ([]string, error) {
	var line string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "EPOCH_AMQP_URL="); ok {
			line = v
		}
	}
	urls := strings.Split(line, ",")
	if len(urls) != len(nodes) {
		return nil, fmt.Errorf("scripts/rabbitmq-cluster up printed no EPOCH_AMQP_URL with %d nodes", len(nodes))
	}
	return urls, nil
}

// clusterScript runs scripts/rabbitmq-cluster with args, bounded by d, and
// returns its output (stdout and stderr).
func clusterScript(d time.Duration, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "rabbitmq-cluster"), args...)
	cmd.Dir = root
	return cmd.CombinedOutput()
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
