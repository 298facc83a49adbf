package httpapi_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// gauge is the value of the gauge name whose labels include want.
func (e *env) gauge(t testing.TB, name string, want map[string]string) float64 {
	t.Helper()
	families, err := e.registry.Gather()
	require.NoError(t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			for k, v := range want {
				found := false
				for _, l := range m.GetLabel() {
					found = found || l.GetName() == k && l.GetValue() == v
				}
				if !found {
					continue metrics
				}
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s %v", name, want)
	return 0
}

// waiting is how many min_position waits for subscriber the api holds now.
func (e *env) waiting(t testing.TB, subscriber string) int {
	t.Helper()
	return int(e.gauge(t, "epoch_api_catchup_waits", map[string]string{"subscriber": subscriber}))
}

type waitResult struct {
	exchanged
	took time.Duration
}

// startWaits sends, for each token, n GET /v1/storage?min_position= of its
// position at once.
func (e *env) startWaits(t *testing.T, tokens []string, positions []int64, n int) (results chan waitResult, wait func()) {
	results = make(chan waitResult, len(tokens)*n)
	var wg sync.WaitGroup
	for i, token := range tokens {
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				x := e.exchange(t, req{Method: "GET", Path: "/v1/storage?min_position=" + strconv.FormatInt(positions[i], 10), Token: token})
				results <- waitResult{x, time.Since(start)}
			}()
		}
	}
	return results, func() { wg.Wait(); close(results) }
}

// Five hundred waits of many users with the storage subscriber stopped hold
// no connection, cost the database a few statements a second, end in 504
// with Retry-After within the timeout, and all answer at once when the
// subscriber catches up; the ninth of one user is a 429.
func TestMinPositionWaitsHoldNothing(t *testing.T) {
	// Not parallel: 504 waits end within moments of each other, and the
	// bound on each is the api's, not the package's other tests'.
	pool, url := testdb.New(t)
	trips := &testdb.Trips{Name: testdb.StatementName}
	e := setupWith(t, pool, url, testdb.Traced(t, pool, trips))
	const users, perUser = 63, 8 // 504 waits
	var tokens []string
	var positions []int64
	for i := range users {
		token := e.newUser(t, fmt.Sprintf("u%d", i))
		got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: token, Body: `{"name":"f","size_bytes":10}`})
		pos, err := strconv.ParseInt(got.Header.Get("Epoch-Position"), 10, 64)
		require.NoError(t, err)
		tokens, positions = append(tokens, token), append(positions, pos)
	}

	// Round one: the subscriber never comes.
	results, wait := e.startWaits(t, tokens, positions, perUser)
	require.Eventually(t, func() bool { return e.waiting(t, storage.Name) == users*perUser }, 10*time.Second, 10*time.Millisecond)
	ninth := e.do(t, req{Method: "GET", Path: "/v1/storage?min_position=" + strconv.FormatInt(positions[0], 10), Token: tokens[0]})
	requireError(t, ninth, http.StatusTooManyRequests, "too_many_waits")
	require.Equal(t, "1", ninth.Header.Get("Retry-After"))
	// Another user's plain read is not held back.
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/storage", Token: e.newUser(t, "other")})

	trips.Take()
	const watch = 2 * time.Second
	time.Sleep(watch)
	sent := 0
	for _, trip := range trips.Take() {
		sent += len(trip)
	}
	require.LessOrEqual(t, sent, 6, "statements in %s while %d waits wait", watch, users*perUser)

	wait()
	n := 0
	for r := range results {
		n++
		got := r.check(t)
		require.Equal(t, http.StatusGatewayTimeout, got.Status)
		require.Equal(t, "1", got.Header.Get("Retry-After"))
		// Timed by the client (the exchange; its answer is checked against
		// the OpenAPI document only now), so the bound also holds dialing 504
		// connections and scheduling their goroutines on a machine that
		// runs other packages' tests beside this one: clientSlack over the
		// api's timeout (a wait the api never ended would not answer).
		require.LessOrEqual(t, r.took, httpapi.DefaultCatchUpTimeout+clientSlack)
		require.GreaterOrEqual(t, r.took, httpapi.DefaultCatchUpTimeout-100*time.Millisecond)
	}
	require.Equal(t, users*perUser, n)

	// Round two: the subscriber catches up while they wait.
	results, wait = e.startWaits(t, tokens, positions, perUser)
	require.Eventually(t, func() bool { return e.waiting(t, storage.Name) == users*perUser }, 10*time.Second, 10*time.Millisecond)
	events, err := eventstore.After(t.Context(), pool, 0, 10000)
	require.NoError(t, err)
	require.NoError(t, database.InTx(t.Context(), pool, func(tx *database.Tx) error {
		if err := dispatch.Deliver(t.Context(), tx, storage.Subscriber{}, events); err != nil {
			return err
		}
		return dispatch.Announce(t.Context(), tx, storage.Name)
	}))
	applied := time.Now()
	wait()
	took := time.Since(applied)
	for r := range results {
		require.Equal(t, http.StatusOK, r.check(t).Status)
	}
	require.Less(t, took, time.Second, "answered %s after the subscriber committed", took)
	require.Zero(t, e.waiting(t, storage.Name))
}

// A wait ends at once, 503 with Retry-After, when the api shuts down.
func TestMinPositionWaitEndsOnShutdown(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *httpapi.Config) { c.CatchUpTimeout = time.Minute })
	token := e.newUser(t, "a")
	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: token, Body: `{"name":"f","size_bytes":10}`})
	done := make(chan resp, 1)
	go func() {
		done <- e.do(t, req{Method: "GET", Path: "/v1/storage?min_position=" + got.Header.Get("Epoch-Position"), Token: token})
	}()
	require.Eventually(t, func() bool { return e.waiting(t, storage.Name) == 1 }, 5*time.Second, 10*time.Millisecond)
	stopped := time.Now()
	e.stopBackground()
	select {
	case r := <-done:
		requireError(t, r, http.StatusServiceUnavailable, "unavailable")
		require.Equal(t, "1", r.Header.Get("Retry-After"))
		require.Less(t, time.Since(stopped), time.Second)
	case <-time.After(10 * time.Second):
		t.Fatal("the wait outlived the shutdown")
	}
}

// A rotated token answers 401 on another api process within a second; the
// new one works on both.
func TestTokenRotation(t *testing.T) {
	t.Parallel()
	pool, url := testdb.New(t)
	a := setupWith(t, pool, url, pool)
	b := setupWith(t, pool, url, pool)
	created := a.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/users", Token: adminToken, Body: `{"name":"rot"}`})
	id, old := created.JSON["id"].(string), created.JSON["token"].(string)
	for _, e := range []*env{a, b} {
		// The token cache is trusted only once the rotation channel is heard.
		require.Eventually(t, func() bool { return e.gauge(t, "epoch_api_token_cache_live", nil) == 1 }, 5*time.Second, 10*time.Millisecond)
		e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: old}) // cached on both
	}

	rotated := a.must(t, http.StatusOK, req{Method: "POST", Path: "/v1/admin/users/" + id + "/token", Token: adminToken})
	require.Equal(t, id, rotated.JSON["id"])
	require.Equal(t, "rot", rotated.JSON["name"])
	fresh := rotated.JSON["token"].(string)
	require.NotEqual(t, old, fresh)
	at := time.Now()
	requireError(t, a.do(t, req{Method: "GET", Path: "/v1/files", Token: old}), http.StatusUnauthorized, "unauthorized")
	require.Eventually(t, func() bool {
		return b.do(t, req{Method: "GET", Path: "/v1/files", Token: old}).Status == http.StatusUnauthorized
	}, time.Second, 5*time.Millisecond, "the old token still works on the second process")
	t.Logf("old token refused on the second process %s after the rotation", time.Since(at))
	for _, e := range []*env{a, b} {
		e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: fresh})
	}

	requireError(t, a.do(t, req{Method: "POST", Path: "/v1/admin/users/" + uuid.NewString() + "/token", Token: adminToken}), http.StatusNotFound, "not_found")
	requireError(t, a.do(t, req{Method: "POST", Path: "/v1/admin/users/x/token", Token: adminToken, Hostile: true}), http.StatusBadRequest, "invalid_input")
	requireError(t, a.do(t, req{Method: "POST", Path: "/v1/admin/users/" + id + "/token", Token: fresh}), http.StatusUnauthorized, "unauthorized")
	a.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: fresh}) // a refused rotation rotated nothing
}

// A token that matched no user is refused again without a lookup.
func TestFailedLoginsAreCached(t *testing.T) {
	t.Parallel()
	pool, url := testdb.New(t)
	trips := &testdb.Trips{Name: testdb.StatementName}
	e := setupWith(t, pool, url, testdb.Traced(t, pool, trips))
	trips.Take()
	lookups := func() int {
		n := 0
		for _, trip := range trips.Take() {
			for _, s := range trip {
				if strings.HasPrefix(s, "UserIDByTokenHash") {
					n++
				}
			}
		}
		return n
	}
	for range 5 {
		requireError(t, e.do(t, req{Method: "GET", Path: "/v1/files", Token: "not-a-token"}), http.StatusUnauthorized, "unauthorized")
	}
	require.Equal(t, 1, lookups())
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/files", Token: "another"}), http.StatusUnauthorized, "unauthorized")
	require.Equal(t, 1, lookups())
}
