// Command api serves Epoch's HTTP API: it applies pending migrations under
// an advisory lock, then answers commands and reads until SIGTERM or
// SIGINT, when it stops accepting and lets in-flight requests finish.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	amqp "github.com/rabbitmq/amqp091-go"
	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/commandside/backpressure"
	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/ops/janitor"
	"github.com/catacloud/epoch/internal/ops/migrate"
	"github.com/catacloud/epoch/internal/platform/backoff"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/process"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/platform/serve"
	"github.com/catacloud/epoch/internal/platform/tracing"
	"github.com/catacloud/epoch/internal/subscribers"
)

// config is the api's environment (prefix EPOCH_). `api --help` lists it.
// A default that a package uses is that package's exported constant; the
// tag repeats it (envconfig cannot name a constant), and internal/systemtest/deploy's
// TestDefaultsHaveOneHome keeps the two equal.
type config struct {
	DatabaseURL       string        `envconfig:"DATABASE_URL" default:"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable" desc:"Postgres connection URL"`
	DBMaxConns        int32         `envconfig:"DB_MAX_CONNS" default:"8" desc:"most Postgres connections the api opens (commands beyond it wait for one)"`
	DBTimeout         time.Duration `envconfig:"DB_TIMEOUT" default:"10s" desc:"bound on one request's database work; past it the request answers 503"`
	OutboxMaxBacklog  int64         `envconfig:"OUTBOX_MAX_BACKLOG" default:"500" desc:"events waiting in the outbox past which, while a relay works through them, commands run a quarter of DB_MAX_CONNS at a time (backpressure); 0: never"`
	TokenCacheTTL     time.Duration `envconfig:"TOKEN_CACHE_TTL" default:"30s" desc:"how long the api remembers a bearer token's user instead of looking it up again (a rotation drops it on every api process at once); 0: looks it up on every request"`
	MaxWaitsPerUser   int           `envconfig:"MAX_WAITS_PER_USER" default:"8" desc:"min_position waits one user may hold at once in this api process; the next answers 429"`
	StartupTimeout    time.Duration `envconfig:"STARTUP_TIMEOUT" default:"60s" desc:"how long start-up waits for Postgres to answer before giving up"`
	AMQPURL           string        `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/" desc:"RabbitMQ URL (shared configuration; the api does not publish itself: the worker's relay does). GET /v1/admin/status reads its vhost's queues"`
	ManagementURL     string        `envconfig:"RABBITMQ_MANAGEMENT_URL" default:"http://guest:guest@127.0.0.1:15672" desc:"RabbitMQ management API, with the user that reads queue depths for GET /v1/admin/status (without one: AMQP_URL's user); unreachable: queue_messages is null"`
	ManagementTimeout time.Duration `envconfig:"RABBITMQ_MANAGEMENT_TIMEOUT" default:"2s" desc:"bound on GET /v1/admin/status's wait for the management API"`
	HTTPAddr          string        `envconfig:"HTTP_ADDR" default:":8080" desc:"address the HTTP API listens on"`
	AdminToken        string        `envconfig:"ADMIN_TOKEN" desc:"bearer token for POST /v1/users; empty: that call answers 403"`
	PricePerGBHour    string        `envconfig:"PRICE_PER_GB_HOUR" default:"0.00003" desc:"price of one GB-hour (10^9 bytes for an hour), a decimal"`
	Currency          string        `envconfig:"CURRENCY" default:"USD" desc:"currency of the price (ISO 4217)"`
	BillingPeriod     string        `envconfig:"BILLING_PERIOD" default:"month" desc:"billing period: month (calendar months in EPOCH_BILLING_TIMEZONE) or a Go duration of at least 1s (10s, 1h), counted from 1970-01-01T00:00:00Z"`
	BillingTimezone   string        `envconfig:"BILLING_TIMEZONE" default:"UTC" desc:"IANA time zone whose calendar months are the billing periods"`
	InlineSubscribers []string      `envconfig:"INLINE_SUBSCRIBERS" desc:"comma-separated movable subscribers (storage, billing) to run inline in the command's transaction; the others run in the worker"`
	ShutdownTimeout   time.Duration `envconfig:"SHUTDOWN_TIMEOUT" default:"25s" desc:"on SIGTERM, how long in-flight requests may take to finish"`
	Pprof             bool          `envconfig:"PPROF" default:"false" desc:"serve /debug/pprof/ on HTTP_ADDR too (no token: keep it off where the port is public)"`
}

// janitorInterval is how often expired idempotency keys and pruned inbox
// rows are deleted.
const janitorInterval = 10 * time.Minute

func main() {
	process.Main("api", "api serves Epoch's HTTP API.", checkConfig, run)
}

// checkConfig refuses settings envconfig parses but the api cannot use.
func checkConfig(c *config) error {
	if c.OutboxMaxBacklog < 0 {
		return fmt.Errorf("EPOCH_OUTBOX_MAX_BACKLOG must not be negative, got %d", c.OutboxMaxBacklog)
	}
	if c.MaxWaitsPerUser < 1 {
		return fmt.Errorf("EPOCH_MAX_WAITS_PER_USER must be at least 1, got %d", c.MaxWaitsPerUser)
	}
	if c.ManagementTimeout <= 0 {
		return fmt.Errorf("EPOCH_RABBITMQ_MANAGEMENT_TIMEOUT must be positive, got %s", c.ManagementTimeout)
	}
	if c.TokenCacheTTL < 0 {
		return fmt.Errorf("EPOCH_TOKEN_CACHE_TTL must not be negative, got %s", c.TokenCacheTTL)
	}
	return nil
}

// run starts the api and serves until ctx ends.
func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	statements := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "epoch_db_statements_total",
		Help: "Statements the api sent to Postgres for requests (background work has a pool of its own, not counted).",
	})
	registry.MustRegister(statements)
	pool, err := database.Connect(ctx, cfg.DatabaseURL, cfg.DBMaxConns, database.StatementCounter{Counter: statements})
	if err != nil {
		return err
	}
	defer pool.Close()
	// Background work (the backpressure gate, the janitor, the listening
	// connection, the min_position watchers' looks and the operations) has
	// a small pool of its own: it never waits behind commands for a connection, a long
	// janitor sweep leaves the watchers one, and epoch_db_statements_total
	// counts only what requests send.
	background, err := database.Connect(ctx, cfg.DatabaseURL, 6, nil)
	if err != nil {
		return err
	}
	defer background.Close()

	if err := migrateWhenReady(ctx, pool, logger, cfg.StartupTimeout); err != nil {
		return err
	}
	movable := subscribers.Movable()
	dispatcher, err := dispatch.New(subscribers.Projections(), movable, cfg.InlineSubscribers)
	if err != nil {
		return err
	}
	queueMessages, err := queueReader(cfg)
	if err != nil {
		return err
	}
	commands := command.NewService(pool, dispatcher)
	// Every loop of the api runs in this group: one that fails ends the
	// others and the process, and the api returns only once all ended
	// (stop ends them when start-up fails after the first began).
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	loops, ctx := errgroup.WithContext(ctx)
	startFailed := func(err error) error {
		stop()
		return errors.Join(err, loops.Wait())
	}
	if cfg.OutboxMaxBacklog > 0 {
		gate, err := backpressure.New(background, backpressure.Config{
			MaxBacklog: cfg.OutboxMaxBacklog, Concurrency: max(1, int(cfg.DBMaxConns)/4),
		}, logger, registry)
		if err != nil {
			return err
		}
		loops.Go(func() error { gate.Run(ctx); return nil })
		commands.HoldBackWith(gate)
	}
	handler, err := httpapi.New(httpapi.Config{
		Pool:            pool,
		Commands:        commands,
		Logger:          logger,
		Registry:        registry,
		AdminToken:      cfg.AdminToken,
		PricePerGBHour:  cfg.PricePerGBHour,
		Currency:        cfg.Currency,
		BillingPeriod:   cfg.BillingPeriod,
		BillingTimezone: cfg.BillingTimezone,
		DBTimeout:       cfg.DBTimeout,
		TokenCacheTTL:   tokenCacheTTL(cfg.TokenCacheTTL),
		Background:      background,
		MaxWaitsPerUser: cfg.MaxWaitsPerUser,
		Movable:         movable,
		QueueMessages:   queueMessages,
		QueueTimeout:    cfg.ManagementTimeout,
	})
	if err != nil {
		return startFailed(err)
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return startFailed(fmt.Errorf("listen: %w", err))
	}
	loops.Go(func() error { return handler.Run(ctx) })
	srv := &http.Server{
		Handler:           tracing.HTTPHandler(handler),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Above the longest request: a min_position wait plus its reads.
		WriteTimeout: cfg.DBTimeout*2 + httpapi.DefaultCatchUpTimeout + 10*time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	if cfg.Pprof {
		srv.Handler = serve.WithPprof(srv.Handler)
	}
	if cfg.AdminToken == "" {
		logger.Warn("EPOCH_ADMIN_TOKEN is not set: POST /v1/users answers 403")
	}
	loops.Go(func() error { janitor.Run(ctx, background, janitorInterval, logger, movable); return nil })
	logger.Info("api listening", "addr", ln.Addr().String(), "inline_subscribers", dispatcher.Inline())
	loops.Go(func() error { return serve.Run(ctx, srv, ln, cfg.ShutdownTimeout) })
	return loops.Wait()
}

// tokenCacheTTL maps EPOCH_TOKEN_CACHE_TTL to httpapi's setting, where 0
// means the default and a negative value no cache.
func tokenCacheTTL(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// queueReader reads queue depths of EPOCH_AMQP_URL's vhost through the
// management API, for GET /v1/admin/status.
func queueReader(cfg config) (func(ctx context.Context, queue string) (int64, error), error) {
	nodes, err := broker.ParseURLs(cfg.AMQPURL)
	if err != nil {
		return nil, fmt.Errorf("EPOCH_AMQP_URL: %w", err)
	}
	uri, err := amqp.ParseURI(nodes[0]) // the nodes of one cluster share their vhosts
	if err != nil {
		return nil, fmt.Errorf("EPOCH_AMQP_URL: %w", err)
	}
	admin, err := rabbitadmin.NewAt(cfg.ManagementURL, uri, cfg.ManagementTimeout)
	if err != nil {
		return nil, fmt.Errorf("EPOCH_RABBITMQ_MANAGEMENT_URL: %w", err)
	}
	return func(ctx context.Context, queue string) (int64, error) {
		return admin.QueueMessages(ctx, uri.Vhost, queue)
	}, nil
}

// migrateMaxWait is the longest wait between the api's tries to reach
// Postgres at its start.
const migrateMaxWait = 2 * time.Second

// migrateWhenReady applies the migrations, waiting (with backoff) while
// Postgres does not answer yet, at most timeout.
func migrateWhenReady(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	again := backoff.New(backoff.DefaultMin, migrateMaxWait)
	for {
		applied, err := migrate.Up(ctx, pool)
		// goose begins and commits each migration's transaction, so none
		// carries the relays' wake-up: one for them all, for the outbox
		// rows a migration may have written or moved.
		if applied > 0 {
			outbox.Wake(ctx, pool)
		}
		if err == nil {
			logger.Info("migrations applied", "count", applied)
			return nil
		}
		if !database.IsUnavailable(err) && !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return fmt.Errorf("start-up: %w", err)
		}
		wait := again.Next()
		logger.Warn("waiting for Postgres", "error", err, "retry_in", wait.String())
		if !backoff.Sleep(ctx, wait) {
			return fmt.Errorf("start-up: Postgres did not answer within %s: %w", timeout, err)
		}
	}
}
