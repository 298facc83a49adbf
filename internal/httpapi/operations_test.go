package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// uploads counts each owner's uploads: a small subscriber added after the
// history it must be backfilled with.
type uploads struct{}

func (uploads) Name() string         { return "uploads" }
func (uploads) EventTypes() []string { return []string{domain.FileUploaded} }
func (uploads) Handle(ctx context.Context, tx *database.Tx, events []eventstore.Event) error {
	for _, e := range events {
		var d domain.FileUploadedData
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO test_uploads (owner_id, n) VALUES ($1, 1)
			ON CONFLICT (owner_id) DO UPDATE SET n = test_uploads.n + 1`, d.OwnerID); err != nil {
			return err
		}
	}
	return nil
}

func (e *env) waitOperation(t *testing.T, location string) map[string]any {
	t.Helper()
	var op map[string]any
	require.Eventually(t, func() bool {
		op = e.must(t, http.StatusOK, req{Method: "GET", Path: location, Token: adminToken}).JSON
		return op["state"] != "running"
	}, 20*time.Second, 20*time.Millisecond)
	return op
}

// A subscriber added later is backfilled by a redrive from 0; a second one
// applies nothing; the other subscribers are not touched.
func TestRedriveBackfillsASubscriberAddedLater(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *httpapi.Config) {
		c.Movable = subscribers.Movable().With(uploads{})
	})
	_, err := e.pool.Exec(t.Context(), `CREATE TABLE test_uploads (owner_id uuid PRIMARY KEY, n int NOT NULL)`)
	require.NoError(t, err)
	want := map[string]int{}
	for u := range 3 {
		token := e.newUser(t, fmt.Sprint("u", u))
		for i := range u + 2 {
			id := e.upload(t, token, fmt.Sprint("f", i), 10)
			if i == 0 {
				e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: "/v1/files/" + id, Token: token})
			}
		}
		e.createJob(t, token, "j")
		want[ownerOfToken(t, e, token)] = u + 2
	}
	counts := func() map[string]int {
		rows, err := e.pool.Query(t.Context(), `SELECT owner_id::text, n FROM test_uploads`)
		require.NoError(t, err)
		got := map[string]int{}
		for rows.Next() {
			var o string
			var n int
			require.NoError(t, rows.Scan(&o, &n))
			got[o] = n
		}
		return got
	}
	inbox := func(name string) int {
		var n int
		require.NoError(t, e.pool.QueryRow(t.Context(), `SELECT count(*) FROM inbox WHERE subscriber = $1`, name).Scan(&n))
		return n
	}

	got := e.must(t, http.StatusAccepted, req{Method: "POST", Path: "/v1/admin/subscribers/uploads/redrive", Token: adminToken, Body: `{"from_position":0}`})
	location := got.Header.Get("Location")
	require.Equal(t, "/v1/admin/operations/"+got.JSON["id"].(string), location)
	require.Equal(t, "redrive", got.JSON["kind"])
	require.Equal(t, "uploads", got.JSON["target"])
	op := e.waitOperation(t, location)
	require.Equal(t, "done", op["state"], "%v", op)
	require.EqualValues(t, 2+3+4, num(t, op["events_applied"]))
	require.Nil(t, op["error"])
	require.NotNil(t, op["finished_at"])
	require.Equal(t, want, counts())
	require.Zero(t, inbox(storage.Name), "storage was handed nothing")

	again := e.must(t, http.StatusAccepted, req{Method: "POST", Path: "/v1/admin/subscribers/uploads/redrive", Token: adminToken, Body: `{"from_position":0}`})
	op = e.waitOperation(t, again.Header.Get("Location"))
	require.Equal(t, "done", op["state"])
	require.EqualValues(t, 0, num(t, op["events_applied"]))
	require.Equal(t, want, counts())

	for _, bad := range []req{
		{Method: "POST", Path: "/v1/admin/subscribers/nope/redrive", Token: adminToken, Body: `{"from_position":0}`},
		{Method: "GET", Path: "/v1/admin/operations/" + uuid.NewString(), Token: adminToken},
	} {
		requireError(t, e.do(t, bad), http.StatusNotFound, "not_found")
	}
	for _, body := range []string{`{}`, `{"from_position":-1}`, `{"from_position":"0"}`, `{"from_position":0,"x":1}`} {
		requireError(t, e.do(t, req{Method: "POST", Path: "/v1/admin/subscribers/uploads/redrive", Token: adminToken, Body: body, Hostile: true}), http.StatusBadRequest, "invalid_input")
	}
	token := e.newUser(t, "plain")
	requireError(t, e.do(t, req{Method: "POST", Path: "/v1/admin/subscribers/uploads/redrive", Token: token, Body: `{"from_position":0}`}), http.StatusUnauthorized, "unauthorized")
	requireError(t, e.do(t, req{Method: "GET", Path: location, Token: token}), http.StatusUnauthorized, "unauthorized")
}

// A second operation on a running target is 409; one whose process stopped
// reads failed, and the target can be worked on again.
func TestOperationRunningAndAbandoned(t *testing.T) {
	t.Parallel()
	pool, url := testdb.New(t)
	e := setupWith(t, pool, url, pool)
	// A runner elsewhere: its row, and its session lock on a connection of
	// its own.
	runner, err := pgx.Connect(t.Context(), url)
	require.NoError(t, err)
	id, key := uuid.New(), int64(4242)
	_, err = runner.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, key)
	require.NoError(t, err)
	_, err = pool.Exec(t.Context(), `INSERT INTO operations (id, kind, target, lock_key) VALUES ($1, 'redrive', 'billing', $2)`, id, key)
	require.NoError(t, err)

	requireError(t, e.do(t, req{Method: "POST", Path: "/v1/admin/subscribers/billing/redrive", Token: adminToken, Body: `{"from_position":0}`}),
		http.StatusConflict, "operation_running")
	op := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/admin/operations/" + id.String(), Token: adminToken}).JSON
	require.Equal(t, "running", op["state"])
	// Another target is free.
	other := e.must(t, http.StatusAccepted, req{Method: "POST", Path: "/v1/admin/subscribers/storage/redrive", Token: adminToken, Body: `{"from_position":0}`})
	require.Equal(t, "done", e.waitOperation(t, other.Header.Get("Location"))["state"])

	require.NoError(t, runner.Close(context.Background())) // the process stops
	// Its backend ends, and lets go of the lock, a moment after the
	// connection closes.
	op = e.waitOperation(t, "/v1/admin/operations/"+id.String())
	require.Equal(t, "failed", op["state"])
	require.NotEmpty(t, op["error"])
	again := e.must(t, http.StatusAccepted, req{Method: "POST", Path: "/v1/admin/subscribers/billing/redrive", Token: adminToken, Body: `{"from_position":0}`})
	require.Equal(t, "done", e.waitOperation(t, again.Header.Get("Location"))["state"])
}

func ownerOfToken(t *testing.T, e *env, token string) string {
	t.Helper()
	var id string
	require.NoError(t, e.pool.QueryRow(t.Context(), `SELECT id::text FROM users WHERE token_hash = sha256($1::text::bytea)`, token).Scan(&id))
	return id
}
