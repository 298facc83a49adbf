// Command bench measures Epoch against the limits of the machine it runs
// on. It builds the api and worker, starts them on their own database and
// RabbitMQ vhost (internal/testkit/harness), drives them over HTTP and
// AMQP, and measures each figure of issue 4 (B1–B8) beside a ceiling taken
// in the same run: the same work done without the system (the commands
// through the application's own code without HTTP, raw SQL through pgx,
// raw amqp091-go); B9 bounds
// the preview of a job at domain.MaxJobFiles files, and B10 checks that
// min_position waits do not slow other users' reads. B11–B13 are the relay
// and the latency again on the three-node cluster of
// scripts/rabbitmq-cluster (which the bench brings up when it is down and
// takes down again), each beside a ceiling taken on that cluster, and one
// relay worker process against two. It prints
// one JSON line per figure on stdout and, with -write, rewrites
// BENCHMARKS.md. -quick uses tiny sizes: the test suite runs it so the tool
// cannot rot.
//
//	go run ./cmd/bench -write BENCHMARKS.md
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/testkit/harness"
	"github.com/catacloud/epoch/internal/testkit/testcluster"
)

// sizes are the sizes and durations of a run.
type sizes struct {
	b1Duration  time.Duration
	b1Conc      []int
	b2Events    int
	b3Rate      int
	b3Duration  time.Duration
	rttCount    int
	b4Pairs     int
	b6Files     int
	b6Runs      int
	b7Duration  time.Duration
	b9Files     int           // files in B9's full job
	b9Rounds    int           // rounds of concurrent GETs of it
	b10Waits    int           // min_position waits B10 holds
	b10Duration time.Duration // each of B10's read windows
	b10StatsLag time.Duration // quiet before B10 counts transactions
	drainBudget time.Duration // most a backlog may take to drain
	b14Files    int           // files of B14's large user
	b15Duration time.Duration // B15's load
	b16Users    int           // users whose statements B16 closes
	// clusterEarly opens the cluster when the run starts, beside the
	// single-node figures, instead of just before B11: a fresh `up`
	// takes about 20 s, which the quick run would otherwise add, while a
	// full run must not have it booting under B1.
	clusterEarly bool
	// placementWait is how long a cluster figure waits, after it measured
	// (or before B12's load), for the management API to list the worker's
	// connections, whose nodes its detail gives.
	placementWait time.Duration
}

var fullSizes = sizes{
	b1Duration: 10 * time.Second, b1Conc: []int{1, 8, 32},
	b2Events: 100000, b3Rate: 500, b3Duration: 20 * time.Second, rttCount: 300,
	b4Pairs: 10000, b6Files: 1000, b6Runs: 11, b7Duration: 60 * time.Second,
	b9Files: domain.MaxJobFiles, b9Rounds: 5,
	b10Waits: 500, b10Duration: 3 * time.Second, b10StatsLag: 11 * time.Second,
	drainBudget: 10 * time.Minute, placementWait: 15 * time.Second,
	b14Files: 1_000_000, b15Duration: 60 * time.Second, b16Users: 100_000,
}

var quickSizes = sizes{
	b1Duration: time.Second, b1Conc: []int{1, 8, 32},
	b2Events: 2000, b3Rate: 200, b3Duration: 2 * time.Second, rttCount: 30,
	b4Pairs: 100, b6Files: 50, b6Runs: 3, b7Duration: 3 * time.Second,
	b9Files: 500, b9Rounds: 2,
	b10Waits: 30, b10Duration: time.Second, b10StatsLag: time.Second,
	drainBudget: 2 * time.Minute, clusterEarly: true, placementWait: time.Second,
	b14Files: 5000, b15Duration: 22 * time.Second, b16Users: 2000,
}

func main() {
	quick := flag.Bool("quick", false, "tiny sizes and durations (the test suite's run)")
	write := flag.String("write", "", "rewrite this markdown file (BENCHMARKS.md) with the results")
	only := flag.String("only", "", "comma-separated figures to run (B1,B2,...); default all")
	pprofDir := flag.String("pprof", "", "directory for CPU profiles of the api and worker taken during the figures")
	traces := flag.Bool("traces", false, "the api and workers trace every request and delivery (all sampled) and export it by OTLP/HTTP to a sink in this process, which counts and drops it")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	code := 0
	var sink *harness.TraceReceiver
	if *traces {
		var err error
		if sink, err = exportTraces(); err != nil {
			log.Error("bench failed", "error", err)
			os.Exit(1)
		}
		tracedBacklog = true
	}
	if err := run(ctx, log, os.Stdout, options{quick: *quick, write: *write, only: *only, pprofDir: *pprofDir}); err != nil {
		log.Error("bench failed", "error", err)
		code = 1
	}
	if sink != nil {
		requests, bytes := sink.Received()
		log.Info("traces exported to the sink", "requests", requests, "bytes", bytes)
		sink.Close()
	}
	os.Exit(code)
}

// exportTraces starts the sink and points the processes the bench starts
// (which inherit its environment) at it, every trace sampled, so a run
// measures what tracing costs at its most.
func exportTraces() (*harness.TraceReceiver, error) {
	sink, err := harness.StartTraceReceiver(false)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]string{
		"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": sink.URL, "OTEL_TRACES_SAMPLER": "always_on",
		// The batch processor drops spans when its queue (2,048 by
		// default) is full; a queue that holds a second of the busiest
		// figure's spans keeps them all, so none escapes the cost.
		"OTEL_BSP_MAX_QUEUE_SIZE": "65536",
	} {
		if err := os.Setenv(k, v); err != nil {
			return nil, err
		}
	}
	return sink, nil
}

// run measures the figures (all, or those named in only), prints their
// lines on out and, when write is not empty, rewrites that markdown file.
func run(ctx context.Context, log *slog.Logger, out io.Writer, o options) error {
	quick, write, only := o.quick, o.write, o.only
	want, err := figuresWanted(only)
	if err != nil {
		return err
	}
	if write != "" {
		// Refused before minutes of measuring, not after.
		if dir := filepath.Dir(write); dir != "." {
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return fmt.Errorf("-write %s: no directory %s", write, dir)
			}
		}
	}
	started := time.Now()
	sz := fullSizes
	if quick {
		sz = quickSizes
	}
	// Deferred before the env, so closed after it: whatever happens, the
	// cluster's lock is let go only once its vhost is gone and, if this
	// run started the cluster, the cluster is down.
	clusterOpening := &testcluster.Opening{Open: func(ctx context.Context) (*testcluster.Session, error) { return openCluster(ctx, log) }}
	defer clusterOpening.Close()
	if sz.clusterEarly && (want["B11"] || want["B12"] || want["B13"]) {
		clusterOpening.Start(ctx)
	}
	e, err := newEnv(ctx, log)
	if err != nil {
		return err
	}
	defer e.close()
	if err := e.StartAPI(ctx); err != nil {
		return err
	}
	r := &report{out: json.NewEncoder(out)}
	b := &bench{env: e, sz: sz, r: r, log: log, pprofDir: o.pprofDir, clusterOpening: clusterOpening}
	if o.pprofDir != "" {
		if err := os.MkdirAll(o.pprofDir, 0o755); err != nil {
			return err
		}
	}
	defer func() {
		if b.worker != nil {
			harness.Stop(b.worker)
		}
	}()
	// The order matters: B2 leaves its backlog in the subscriber queues for
	// B8 to drain, B3 and B7 need both empty before they start, and B10
	// needs no storage subscriber running yet (no worker has started). The
	// cluster's figures come last: the single-node worker stops before
	// them (its relay would take their outbox rows), and each stops its
	// own workers.
	phases := []struct {
		fig string
		fn  func(context.Context) error
	}{
		{"B1", b.b1},
		{"B6", b.b6},
		{"B9", b.b9},
		{"B10", b.b10},
		{"B4", b.b4},
		{"B2", b.b2},
		{"B8", b.b8},
		{"B3", b.b3},
		{"B7", b.b7},
		{"B11", b.b11},
		{"B12", b.b12},
		{"B13", b.b13},
		{"B14", b.b14},
		{"B15", b.b15},
		{"B16", b.b16},
	}
	for _, p := range phases {
		if !want[p.fig] {
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		// Each figure starts from a settled database: the dead rows and
		// stale statistics the figure before left are not its cost, and an
		// autovacuum of them should not land in the middle of it.
		if err := settle(ctx, e); err != nil {
			return err
		}
		log.Info("figure", "figure", p.fig)
		if err := p.fn(ctx); err != nil {
			log.Error("figure failed", "figure", p.fig, "error", err)
			r.fail(p.fig, "error", err)
			e.keepLogs = true
		}
	}
	if write != "" {
		cmd := "go run ./cmd/bench -write " + write
		if quick {
			cmd = "go run ./cmd/bench -quick -write " + write
		}
		if only != "" {
			cmd += " -only " + only
		}
		if o.pprofDir != "" {
			cmd += " -pprof " + o.pprofDir
		}
		if err := writeMarkdown(write, r, machine(ctx, e), cmd, started, b.notes); err != nil {
			return fmt.Errorf("write %s: %w", write, err)
		}
	}
	if r.failed() {
		return errors.New("some figures could not be measured (see their error)")
	}
	return nil
}

// options are the command line's.
type options struct {
	quick    bool
	write    string // markdown file to rewrite
	only     string // figures to run
	pprofDir string // where CPU profiles go
}

// bench holds what the figures share: the environment, the sizes, the
// report, and results later figures build on.
type bench struct {
	env *env
	sz  sizes
	r   *report
	log *slog.Logger

	mu       sync.Mutex // guards notes (profiles add theirs from goroutines)
	notes    []string
	pprofDir string

	bestRate   float64       // B1's highest API commands/s: B7's drive rate
	relayRate  float64       // B2: B8's bar
	b2Messages int           // file events B2 left in each subscriber queue
	worker     *harness.Proc // relay+storage+billing, shared by B3 and B7

	clusterOpening *testcluster.Opening // the three-node cluster, for B11–B13
}

func (b *bench) note(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

// pids names the bench's processes, itself included, for the CPU
// breakdown.
func (b *bench) pids(workers ...*harness.Proc) map[int]string {
	m := map[int]string{b.env.API.Pid(): "api", os.Getpid(): "bench"}
	for _, w := range workers {
		if w != nil {
			m[w.Pid()] = "worker"
		}
	}
	return m
}

// settle vacuums and analyzes the bench database and checkpoints.
func settle(ctx context.Context, e *env) error {
	for _, stmt := range []string{"VACUUM ANALYZE", "CHECKPOINT"} {
		if _, err := e.pool.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("settle before a figure: %s: %w", stmt, err)
		}
	}
	return nil
}

// figuresWanted is the set of figures to run for -only: all when empty.
// B5 is measured during B1 and B2, and B8 drains what B2 leaves, so naming
// either runs what it needs. A name that is no figure is refused.
func figuresWanted(only string) (map[string]bool, error) {
	all := []string{"B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11", "B12", "B13", "B14", "B15", "B16"}
	want := map[string]bool{}
	if strings.TrimSpace(only) == "" {
		for _, f := range all {
			want[f] = true
		}
		return want, nil
	}
	for _, f := range strings.Split(only, ",") {
		f = strings.ToUpper(strings.TrimSpace(f))
		if !slices.Contains(all, f) {
			return nil, fmt.Errorf("-only: %q is not a figure (B1 to B13)", f)
		}
		want[f] = true
	}
	if want["B5"] {
		want["B1"], want["B2"] = true, true
	}
	if want["B8"] {
		want["B2"] = true
	}
	return want, nil
}
