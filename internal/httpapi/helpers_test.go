package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

const adminToken = "test-admin-token"

// env is a real API on its own database, served by httptest.
type env struct {
	pool     *pgxpool.Pool // the test's own pool, for counting rows
	url      string        // the database URL
	api      *httpapi.Server
	server   *httptest.Server
	registry *prometheus.Registry
	// stopBackground ends the server's Run (once; cleanup does it too).
	stopBackground func()
}

// setup builds the API on a fresh database. apiPool, when not nil, is the
// pool the API uses (e.g. through a proxy); edit adjusts the Config.
func setup(t testing.TB, edit ...func(*httpapi.Config)) *env {
	t.Helper()
	pool, url := testdb.New(t)
	return setupWith(t, pool, url, pool, edit...)
}

func setupWith(t testing.TB, pool *pgxpool.Pool, url string, apiPool *pgxpool.Pool, edit ...func(*httpapi.Config)) *env {
	t.Helper()
	d, err := dispatch.New(subscribers.Projections(), subscribers.Movable(), nil)
	require.NoError(t, err)
	registry := prometheus.NewRegistry()
	cfg := httpapi.Config{
		Pool:       apiPool,
		Commands:   command.NewService(apiPool, d),
		Logger:     slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError})),
		Registry:   registry,
		AdminToken: adminToken,
	}
	for _, e := range edit {
		e(&cfg)
	}
	h, err := httpapi.New(cfg)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- h.Run(ctx) }()
	srv := httptest.NewServer(h)
	var once sync.Once
	stopBackground := func() {
		once.Do(func() {
			stop()
			require.NoError(t, <-ran)
		})
	}
	t.Cleanup(func() {
		srv.Close()
		stopBackground()
	})
	return &env{pool: pool, url: url, api: h, server: srv, registry: registry, stopBackground: stopBackground}
}

// resp is an answer, its body decoded when it is JSON.
type resp struct {
	Status int
	Header http.Header
	Raw    []byte
	JSON   map[string]any
}

// req is one request; Token "" sends no Authorization.
type req struct {
	Method, Path, Token, Body string
	Header                    map[string]string
	// Hostile marks a request that breaks the OpenAPI document on purpose
	// (malformed JSON, a value out of its rules, a bad id, a list past its
	// bound): it is not held to the document. Its answer is, as every
	// answer is. Without it, the request must be one the document
	// describes.
	Hostile bool
}

// do sends r and checks it and its answer against the OpenAPI document
// (checkOpenAPI).
func (e *env) do(t testing.TB, r req) resp {
	t.Helper()
	x := e.exchange(t, r)
	return x.check(t)
}

// exchanged is a request sent and its answer read, not yet checked.
type exchanged struct {
	r   req
	hr  *http.Request
	out resp
}

// exchange sends r and reads its answer, and no more: check validates
// both against the OpenAPI document and decodes the body. Tests that time
// many requests at once check them afterwards, so that the checks do not
// compete with the exchanges they time.
func (e *env) exchange(t testing.TB, r req) exchanged {
	t.Helper()
	var body io.Reader
	if r.Body != "" {
		body = strings.NewReader(r.Body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, r.Method, e.server.URL+r.Path, body)
	require.NoError(t, err)
	if r.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.Token)
	}
	if r.Body != "" {
		hr.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.Header {
		hr.Header.Set(k, v)
	}
	res, err := e.server.Client().Do(hr)
	require.NoError(t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return exchanged{r: r, hr: hr, out: resp{Status: res.StatusCode, Header: res.Header, Raw: raw}}
}

// check validates the exchange against the OpenAPI document and returns
// its answer, the JSON body decoded.
func (x exchanged) check(t testing.TB) resp {
	t.Helper()
	out := x.out
	checkOpenAPI(t, x.hr, []byte(x.r.Body), x.r.Hostile, out)
	if strings.HasPrefix(out.Header.Get("Content-Type"), "application/json") {
		dec := json.NewDecoder(bytes.NewReader(out.Raw))
		dec.UseNumber()
		require.NoError(t, dec.Decode(&out.JSON), "body: %s", out.Raw)
	}
	return out
}

// must does r and requires status.
func (e *env) must(t testing.TB, status int, r req) resp {
	t.Helper()
	got := e.do(t, r)
	require.Equal(t, status, got.Status, "%s %s: %s", r.Method, r.Path, got.Raw)
	return got
}

// requireError checks the error shape and its code.
func requireError(t testing.TB, got resp, status int, code string) {
	t.Helper()
	require.Equal(t, status, got.Status, "body: %s", got.Raw)
	require.Equal(t, "application/json", got.Header.Get("Content-Type"))
	errObj, ok := got.JSON["error"].(map[string]any)
	require.True(t, ok, "error shape: %s", got.Raw)
	require.Len(t, got.JSON, 1, "only error: %s", got.Raw)
	require.Equal(t, code, errObj["code"], "body: %s", got.Raw)
	msg, _ := errObj["message"].(string)
	require.NotEmpty(t, msg)
}

func (e *env) newUser(t testing.TB, name string) string {
	t.Helper()
	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/users", Token: adminToken, Body: `{"name":"` + name + `"}`})
	return got.JSON["token"].(string)
}

func (e *env) upload(t testing.TB, token, name string, size int64) string {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"name": name, "size_bytes": size})
	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: token, Body: string(body)})
	return got.JSON["id"].(string)
}

func (e *env) createJob(t testing.TB, token, name string) string {
	t.Helper()
	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/jobs", Token: token, Body: `{"name":"` + name + `"}`})
	return got.JSON["id"].(string)
}

// counts is how many rows the write side holds.
type counts struct{ Events, Outbox, Keys, Users, Files, Jobs, JobFiles int }

func (e *env) counts(t testing.TB) counts {
	t.Helper()
	var c counts
	err := e.pool.QueryRow(t.Context(), `SELECT
		(SELECT count(*) FROM events), (SELECT count(*) FROM outbox), (SELECT count(*) FROM idempotency_keys),
		(SELECT count(*) FROM users), (SELECT count(*) FROM files), (SELECT count(*) FROM jobs),
		(SELECT count(*) FROM job_files)`).Scan(&c.Events, &c.Outbox, &c.Keys, &c.Users, &c.Files, &c.Jobs, &c.JobFiles)
	require.NoError(t, err)
	return c
}

func num(t testing.TB, v any) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	require.True(t, ok, "%v (%T) is not a JSON number", v, v)
	i, err := n.Int64()
	require.NoError(t, err, "%v is not an integer", v)
	return i
}
