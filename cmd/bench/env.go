package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/testkit/harness"
)

// env is one deployment of the bench's own (harness.Deployment: its
// database, vhost and processes) and the bench's pool on its database.
// close undoes all of it.
type env struct {
	*harness.Deployment
	pool      *pgxpool.Pool
	workerErr error // why there is no worker binary
	ownsBin   bool  // close removes the binaries' directory
	keepLogs  bool  // a figure failed: close keeps the processes' logs
}

// benchEnv is the environment of every process the bench starts: no
// subscriber inline, and pprof served (only to its loopback port; -pprof
// reads it).
var benchEnv = []string{"EPOCH_INLINE_SUBSCRIBERS=", "EPOCH_PPROF=1"}

// newEnv builds the binaries and creates the database and vhost. On error
// it has already released what it made.
func newEnv(ctx context.Context, log *slog.Logger) (*env, error) {
	root, err := harness.ModuleRoot(ctx)
	if err != nil {
		return nil, err
	}
	bin, err := os.MkdirTemp("", "epoch-bench-bin-")
	if err != nil {
		return nil, err
	}
	if err := harness.Build(ctx, root, bin, "api"); err != nil {
		_ = os.RemoveAll(bin)
		return nil, err
	}
	// The worker may be missing while it is being written: the figures that
	// need it then report the build error instead of a value.
	workerErr := harness.Build(ctx, root, bin, "worker")
	if workerErr != nil {
		log.Error("no worker binary; the figures that need it will fail", "error", workerErr)
	}
	d, err := harness.NewDeployment(ctx, log, bin, "epoch_bench_", benchEnv...)
	if err != nil {
		_ = os.RemoveAll(bin)
		return nil, err
	}
	e := &env{Deployment: d, workerErr: workerErr, ownsBin: true}
	return e, e.connect(ctx)
}

// sibling is an env of its own database and vhost beside e, with e's
// binaries, whose processes get extra in their environment.
func (e *env) sibling(ctx context.Context, extra ...string) (*env, error) {
	d, err := harness.NewDeployment(ctx, e.Log, e.Bin, "epoch_bench_", slices.Concat(benchEnv, extra)...)
	if err != nil {
		return nil, err
	}
	s := &env{Deployment: d, workerErr: e.workerErr}
	return s, s.connect(ctx)
}

// connect opens the bench's pool on the database, with the app's types
// (what runs in the bench, as B16's closer does, encodes as the binaries
// do); on error it closes e.
func (e *env) connect(ctx context.Context) error {
	cfg, err := pgxpool.ParseConfig(e.DB.URL)
	if err == nil {
		cfg.MaxConns = 40
		cfg.AfterConnect = func(_ context.Context, conn *pgx.Conn) error {
			database.RegisterTypes(conn)
			return nil
		}
		e.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	}
	if err != nil {
		e.close()
	}
	return err
}

// close stops the processes and drops the database and the vhost.
func (e *env) close() {
	if e.pool != nil {
		e.pool.Close()
	}
	kept, err := e.Close(e.keepLogs)
	if err != nil {
		e.Log.Error("close the bench's deployment", "error", err)
	}
	if kept != "" {
		e.Log.Info("a figure failed: the processes' logs are kept", "dir", kept)
	}
	if e.ownsBin {
		_ = os.RemoveAll(e.Bin)
	}
}

// startWorker starts a worker with the given roles.
func (e *env) startWorker(ctx context.Context, roles string) (*harness.Proc, error) {
	return e.startWorkerOn(ctx, "worker", roles, e.Vhost.URL)
}

// startWorkerOn starts a worker with the given roles on the broker of
// amqpURL (one URL, or the comma-separated nodes of a cluster); name
// starts the name of its log.
func (e *env) startWorkerOn(ctx context.Context, name, roles, amqpURL string) (*harness.Proc, error) {
	if e.workerErr != nil {
		return nil, fmt.Errorf("no worker binary: %w", e.workerErr)
	}
	return e.Start(ctx, name+"-"+strings.ReplaceAll(roles, ",", "-"), "worker",
		"EPOCH_WORKER_ROLES="+roles, "EPOCH_AMQP_URL="+amqpURL)
}

// versions names the services, for the report.
func (e *env) versions(ctx context.Context) (postgres, rabbitmq string) {
	_ = e.pool.QueryRow(ctx, "SHOW server_version").Scan(&postgres)
	var o struct {
		RabbitMQ string `json:"rabbitmq_version"`
	}
	_ = e.Vhost.Admin.Do(ctx, http.MethodGet, "/api/overview", nil, &o)
	return postgres, o.RabbitMQ
}
