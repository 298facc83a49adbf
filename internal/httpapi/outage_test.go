package httpapi_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/serve"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// tcpProxy forwards a local port to Postgres and can cut every connection
// and refuse new ones, then come back on the same port: a Postgres outage
// that only this test's API sees.
type tcpProxy struct {
	t      *testing.T
	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &tcpProxy{t: t, target: target, addr: ln.Addr().String(), ln: ln, conns: map[net.Conn]bool{}}
	go p.accept(ln)
	t.Cleanup(p.cut)
	return p
}

func (p *tcpProxy) accept(ln net.Listener) {
	for {
		client, err := ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		if p.ln != ln { // cut meanwhile
			p.mu.Unlock()
			client.Close()
			server.Close()
			return
		}
		p.conns[client], p.conns[server] = true, true
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(server, client)
		go pipe(client, server)
	}
}

// cut closes the listener and every proxied connection.
func (p *tcpProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore listens again on the same port.
func (p *tcpProxy) restore() {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(p.t, err)
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.accept(ln)
}

// Postgres unreachable: /readyz fails and commands and reads answer 503
// quickly, not a hang; when it comes back, the same API serves again.
func TestPostgresUnreachable(t *testing.T) {
	t.Parallel()
	pool, dbURL := testdb.New(t)
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	apiPool, err := pgxpool.New(t.Context(), u.String())
	require.NoError(t, err)
	t.Cleanup(apiPool.Close)
	const dbTimeout = 3 * time.Second
	e := setupWith(t, pool, dbURL, apiPool, func(c *httpapi.Config) { c.DBTimeout = dbTimeout })

	a := e.newUser(t, "a")
	file := e.upload(t, a, "f", 1)
	job := e.createJob(t, a, "j")
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/readyz"})

	proxy.cut()
	before := e.counts(t)
	for _, r := range []req{
		{Method: "GET", Path: "/readyz"},
		{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"g","size_bytes":2}`},
		{Method: "PUT", Path: "/v1/jobs/" + job + "/files/" + file, Token: a, Header: map[string]string{"Idempotency-Key": "k"}},
		{Method: "GET", Path: "/v1/files/" + file, Token: a},
		{Method: "GET", Path: "/v1/jobs", Token: a},
		{Method: "POST", Path: "/v1/users", Token: adminToken, Body: `{"name":"b"}`},
		{Method: "GET", Path: "/v1/storage", Token: a},
	} {
		start := time.Now()
		got := e.do(t, r)
		requireError(t, got, http.StatusServiceUnavailable, "unavailable")
		require.Less(t, time.Since(start), dbTimeout, "%s %s must fail fast", r.Method, r.Path)
	}
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/healthz"}) // the process is up
	require.Equal(t, before, e.counts(t))

	proxy.restore()
	require.Eventually(t, func() bool {
		return e.do(t, req{Method: "GET", Path: "/readyz"}).Status == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond)
	e.must(t, http.StatusOK, req{Method: "PUT", Path: "/v1/jobs/" + job + "/files/" + file, Token: a, Header: map[string]string{"Idempotency-Key": "k"}})
	e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"g","size_bytes":2}`})
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files/" + file, Token: a})
}

// A Postgres that accepts connections but never answers (a black hole)
// answers 503 at the request's database deadline, not later.
func TestPostgresNotAnswering(t *testing.T) {
	t.Parallel()
	pool, dbURL := testdb.New(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c) // never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	})
	u, err := url.Parse(dbURL)
	require.NoError(t, err)
	u.Host = ln.Addr().String()
	apiPool, err := pgxpool.New(t.Context(), u.String())
	require.NoError(t, err)
	t.Cleanup(apiPool.Close)
	const dbTimeout = 1500 * time.Millisecond
	e := setupWith(t, pool, dbURL, apiPool, func(c *httpapi.Config) { c.DBTimeout = dbTimeout })

	start := time.Now()
	requireError(t, e.do(t, req{Method: "GET", Path: "/readyz"}), 503, "unavailable")
	require.Less(t, time.Since(start), 2*time.Second)
	start = time.Now()
	requireError(t, e.do(t, req{Method: "POST", Path: "/v1/jobs", Token: "any", Body: `{"name":"j"}`}), 503, "unavailable")
	require.Less(t, time.Since(start), dbTimeout+time.Second)
}

// Serve lets an in-flight request finish after shutdown starts, refuses
// new connections, and returns once the request is done.
func TestServeGracefulShutdown(t *testing.T) {
	t.Parallel()
	entered, release := make(chan struct{}), make(chan struct{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		_, _ = io.WriteString(w, "done")
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(t.Context())
	served := make(chan error, 1)
	go func() { served <- serve.Run(ctx, srv, ln, 10*time.Second) }()

	type result struct {
		body string
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		res, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			answered <- result{err: err}
			return
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		answered <- result{string(b), err}
	}()
	<-entered
	cancel() // SIGTERM
	require.Eventually(t, func() bool {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	}, 5*time.Second, 10*time.Millisecond, "no new connections once shutting down")
	select {
	case err := <-served:
		t.Fatalf("Serve returned before the in-flight request finished: %v", err)
	default:
	}
	close(release)
	got := <-answered
	require.NoError(t, got.err)
	require.Equal(t, "done", got.body)
	select {
	case err := <-served:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
}
