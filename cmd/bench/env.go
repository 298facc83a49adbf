package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
)

const (
	defaultDatabaseURL = database.DefaultURL
	defaultAMQPURL     = broker.DefaultURL
)

// env is everything one run owns: its database, its vhost, the built
// binaries and the processes started from them. close undoes all of it.
type env struct {
	log  *slog.Logger
	dir  string // temp dir: binaries and process logs
	root string // module root

	serverURL string // maintenance database the bench creates its own from
	dbName    string
	dbURL     string
	pool      *pgxpool.Pool

	amqpURL string // the bench's own vhost
	vhost   string
	mgmt    *rabbitadmin.Client

	apiBin, workerBin string
	workerErr         error // why there is no worker binary

	adminToken string
	api        *proc
	apiURL     string

	keepLogs bool // a figure failed: close keeps the processes' logs
	// extra is more environment for every process it starts.
	extra []string
}

// sibling is an env of its own database and vhost beside e, with e's
// binaries, whose processes get extra in their environment.
func (e *env) sibling(ctx context.Context, extra ...string) (_ *env, err error) {
	s := &env{log: e.log, root: e.root, adminToken: randomHex(16), apiBin: e.apiBin, workerBin: e.workerBin,
		workerErr: e.workerErr, extra: extra}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.dir, err = os.MkdirTemp("", "epoch-bench-"); err != nil {
		return nil, err
	}
	if err := s.createDatabase(ctx); err != nil {
		return nil, err
	}
	if err := s.createVhost(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

func getenv(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newEnv builds the binaries and creates the database and vhost. On error
// it has already released what it made.
func newEnv(ctx context.Context, log *slog.Logger) (_ *env, err error) {
	e := &env{log: log, adminToken: randomHex(16)}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	if e.dir, err = os.MkdirTemp("", "epoch-bench-"); err != nil {
		return nil, err
	}
	if e.root, err = moduleRoot(ctx); err != nil {
		return nil, err
	}
	if e.apiBin, err = e.build(ctx, "api"); err != nil {
		return nil, err
	}
	// The worker may be missing while it is being written: the figures that
	// need it then report the build error instead of a value.
	if e.workerBin, e.workerErr = e.build(ctx, "worker"); e.workerErr != nil {
		log.Error("no worker binary; the figures that need it will fail", "error", e.workerErr)
	}
	if err := e.createDatabase(ctx); err != nil {
		return nil, err
	}
	if err := e.createVhost(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run the bench inside the epoch module")
	}
	return filepath.Dir(mod), nil
}

func (e *env) build(ctx context.Context, name string) (string, error) {
	bin := filepath.Join(e.dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/"+name)
	cmd.Dir = e.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/%s: %w\n%s", name, err, out)
	}
	return bin, nil
}

func (e *env) createDatabase(ctx context.Context) error {
	e.serverURL = getenv("EPOCH_DATABASE_URL", defaultDatabaseURL)
	admin, err := pgx.Connect(ctx, e.serverURL)
	if err != nil {
		return fmt.Errorf("Postgres is not reachable at %s: %w", e.serverURL, err)
	}
	defer admin.Close(ctx)
	name := "epoch_bench_" + randomHex(6)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	e.dbName = name
	u, err := url.Parse(e.serverURL)
	if err != nil {
		return fmt.Errorf("EPOCH_DATABASE_URL: %w", err)
	}
	u.Path = "/" + name
	e.dbURL = u.String()
	cfg, err := pgxpool.ParseConfig(e.dbURL)
	if err != nil {
		return err
	}
	cfg.MaxConns = 40
	e.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	return err
}

func (e *env) createVhost(ctx context.Context) error {
	base, err := amqp.ParseURI(getenv("EPOCH_AMQP_URL", defaultAMQPURL))
	if err != nil {
		return fmt.Errorf("EPOCH_AMQP_URL: %w", err)
	}
	e.mgmt = rabbitadmin.New(base)
	if err := e.mgmt.Ready(ctx); err != nil {
		return err
	}
	name := "epoch_bench_" + randomHex(6)
	e.vhost = name // set first: close deletes it even if it came up only in part
	e.amqpURL, err = e.mgmt.CreateVhost(ctx, base, name)
	return err
}

// close stops the processes and drops the database and the vhost.
func (e *env) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if e.api != nil {
		e.api.stop()
	}
	if e.pool != nil {
		e.pool.Close()
	}
	if e.dbName != "" {
		if admin, err := pgx.Connect(ctx, e.serverURL); err == nil {
			if _, err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+e.dbName+" WITH (FORCE)"); err != nil {
				e.log.Error("drop database", "error", err)
			}
			_ = admin.Close(ctx)
		}
	}
	if e.vhost != "" {
		if err := e.mgmt.DeleteVhost(ctx, e.vhost); err != nil {
			e.log.Error("delete vhost", "error", err)
		}
	}
	if e.dir != "" {
		if e.keepLogs {
			e.saveLogs()
		}
		_ = os.RemoveAll(e.dir)
	}
}

// saveLogs copies the api's and workers' logs out of the temp dir before
// it goes, so a failed figure can be looked into, and returns where.
func (e *env) saveLogs() string {
	logs, _ := filepath.Glob(filepath.Join(e.dir, "*.log"))
	if len(logs) == 0 {
		return ""
	}
	dir, err := os.MkdirTemp("", "epoch-bench-logs-")
	if err != nil {
		e.log.Error("keep process logs", "error", err)
		return ""
	}
	for _, l := range logs {
		if b, err := os.ReadFile(l); err == nil {
			_ = os.WriteFile(filepath.Join(dir, filepath.Base(l)), b, 0o644)
		}
	}
	e.log.Info("a figure failed: the processes' logs are kept", "dir", dir)
	return dir
}

// startAPI starts the api on a free port and waits until it is ready.
func (e *env) startAPI(ctx context.Context) error {
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	p, err := e.start(ctx, "api", e.apiBin, addr, "EPOCH_ADMIN_TOKEN="+e.adminToken)
	if err != nil {
		return err
	}
	e.api, e.apiURL = p, "http://"+addr
	return nil
}

// startWorker starts a worker with the given roles.
func (e *env) startWorker(ctx context.Context, roles string) (*proc, error) {
	return e.startWorkerOn(ctx, "worker", roles, e.amqpURL)
}

// startWorkerOn starts a worker with the given roles on the broker of
// amqpURL (one URL, or the comma-separated nodes of a cluster); name
// starts the name of its log.
func (e *env) startWorkerOn(ctx context.Context, name, roles, amqpURL string) (*proc, error) {
	if e.workerBin == "" {
		return nil, fmt.Errorf("no worker binary: %w", e.workerErr)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	// The last EPOCH_AMQP_URL in the environment is the one exec passes.
	return e.start(ctx, name+"-"+strings.ReplaceAll(roles, ",", "-"), e.workerBin, addr,
		"EPOCH_WORKER_ROLES="+roles, "EPOCH_AMQP_URL="+amqpURL)
}

func (e *env) start(ctx context.Context, name, bin, addr string, extra ...string) (*proc, error) {
	logPath := filepath.Join(e.dir, name+"-"+randomHex(3)+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"EPOCH_DATABASE_URL="+e.dbURL,
		"EPOCH_AMQP_URL="+e.amqpURL,
		"EPOCH_HTTP_ADDR="+addr,
		"EPOCH_INLINE_SUBSCRIBERS=",
		"EPOCH_PPROF=1", // served only to this loopback port; -pprof reads it
	)
	cmd.Env = append(cmd.Env, e.extra...)
	cmd.Env = append(cmd.Env, extra...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, addr: addr, logPath: logPath, logFile: logFile, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	}()
	if err := p.waitReady(ctx, 90*time.Second); err != nil {
		p.stop()
		return nil, err
	}
	e.log.Info("started", "process", name, "pid", cmd.Process.Pid, "addr", addr)
	return p, nil
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// proc is a started binary.
type proc struct {
	name    string
	cmd     *exec.Cmd
	addr    string
	logPath string
	logFile *os.File
	done    chan struct{}
	waitErr error
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) waitReady(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.name, p.waitErr, p.tail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get("http://" + p.addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s:\n%s", p.name, d, p.tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits; a process that does not stop is killed.
func (p *proc) stop() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
	_ = p.logFile.Close()
}

// tail is the end of the process's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.logPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// peakRSS is the process's peak resident set (VmHWM) in bytes.
func (p *proc) peakRSS() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmHWM in /proc status")
}

// resetPeakRSS starts a new VmHWM window (clear_refs 5), so a peak belongs
// to the phase measured, not to start-up or an earlier phase.
func (p *proc) resetPeakRSS() {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.pid()), []byte("5"), 0)
}

// metricSnapshot is one reading of a process's /metrics: each series by
// its name and labels as written there (`x{phase="claim"}`), and each name
// alone, summed over its labels.
type metricSnapshot map[string]float64

// metrics reads the process's /metrics once.
func (p *proc) metrics(ctx context.Context) (metricSnapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	snap := metricSnapshot{}
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		cut := strings.LastIndexByte(line, ' ')
		if line == "" || line[0] == '#' || cut < 0 {
			continue
		}
		series := line[:cut]
		v, err := strconv.ParseFloat(line[cut+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		snap[series] = v
		if name, _, labelled := strings.Cut(series, "{"); labelled {
			snap[name] += v
		}
	}
	return snap, s.Err()
}

// metric reads one counter or gauge (summed over its labels) from the
// process's /metrics; found is false when the metric is not exposed. A
// name with labels (`x{phase="claim"}`) reads just that series.
func (p *proc) metric(ctx context.Context, name string) (value float64, found bool, err error) {
	snap, err := p.metrics(ctx)
	if err != nil {
		return 0, false, err
	}
	value, found = snap[name]
	return value, found, nil
}

// versions names the services, for the report.
func (e *env) versions(ctx context.Context) (postgres, rabbitmq string) {
	_ = e.pool.QueryRow(ctx, "SHOW server_version").Scan(&postgres)
	var o struct {
		RabbitMQ string `json:"rabbitmq_version"`
	}
	_ = e.mgmt.Do(ctx, http.MethodGet, "/api/overview", nil, &o)
	return postgres, o.RabbitMQ
}
