// Package httpapi serves Epoch's HTTP API (v1 of DESIGN.md): bearer-token
// authentication, strict JSON input, the commands (each in one transaction,
// with Idempotency-Key and If-Match), the reads (including the storage and
// billing subscribers' with min_position), the error shape, the
// operational endpoints /healthz, /readyz and /metrics, and the OpenAPI
// document of all of it (openapi.json, served as GET /v1/openapi.json).
//
// Choices where DESIGN.md is silent: a malformed id in a path or an
// unparsable If-Match is a 400 (invalid_input), not a 404 or 412; "*" in
// If-Match is no condition. POST /v1/users ignores Idempotency-Key: its
// answer holds the new token, which is never stored. Validation runs before
// the key is looked at, so a bad body is a 400 whatever its key.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/delivery/catchup"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/ops/operator"
	"github.com/catacloud/epoch/internal/platform/pglisten"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/billing"
)

// Config is what the API needs. Pool, Commands and Logger are required.
type Config struct {
	Pool     *pgxpool.Pool
	Commands *command.Service
	Logger   *slog.Logger
	// Registry receives the API's metrics and is what /metrics serves.
	// Nil: a registry of its own.
	Registry *prometheus.Registry
	// AdminToken authorises POST /v1/users. Empty: that call answers 403.
	AdminToken string
	// PricePerGBHour (a decimal string) and Currency are the flat price
	// (version 0) of the periods no price version prices. Empty:
	// billing.DefaultPricePerGBHour and billing.DefaultCurrency.
	PricePerGBHour string
	Currency       string
	// BillingPeriod ("month" or a duration) and BillingTimezone (IANA)
	// cut time into billing periods. Empty: billing.DefaultPeriod and
	// billing.DefaultTimezone.
	BillingPeriod   string
	BillingTimezone string
	// DBTimeout bounds the database work of one request, so an unreachable
	// Postgres answers 503 instead of hanging. Default DefaultDBTimeout.
	DBTimeout time.Duration
	// ReadyTimeout bounds the /readyz ping. Default DefaultReadyTimeout.
	ReadyTimeout time.Duration
	// CatchUpTimeout is how long GET /v1/storage and GET /v1/usage wait for
	// min_position before answering 504. Default DefaultCatchUpTimeout.
	CatchUpTimeout time.Duration
	// TokenCacheTTL is how long a bearer token's user is remembered
	// instead of looked up again. Zero: DefaultTokenCacheTTL; negative:
	// looked up on every request.
	TokenCacheTTL time.Duration
	// Background is the pool of Run's work: the listening connection and
	// the min_position watchers' looks, kept off the requests' connections.
	// Nil: Pool.
	Background *pgxpool.Pool
	// MaxWaitsPerUser is how many min_position waits one user may hold at
	// once in this process (429 past it). Zero:
	// catchup.DefaultMaxWaitsPerOwner.
	MaxWaitsPerUser int
	// Movable are the subscribers the operations API acts on (redrive,
	// rebuild, dead letters: a replay hands events to these very
	// implementations), by name. Nil: subscribers.Movable().
	Movable []dispatch.Subscriber
	// QueueMessages reads how many messages a broker queue holds, for
	// GET /v1/admin/status. Nil, or failing: queue_messages is null.
	QueueMessages func(ctx context.Context, queue string) (int64, error)
	// QueueTimeout bounds QueueMessages. Default DefaultQueueTimeout.
	QueueTimeout time.Duration
}

// The placements of a movable subscriber (EPOCH_INLINE_SUBSCRIBERS).
const (
	PlacementInline = "inline" // in the command's transaction
	PlacementRemote = "remote" // in a worker, from its queue
)

// Defaults applied by New.
const (
	DefaultDBTimeout    = 10 * time.Second
	DefaultReadyTimeout = time.Second
	// DefaultCatchUpTimeout is DESIGN.md's 5 s wait for min_position.
	DefaultCatchUpTimeout = 5 * time.Second
	DefaultTokenCacheTTL  = 30 * time.Second
	// DefaultQueueTimeout is short: a broker that does not answer must not
	// hold up the status, which answers without its queue depths.
	DefaultQueueTimeout = 2 * time.Second
	// MaxBodyBytes is the largest request body accepted (413 past it).
	MaxBodyBytes = 1 << 20
)

type server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	routes   []string // the mux's patterns, in the order registered
	metrics  *metrics
	billing  billing.Settings
	tokens   *tokenCache
	watchers map[string]*catchup.Watcher // by subscriber
	op       *operator.Operator
	// life ends when Run's context does: operations run until then.
	life    context.Context
	endLife context.CancelFunc
}

// Server is the API handler. Run must run beside it: it keeps the token
// cache in step with rotations and wakes the min_position waits.
type Server struct{ *server }

// New builds the API handler.
func New(cfg Config) (*Server, error) {
	if cfg.Pool == nil || cfg.Commands == nil || cfg.Logger == nil {
		return nil, errors.New("httpapi: Pool, Commands and Logger are required")
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.DBTimeout <= 0 {
		cfg.DBTimeout = DefaultDBTimeout
	}
	if cfg.CatchUpTimeout <= 0 {
		cfg.CatchUpTimeout = DefaultCatchUpTimeout
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = DefaultReadyTimeout
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = DefaultQueueTimeout
	}
	if cfg.TokenCacheTTL == 0 {
		cfg.TokenCacheTTL = DefaultTokenCacheTTL
	}
	settings, err := billing.NewSettings(cfg.BillingPeriod, cfg.BillingTimezone, cfg.PricePerGBHour, cfg.Currency)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	if cfg.Background == nil {
		cfg.Background = cfg.Pool
	}
	if cfg.Movable == nil {
		cfg.Movable = subscribers.Movable()
	}
	s := &server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), metrics: m, billing: settings,
		tokens: newTokenCache(cfg.TokenCacheTTL), watchers: map[string]*catchup.Watcher{},
		op: operator.New(operator.Config{Pool: cfg.Pool, Background: cfg.Background, Subscribers: cfg.Movable,
			Timeout: cfg.DBTimeout, Logger: cfg.Logger})}
	s.life, s.endLife = context.WithCancel(context.Background())
	// Until Run hears the rotation channel, no cached token is trusted.
	s.tokens.setLive(false)
	err = cfg.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "epoch_api_token_cache_live",
		Help: "1 while token rotations are heard and cached tokens are used; 0 while every request looks its token up.",
	}, func() float64 {
		if s.tokens.live.Load() {
			return 1
		}
		return 0
	}))
	if err != nil {
		return nil, fmt.Errorf("httpapi: %w", err)
	}
	for _, sub := range cfg.Movable {
		name := sub.Name()
		s.watchers[name] = catchup.NewWatcher(cfg.Background, name,
			catchup.WatcherConfig{MaxWaitsPerOwner: cfg.MaxWaitsPerUser}, cfg.Logger)
		w := s.watchers[name]
		err := cfg.Registry.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "epoch_api_catchup_waits",
			Help:        "min_position waits waiting now, by subscriber.",
			ConstLabels: prometheus.Labels{"subscriber": name},
		}, func() float64 { return float64(w.Waiting()) }))
		if err != nil {
			return nil, fmt.Errorf("httpapi: %w", err)
		}
	}

	s.handle("GET /healthz", s.healthz)
	s.handle("GET /readyz", s.readyz)
	s.route("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	s.handle("GET /v1/openapi.json", s.serveOpenAPI)

	s.handle("POST /v1/users", s.admin(s.createUser))

	s.handle("POST /v1/files", s.authed(s.uploadFile))
	s.handle("GET /v1/files", s.authed(s.listFiles))
	s.handle("GET /v1/files/{id}", s.authed(s.getFile))
	s.handle("DELETE /v1/files/{id}", s.authed(s.deleteFile))

	s.handle("POST /v1/jobs", s.authed(s.createJob))
	s.handle("GET /v1/jobs", s.authed(s.listJobs))
	s.handle("GET /v1/jobs/{id}", s.authed(s.getJob))
	s.handle("DELETE /v1/jobs/{id}", s.authed(s.deleteJob))
	s.handle("PUT /v1/jobs/{id}/files/{file_id}", s.authed(s.linkFile))
	s.handle("DELETE /v1/jobs/{id}/files/{file_id}", s.authed(s.unlinkFile))
	s.handle("PUT /v1/jobs/{id}/files", s.authed(s.setJobFiles))

	s.handle("GET /v1/storage", s.authed(s.getStorage))
	s.handle("GET /v1/usage", s.authed(s.getUsage))
	s.handle("GET /v1/statements", s.authed(s.listStatements))
	s.handle("GET /v1/statements/{id}", s.authed(s.getStatement))

	s.adminRoutes()
	return &Server{s}, nil
}

// Run does the API's background work until ctx ends: one connection
// LISTENs for token rotations (dropping the user's cached token) and for
// subscribers' commits (waking the waits for them); each subscriber's
// watcher answers its waits. When ctx ends, the waits still waiting end at
// once (503), so a shutdown does not sit out their timeouts.
func (s *Server) Run(ctx context.Context) error {
	defer s.endLife()
	var wg sync.WaitGroup
	for _, w := range s.watchers {
		wg.Add(1)
		go func() { defer wg.Done(); w.Run(ctx) }()
	}
	err := pglisten.Run(ctx, pglisten.Config{
		Pool:     s.cfg.Background,
		Channels: []string{tokensChannel, dispatch.AppliedChannel},
		Logger:   s.log,
		OnNotify: func(channel, payload string) {
			switch channel {
			case tokensChannel:
				if id, err := uuid.Parse(payload); err == nil {
					s.tokens.forget(id)
				}
			case dispatch.AppliedChannel:
				if w, ok := s.watchers[payload]; ok {
					w.Wake()
				}
			}
		},
		OnConnect: func() {
			s.tokens.setLive(true)
			for _, w := range s.watchers {
				w.Wake() // commits announced while away were not heard
			}
		},
		OnDisconnect: func() { s.tokens.setLive(false) },
	})
	wg.Wait()
	return err
}

// ServeHTTP answers unknown routes and wrong methods in the error shape too;
// everything else goes to the mux.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		rec := &statusRecorder{ResponseWriter: w}
		defer func() { s.metrics.observeUnmatched(r.Method, rec.code()) }()
		w = rec
		probe := &statusProbe{header: w.Header()}
		h.ServeHTTP(probe, r)
		switch probe.status {
		case http.StatusNotFound:
			w.Header().Del("X-Content-Type-Options")
			writeError(w, errNotFound("no such route"))
			return
		case http.StatusMethodNotAllowed:
			w.Header().Del("X-Content-Type-Options")
			writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: r.Method + " is not allowed here"})
			return
		}
	}
	s.mux.ServeHTTP(w, r)
}

// Routes are the method and path patterns the API serves, as its mux has
// them: the OpenAPI document's operations must be the same set.
func (s *Server) Routes() []string { return slices.Clone(s.routes) }

// route registers h under pattern as it is, and remembers the pattern.
func (s *server) route(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.routes = append(s.routes, pattern)
}

// handle registers h under pattern with metrics and panic recovery.
func (s *server) handle(pattern string, h http.HandlerFunc) {
	s.route(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				s.log.ErrorContext(r.Context(), "panic", "route", pattern, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if !rec.wrote {
					writeError(rec, errInternal)
				}
			}
			s.metrics.observe(pattern, r.Method, rec.code(), time.Since(start))
		}()
		h(rec, r)
	}))
}

func (s *server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when Postgres answers a ping in time.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := contextWithTimeout(r, s.cfg.ReadyTimeout)
	defer cancel()
	if err := s.cfg.Pool.Ping(ctx); err != nil {
		s.log.WarnContext(r.Context(), "not ready", "error", err)
		writeError(w, errUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// statusRecorder remembers the status a handler wrote, for the metrics.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (r *statusRecorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.status, r.wrote = http.StatusOK, true
	}
	return r.ResponseWriter.Write(b)
}

func (r *statusRecorder) code() int {
	if !r.wrote {
		return http.StatusOK
	}
	return r.status
}

// statusProbe runs the mux's own 404/405 handler to learn which it is,
// writing nothing.
type statusProbe struct {
	header http.Header
	status int
}

func (p *statusProbe) Header() http.Header { return p.header }
func (p *statusProbe) WriteHeader(code int) {
	if p.status == 0 {
		p.status = code
	}
}
func (p *statusProbe) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.status = http.StatusOK
	}
	return len(b), nil
}
