// Package testcluster is the one way code on this machine uses the
// three-node RabbitMQ cluster of scripts/rabbitmq-cluster (the cluster
// tests, the bench): the lock every user holds, the script's runs, the
// URLs its `up` prints, the pids of the nodes' VMs, and a program's
// session on it (Session: the lock held, the cluster up, a vhost of its
// own, where it put the queues and connections). The cluster's nodes,
// ports and state dir are fixed, so there is one per machine, and a user
// kills and stops its nodes: whoever uses it holds LockPath exclusive for
// the whole time, taking it down (if it does) before letting go.
package testcluster

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

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// LockPath is the cluster's machine-wide lock (scripts/test takes it with
// `flock -o`, so the nodes it starts do not inherit it).
const LockPath = "/tmp/epoch-cluster.lock"

// Script is the cluster's script, relative to the module root.
const Script = "scripts/rabbitmq-cluster"

// Nodes are the cluster's nodes as the script names them (rabbit_a, _b and
// _c@localhost), in the order `up` prints their URLs.
var Nodes = []string{"a", "b", "c"}

// Lock holds LockPath exclusive until the returned file is closed, polling
// so that ctx can end the wait. waiting, when not nil, is called once if
// somebody else holds it.
func Lock(ctx context.Context, waiting func()) (*os.File, error) {
	return harness.LockFile(ctx, LockPath, "cluster lock", waiting)
}

// Run runs the script with args from the module root, bounded by d, and
// returns its stdout (where `up` prints the URLs) and its log (stderr).
func Run(root string, d time.Duration, args ...string) (stdout, log []byte, err error) {
	return harness.RunScript(root, Script, d, args...)
}

// Up runs `up` (which starts only what is not running) and returns the
// nodes' URLs it prints (URLs) and its log.
func Up(root string, d time.Duration) ([]string, []byte, error) {
	stdout, log, err := Run(root, d, "up")
	if err != nil {
		return nil, log, err
	}
	urls, err := URLs(stdout)
	return urls, log, err
}

// URLs reads the nodes' URLs from what `up` printed: its last line
// EPOCH_AMQP_URL=<a>,<b>,<c>.
func URLs(stdout []byte) ([]string, error) {
	var line string
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "EPOCH_AMQP_URL="); ok {
			line = v
		}
	}
	urls, err := broker.ParseURLs(line)
	if err == nil && len(urls) != len(Nodes) {
		err = fmt.Errorf("%d URLs for %d nodes", len(urls), len(Nodes))
	}
	if err != nil {
		return nil, fmt.Errorf("%s up printed no EPOCH_AMQP_URL of the cluster (%w):\n%s", Script, err, stdout)
	}
	return urls, nil
}

// BeamPid is the pid of node n's VM, from the script's state dir
// (EPOCH_CLUSTER_DIR, as the script reads it).
func BeamPid(n string) (int, error) {
	dir := os.Getenv("EPOCH_CLUSTER_DIR")
	if dir == "" {
		dir = "/tmp/epoch-rabbitmq-cluster"
	}
	b, err := os.ReadFile(filepath.Join(dir, n, "beam.pid"))
	if err != nil {
		return 0, fmt.Errorf("pid of rabbit_%s: %w", n, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("pid of rabbit_%s: %w", n, err)
	}
	return pid, nil
}

// Cut cuts node n off from the other two nodes for real (the script's
// `cut`: an nftables table of its own drops the distribution traffic
// between n and them, both ways), bounded by d. Clients and the CLI still
// reach every node, so a test can watch n pause itself (the cluster runs
// pause_minority). It needs nft and CAP_NET_ADMIN; a machine without them
// fails, never skips. Heal undoes it; `up` and `down` do too.
func Cut(root, n string, d time.Duration) error {
	return runVerb(root, d, "cut", n)
}

// Heal removes the cut, whichever node it was (a no-op without one),
// bounded by d. The paused node rejoins the others by itself.
func Heal(root, n string, d time.Duration) error {
	return runVerb(root, d, "heal", n)
}

// runVerb runs a verb whose log matters only when it fails.
func runVerb(root string, d time.Duration, args ...string) error {
	if _, log, err := Run(root, d, args...); err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(log))
	}
	return nil
}
