package httpapi_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/httpapi"
)

// GET /v1/storage and GET /v1/usage with min_position. Storage and billing
// run remote here and no worker runs, so waiting for an upload times out.
func TestStorageAndUsageReads(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *httpapi.Config) { c.CatchUpTimeout = 300 * time.Millisecond })
	a := e.newUser(t, "a")

	got := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/storage", Token: a})
	require.JSONEq(t, `{"file_count":0,"bytes":0,"position":0}`, string(got.Raw))
	got = e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/usage?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z", Token: a})
	require.Equal(t, "0", got.JSON["byte_seconds"])
	require.Equal(t, "USD", got.JSON["currency"])

	created := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"f","size_bytes":3}`})
	pos, err := strconv.ParseInt(created.Header.Get("Epoch-Position"), 10, 64)
	require.NoError(t, err)
	at := strconv.FormatInt(pos, 10)

	start := time.Now()
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/storage?min_position=" + at, Token: a}), 504, "timeout")
	require.Less(t, time.Since(start), 3*time.Second)
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/usage?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&min_position=" + at, Token: a}), 504, "timeout")

	for _, path := range []string{
		"/v1/storage?min_position=" + strconv.FormatInt(pos+1000, 10), // beyond every committed position
		"/v1/storage?min_position=-1",
		"/v1/storage?min_position=x",
		"/v1/usage?to=2026-01-02T00:00:00Z",
		"/v1/usage?from=yesterday&to=2026-01-02T00:00:00Z",
		"/v1/usage?from=2026-01-03T00:00:00Z&to=2026-01-02T00:00:00Z",
	} {
		requireError(t, e.do(t, req{Method: "GET", Path: path, Token: a, Hostile: true}), 400, "invalid_input")
	}
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/storage"}), 401, "unauthorized")
}

// Usage bounds must lie within years 0001–9999 in UTC: an offset that
// carries one out of them is a 400, the edges themselves are a 200.
func TestUsageBoundsYears(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	usage := func(from, to string) req {
		q := url.Values{"from": {from}, "to": {to}}
		return req{Method: "GET", Path: "/v1/usage?" + q.Encode(), Token: a}
	}

	got := e.must(t, http.StatusOK, usage("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"))
	require.Equal(t, "0001-01-01T00:00:00Z", got.JSON["from"])
	require.Equal(t, "9999-12-31T23:59:59.999999Z", got.JSON["to"])

	before := e.counts(t)
	for _, c := range [][2]string{
		{"0000-01-01T00:00:00+01:00", "2026-01-01T00:00:00Z"}, // year -1 in UTC
		{"0000-12-31T23:59:59Z", "2026-01-01T00:00:00Z"},      // year 0
		{"0001-01-01T00:00:00+00:01", "2026-01-01T00:00:00Z"}, // year 0 in UTC
		{"2026-01-01T00:00:00Z", "9999-12-31T23:00:00-05:00"}, // year 10000 in UTC
	} {
		r := usage(c[0], c[1])
		r.Hostile = true
		got := e.do(t, r)
		requireError(t, got, 400, "invalid_input")
		require.Contains(t, got.JSON["error"].(map[string]any)["message"], "0001–9999", "%q", c)
	}
	require.Equal(t, before, e.counts(t))
}
