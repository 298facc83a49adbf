package clustertest_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testcluster"
)

var (
	bin e2ekit.Binaries
	// root is the module's directory, where the cluster's script is.
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
	// A test here kills the cluster's nodes: nobody else may use it
	// meanwhile.
	lock, err := testcluster.Lock(context.Background(), func() {
		fmt.Fprintf(os.Stderr, "clustertest: waiting for %s (another user of the cluster holds it)\n", testcluster.LockPath)
	})
	if err != nil {
		return fail("%v", err)
	}
	defer lock.Close() // closing it lets go of the lock

	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return fail("go env GOMOD: %v", err)
	}
	root = filepath.Dir(strings.TrimSpace(string(gomod)))
	start := time.Now()
	var log []byte
	nodeURLs, log, err = testcluster.Up(root, 5*time.Minute)
	if err != nil {
		return fail("%s up failed, so the cluster tests cannot run: %v\n%s", testcluster.Script, err, log)
	}
	fmt.Fprintf(os.Stderr, "clustertest: cluster up (%s): %s\n", time.Since(start).Round(time.Millisecond), strings.Join(nodeURLs, ","))

	bin, err = e2ekit.Build()
	if err != nil {
		return fail("%v", err)
	}
	defer bin.Remove()
	return m.Run()
}

// clusterScript runs the cluster's script with args, bounded by d, and
// returns its output (stdout and its log).
func clusterScript(d time.Duration, args ...string) ([]byte, error) {
	stdout, log, err := testcluster.Run(root, d, args...)
	return append(stdout, log...), err
}
