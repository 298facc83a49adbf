package httpapi_test

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/httpapi"
)

// A token's user is remembered for TokenCacheTTL: a user removed by hand
// keeps access that long, and loses it after. A wrong token is never
// remembered.
func TestTokenCacheKeepsAUserForItsTTL(t *testing.T) {
	t.Parallel()
	const ttl = 500 * time.Millisecond
	e := setup(t, func(c *httpapi.Config) { c.TokenCacheTTL = ttl })
	// The cache serves only while the api hears the rotation channel, and
	// its listening connection may connect after the first requests: a
	// user removed right after a lookup, and still served, shows it live.
	var token string
	for try, deadline := 0, time.Now().Add(10*time.Second); ; try++ {
		require.True(t, time.Now().Before(deadline), "the token was looked up again at once, %d tries", try)
		token = e.newUser(t, fmt.Sprintf("ada%d", try))
		// The entry's clock starts at the lookup inside this GET, so no
		// later than now: timed from here, the check is never past the TTL.
		lookedUp := time.Now()
		e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: token})
		_, err := e.pool.Exec(t.Context(), "DELETE FROM users WHERE token_hash = sha256(convert_to($1, 'UTF8'))", token)
		require.NoError(t, err)
		got := e.do(t, req{Method: "GET", Path: "/v1/files", Token: token})
		if got.Status == http.StatusOK && time.Since(lookedUp) < ttl/2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Eventually(t, func() bool {
		return e.do(t, req{Method: "GET", Path: "/v1/files", Token: token}).Status == http.StatusUnauthorized
	}, 10*ttl, 20*time.Millisecond, "a removed user kept access past the TTL")
	e.must(t, http.StatusUnauthorized, req{Method: "GET", Path: "/v1/files", Token: "wrong"})
}

// With the cache off, a removed user's token fails at once.
func TestTokenCacheOff(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *httpapi.Config) { c.TokenCacheTTL = -1 })
	token := e.newUser(t, "ada")
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: token})
	_, err := e.pool.Exec(t.Context(), "DELETE FROM users")
	require.NoError(t, err)
	e.must(t, http.StatusUnauthorized, req{Method: "GET", Path: "/v1/files", Token: token})
}
