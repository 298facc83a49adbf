package httpapi_test

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/httpapi"
)

func TestCreateUser(t *testing.T) {
	t.Parallel()
	e := setup(t)

	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/users", Token: adminToken, Body: `{"name":"ada"}`})
	require.Equal(t, "ada", got.JSON["name"])
	token := got.JSON["token"].(string)
	raw, err := base64.RawURLEncoding.DecodeString(token)
	require.NoError(t, err)
	require.Len(t, raw, 32)

	// Only the hash is stored.
	var stored []byte
	require.NoError(t, e.pool.QueryRow(t.Context(), "SELECT token_hash FROM users WHERE id = $1", got.JSON["id"]).Scan(&stored))
	sum := sha256.Sum256([]byte(token))
	require.Equal(t, sum[:], stored)

	// The token works; the admin token is not a user's.
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: token})
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/files", Token: adminToken}), 401, "unauthorized")

	// Admin call with a wrong or missing token, or a user's token: 401.
	for _, token := range []string{"", "wrong", token} {
		requireError(t, e.do(t, req{Method: "POST", Path: "/v1/users", Token: token, Body: `{"name":"x"}`}), 401, "unauthorized")
	}
	// Bad names: 400.
	for _, body := range []string{`{}`, `{"name":""}`, `{"name":"a\u0000b"}`, `{"name":1}`, `{"name":"a","x":1}`, `{"name":"a"}x`} {
		requireError(t, e.do(t, req{Method: "POST", Path: "/v1/users", Token: adminToken, Body: body, Hostile: true}), 400, "invalid_input")
	}
	require.Equal(t, 1, e.counts(t).Users)
}

func TestCreateUserWithoutAdminToken(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *httpapi.Config) { c.AdminToken = "" })
	for _, token := range []string{"", "anything"} {
		requireError(t, e.do(t, req{Method: "POST", Path: "/v1/users", Token: token, Body: `{"name":"ada"}`}), 403, "forbidden")
	}
	require.Equal(t, 0, e.counts(t).Users)
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := setup(t)
	token := e.newUser(t, "ada")

	for _, auth := range []string{"", "Bearer", "Bearer ", "Basic " + token, "Bearer " + token + "x", token} {
		r := req{Method: "GET", Path: "/v1/jobs", Header: map[string]string{"Authorization": auth}}
		got := e.do(t, r)
		requireError(t, got, 401, "unauthorized")
		require.Contains(t, got.Header.Get("WWW-Authenticate"), "Bearer")
	}
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/jobs", Header: map[string]string{"Authorization": "bearer " + token}})

	// Operational endpoints need no token.
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/healthz"})
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/readyz"})
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/metrics"})

	// Unknown routes and methods answer in the error shape too.
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/nothing", Token: token}), 404, "not_found")
	got := e.do(t, req{Method: "PATCH", Path: "/v1/files", Token: token})
	requireError(t, got, 405, "method_not_allowed")
	require.Contains(t, got.Header.Get("Allow"), "POST")
}
