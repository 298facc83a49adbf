package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/consumer"
	"github.com/catacloud/epoch/internal/delivery/heal"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/ops/opsmetrics"
	"github.com/catacloud/epoch/internal/platform/backoff"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/serve"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/billing"
)

// remoteSubscribers are the subscribers a worker can consume for, by role.
// Their queues are declared whichever roles this worker runs, so events
// wait in them while no worker consumes.
var remoteSubscribers = subscribers.Movable()

// role is one long-running part of the worker.
type role struct {
	name string
	run  func(ctx context.Context) error
}

func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	subscriptions := remoteSubscribers.Subscriptions()
	allTypes := domain.EventTypes()
	topology := func(ch *amqp.Channel) error {
		if err := broker.DeclareTopology(ch, subscriptions, cfg.DeliveryLimit); err != nil {
			return err
		}
		return broker.DeclareUnsubscribed(ch, subscriptions, allTypes)
	}
	switch cfg.DeclareTopology {
	case declareOnly:
		if err := declareWhenReady(ctx, cfg.AMQPURL, topology, cfg.StartupTimeout, logger); err != nil {
			return err
		}
		logger.Info("topology declared")
		return nil
	case declareAtStart:
		if err := declareWhenReady(ctx, cfg.AMQPURL, topology, cfg.StartupTimeout, logger); err != nil {
			return err
		}
	case declareNever:
		// The roles' users may lack the configure right a declare needs;
		// a missing queue shows as a failed consume or unroutable
		// publishes, which /readyz and the relay's metrics report.
		topology = nil
	}

	pool, err := database.Connect(ctx, cfg.DatabaseURL, cfg.DBMaxConns, nil)
	if err != nil {
		return err
	}
	defer pool.Close()

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Every worker exports the outbox backlog and the dead letters, so they
	// are watched whichever roles run (a relay stopped is what the backlog
	// must show).
	ops := opsmetrics.New(opsmetrics.Config{DB: pool, Subscribers: remoteSubscribers, AMQPURL: cfg.AMQPURL, Logger: logger})
	defer ops.Close()
	registry.MustRegister(ops)

	var roles []role
	ready := []func() error{func() error { return ping(ctx, pool) }}
	if slices.Contains(cfg.WorkerRoles, roleRelay) {
		pubs := make([]*broker.Publisher, cfg.RelayLanes)
		for i := range pubs {
			pubs[i], err = broker.NewPublisher(broker.PublisherConfig{URL: cfg.AMQPURL, ConnectionName: fmt.Sprintf("epoch-relay-%d", i+1)}, logger)
			if err != nil {
				return err
			}
		}
		relay, err := outbox.NewRelay(pool, pubs, outbox.Config{
			BatchSize:      cfg.RelayBatchSize,
			PollInterval:   cfg.RelayPollInterval,
			PartitionShare: cfg.RelayPartitionShare,
			AfterConfirm:   crashAfterConfirm(cfg.FaultCrashAfterConfirm, logger),
		}, logger, registry)
		if err != nil {
			return err
		}
		roles = append(roles, role{roleRelay, relay.Run})
		ready = append(ready, func() error {
			for _, pub := range pubs {
				if !pub.Connected() {
					return errors.New("relay is not connected to RabbitMQ")
				}
			}
			return nil
		})
	}
	var consumerPool *pgxpool.Pool
	for _, sub := range remoteSubscribers {
		if !slices.Contains(cfg.WorkerRoles, sub.Name()) {
			continue
		}
		if consumerPool == nil {
			// The subscribers' statements are planned as their pool's
			// settings say, apart from the relay's.
			if consumerPool, err = database.ConnectWith(ctx, cfg.DatabaseURL, cfg.DBMaxConns, nil, consumer.PoolSettings); err != nil {
				return err
			}
			defer consumerPool.Close()
		}
		// On every reconnect a consumer declares again its own queues
		// only: they are quorum queues, there to declare while a majority
		// runs, where the unsubscribed queue is a classic one that lives
		// on one node, and declaring it while that node is down would
		// keep the consumer from consuming at all.
		var ownTopology func(ch *amqp.Channel) error
		if topology != nil {
			own := subscribers.List{sub}.Subscriptions()
			ownTopology = func(ch *amqp.Channel) error { return broker.DeclareTopology(ch, own, cfg.DeliveryLimit) }
		}
		c, err := consumer.New(consumerPool, sub, consumer.Config{
			URL:           cfg.AMQPURL,
			Prefetch:      cfg.ConsumerPrefetch,
			DeliveryLimit: cfg.DeliveryLimit,
			Topology:      ownTopology,
		}, logger, registry)
		if err != nil {
			return err
		}
		healer, err := heal.New(consumerPool, sub, heal.Config{After: cfg.HealAfter, Hold: c.Backlogged}, logger, registry)
		if err != nil {
			return err
		}
		roles = append(roles, role{sub.Name(), c.Run}, role{sub.Name() + " healing", healer.Run})
		if sub.Name() == billing.Name {
			// The billing role also closes the periods' statements,
			// whichever process consumes billing's queue (one closer works
			// at a time, whatever the number of billing workers).
			settings, err := billing.NewSettings(cfg.BillingPeriod, cfg.BillingTimezone, cfg.PricePerGBHour, cfg.Currency)
			if err != nil {
				return err
			}
			closer := billing.NewCloser(pool, billing.CloserConfig{Settings: settings}, logger)
			roles = append(roles, role{"billing-closer", closer.Run})
		}
		name := sub.Name()
		ready = append(ready, func() error {
			if !c.Connected() {
				return fmt.Errorf("%s subscriber is not consuming its queue", name)
			}
			return nil
		})
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// Not ready until the schema is: the api applies the migrations at its
	// start, and a worker started first waits for them.
	var schemaReady atomic.Bool
	ready = append([]func() error{func() error {
		if !schemaReady.Load() {
			return errors.New("the database schema is not applied yet (the api applies it at start)")
		}
		return nil
	}}, ready...)
	srv := &http.Server{
		Handler:           healthHandler(registry, ready, cfg.Pprof),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	logger.Info("worker running", "roles", cfg.WorkerRoles, "addr", ln.Addr().String())

	return supervisor{
		serve: func(ctx context.Context) error { return serve.Run(ctx, srv, ln, cfg.ShutdownTimeout) },
		waitForSchema: func(ctx context.Context) error {
			if err := waitForSchema(ctx, pool, logger); err != nil {
				return err
			}
			schemaReady.Store(true)
			return nil
		},
		roles:           roles,
		shutdownTimeout: cfg.ShutdownTimeout,
		logger:          logger,
	}.run(ctx)
}

// supervisor runs the worker's loops: the HTTP server from the start, and
// the roles once the schema they need is applied.
type supervisor struct {
	serve         func(ctx context.Context) error
	waitForSchema func(ctx context.Context) error
	roles         []role
	// shutdownTimeout bounds the wait for the loops once they are told to
	// stop: run returns then, naming the loops still running.
	shutdownTimeout time.Duration
	logger          *slog.Logger
}

// run runs every loop in one errgroup until ctx ends or one of them fails,
// then stops them all and waits for each (at most shutdownTimeout). A loop
// that fails, or ends by itself while the worker runs, ends the worker, so
// that whatever runs the process restarts it rather than it running on
// half-alive; run returns that loop's error.
func (s supervisor) run(ctx context.Context) error {
	loops, loopCtx := errgroup.WithContext(ctx)
	var mu sync.Mutex
	running := map[string]bool{}
	start := func(name string, loop func(context.Context) error) {
		mu.Lock()
		running[name] = true
		mu.Unlock()
		loops.Go(func() error {
			err := loop(loopCtx)
			mu.Lock()
			delete(running, name)
			mu.Unlock()
			if err == nil && loopCtx.Err() == nil {
				err = errors.New("ended while the worker runs")
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	start("server", s.serve)
	loops.Go(func() error {
		if err := s.waitForSchema(loopCtx); err != nil {
			if loopCtx.Err() != nil {
				return nil // stopped before the schema was there
			}
			return err
		}
		for _, r := range s.roles {
			start(r.name, r.run)
		}
		return nil
	})

	<-loopCtx.Done()
	if ctx.Err() == nil {
		s.logger.Error("worker role failed", "error", context.Cause(loopCtx))
	}
	stopped := make(chan error, 1)
	go func() { stopped <- loops.Wait() }()
	select {
	case err := <-stopped:
		return err
	case <-time.After(s.shutdownTimeout):
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("%v did not stop within the shutdown timeout (%s)", slices.Sorted(maps.Keys(running)), s.shutdownTimeout)
	}
}

// declareWhenReady declares the topology, redialing while RabbitMQ is not
// up yet, at most timeout.
func declareWhenReady(ctx context.Context, url string, topology func(*amqp.Channel) error, timeout time.Duration, logger *slog.Logger) error {
	deadline := time.Now().Add(timeout)
	again := backoff.New(backoff.DefaultMin, backoff.DefaultMax)
	for {
		err := declare(url, topology)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("declare topology: %w", err)
		}
		wait := again.Next()
		logger.Warn("RabbitMQ not ready, retrying", "error", err, "retry_in", wait.String())
		if !backoff.Sleep(ctx, wait) {
			return ctx.Err()
		}
	}
}

func declare(url string, topology func(*amqp.Channel) error) error {
	conn, err := broker.Dial(url, "epoch-topology")
	if err != nil {
		return err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return err
	}
	return topology(ch)
}

func ping(ctx context.Context, pool *pgxpool.Pool) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return pool.Ping(ctx)
}

// healthHandler serves /healthz (the process is up), /readyz (every check
// passes), /metrics and, when asked, pprof.
func healthHandler(registry *prometheus.Registry, ready []func() error, withPprof bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for _, check := range ready {
			if err := check(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = fmt.Fprintf(w, `{"error":{"code":"unavailable","message":%q}}`+"\n", err.Error())
				return
			}
		}
		_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry}))
	if withPprof {
		return serve.WithPprof(mux)
	}
	return mux
}

// crashAfterConfirm is the fault injected by EPOCH_FAULT_CRASH_AFTER_CONFIRM:
// with probability p, the process dies the hardest way there is at the
// worst moment for the outbox, after the broker has a batch and before the
// rows are marked. Nothing may be lost; the tests count on it.
func crashAfterConfirm(p float64, logger *slog.Logger) func() {
	if p <= 0 {
		return nil
	}
	return func() {
		if rand.Float64() < p {
			logger.Warn("fault injection: killing the worker between confirm and delete")
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}

// schemaPoll is the longest a worker started before the schema waits
// before it looks again (from backoff.DefaultMin up).
const schemaPoll = time.Second

// waitForSchema returns once every migration this binary knows is applied,
// saying so once in the log while it waits: the roles' statements need the
// tables the api creates at its start.
func waitForSchema(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	logged := false
	again := backoff.New(backoff.DefaultMin, schemaPoll)
	for {
		pending, err := migrate.Pending(ctx, pool)
		switch {
		case err == nil && pending == 0:
			if logged {
				logger.Info("database schema applied; starting the roles")
			}
			return nil
		case err != nil && !database.IsUnavailable(err):
			return fmt.Errorf("start-up: %w", err)
		case !logged:
			logged = true
			logger.Warn("waiting for the database schema: start the api, which applies it", "pending_migrations", pending, "error", err)
		}
		if !backoff.Sleep(ctx, again.Next()) {
			return ctx.Err()
		}
	}
}
