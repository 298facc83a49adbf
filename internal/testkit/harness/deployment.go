package harness

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Deployment is an Epoch of a program's own (the bench's): a database and
// a vhost of its own, the binaries of a directory, and the processes
// started from them, each logging into a directory of the deployment's.
// Close undoes all of it.
type Deployment struct {
	Log        *slog.Logger
	Bin        string // the directory holding the api and worker binaries
	Dir        string // the processes' logs
	DB         *Database
	Vhost      *Vhost
	AdminToken string
	API        *Proc  // the api StartAPI started
	APIURL     string // its http:// URL
	Env        []string
}

// NewDeployment makes a database (empty: the api migrates it when it
// starts) and a vhost, both named prefix and a random suffix, for the
// binaries in bin; env is more environment for every process it starts.
// On error it has already released what it made.
func NewDeployment(ctx context.Context, log *slog.Logger, bin, prefix string, env ...string) (_ *Deployment, err error) {
	d := &Deployment{Log: log, Bin: bin, AdminToken: RandomHex(16), Env: env}
	defer func() {
		if err != nil {
			_, _ = d.Close(false)
		}
	}()
	if d.Dir, err = os.MkdirTemp("", prefix); err != nil {
		return nil, err
	}
	if d.DB, err = NewDatabase(ctx, prefix, false); err != nil {
		return nil, err
	}
	if d.Vhost, err = NewVhost(ctx, prefix); err != nil {
		return nil, err
	}
	return d, nil
}

// StartAPI starts the api (the deployment's admin token its
// EPOCH_ADMIN_TOKEN) and waits until it is ready.
func (d *Deployment) StartAPI(ctx context.Context) (err error) {
	if d.API, err = d.Start(ctx, "api", "api", "EPOCH_ADMIN_TOKEN="+d.AdminToken); err == nil {
		d.APIURL = "http://" + d.API.Addr
	}
	return err
}

// Start starts binary (api or worker) of the deployment's as name on a
// free port, with the parent's environment, the deployment's database,
// vhost and Env, and then env (the last of a variable is the one that
// counts), and waits until it is ready.
func (d *Deployment) Start(ctx context.Context, name, binary string, env ...string) (*Proc, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	vars := append(os.Environ(), "EPOCH_DATABASE_URL="+d.DB.URL, "EPOCH_AMQP_URL="+d.Vhost.URL, "EPOCH_HTTP_ADDR="+addr)
	vars = append(append(vars, d.Env...), env...)
	log := filepath.Join(d.Dir, name+"-"+RandomHex(3)+".log")
	p, err := Start(filepath.Join(d.Bin, binary), name, addr, vars, log)
	if err != nil {
		return nil, err
	}
	if err := p.WaitReady(ctx, 90*time.Second); err != nil {
		Stop(p)
		return nil, fmt.Errorf("%w:\n%s", err, p.Tail(3000))
	}
	d.Log.Info("started", "process", name, "pid", p.Pid(), "addr", addr)
	return p, nil
}

// Stop stops a process, killing it if it has not stopped after 30 s.
func Stop(p *Proc) { p.Stop(30 * time.Second) }

// NewUser creates a user through the api and a client acting as it on
// conns connections.
func (d *Deployment) NewUser(ctx context.Context, name string, conns int) (*Client, error) {
	return NewUser(ctx, d.APIURL, d.AdminToken, name, conns)
}

// Close stops the api, drops the database and deletes the vhost and the
// logs; with keepLogs it first copies the logs elsewhere (KeepLogs) and
// returns where.
func (d *Deployment) Close(keepLogs bool) (kept string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if d.API != nil {
		Stop(d.API)
	}
	var errs []error
	if d.DB != nil {
		errs = append(errs, d.DB.Drop(ctx))
	}
	if d.Vhost != nil {
		errs = append(errs, d.Vhost.Delete(ctx))
	}
	if d.Dir != "" {
		if keepLogs {
			var err error
			kept, err = KeepLogs(d.Dir)
			errs = append(errs, err)
		}
		_ = os.RemoveAll(d.Dir)
	}
	return kept, errors.Join(errs...)
}
