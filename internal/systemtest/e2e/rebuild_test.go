package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// runOperation starts an operation through the admin API and waits for its
// end.
func (s *system) runOperation(t *testing.T, path string, body any) map[string]any {
	t.Helper()
	started := s.call(t, http.StatusAccepted, "POST", path, adminToken, body)
	location := started.Header.Get("Location")
	require.NotEmpty(t, location)
	var op map[string]any
	e2ekit.Eventually(t, time.Minute, "operation "+location+" ends", func() (bool, string) {
		op = s.call(t, http.StatusOK, "GET", location, adminToken, nil).JSON(t)
		return op["state"] != "running", fmt.Sprint(op)
	})
	require.Equal(t, "done", op["state"], "%v", op)
	return op
}

// A rebuild of billing while 50 commands a second land ends with 0
// differences and exact usage; after rows were corrupted on purpose it
// reports how many differ and repairs them.
func TestRebuildBillingWhileCommandsLand(t *testing.T) {
	t.Parallel()
	s := newSystem(t, "rebuild", "")
	ctx := e2ekit.CtxFor(t, 3*time.Minute)
	token := s.newUser(t, "payer")
	var mu sync.Mutex
	var last int64
	var live []string
	command := func(i int) {
		var pos int64
		if i%3 == 2 {
			mu.Lock()
			id := live[0]
			live = live[1:]
			mu.Unlock()
			pos = s.call(t, http.StatusNoContent, "DELETE", "/v1/files/"+id, token, nil).Position(t)
		} else {
			f := s.call(t, http.StatusCreated, "POST", "/v1/files", token, map[string]any{"name": fmt.Sprint("f", i), "size_bytes": 1000 + i})
			pos = f.Position(t)
			mu.Lock()
			live = append(live, f.JSON(t)["id"].(string))
			mu.Unlock()
		}
		mu.Lock()
		last = max(last, pos)
		mu.Unlock()
	}
	for i := range 30 {
		command(i)
	}

	// 50 commands a second, open loop, until the rebuild is done.
	loadCtx, stopLoad := context.WithCancel(ctx)
	var load sync.WaitGroup
	load.Add(1)
	go func() {
		defer load.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 30; ; i++ {
			select {
			case <-loadCtx.Done():
				return
			case <-tick.C:
			}
			command(i)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	op := s.runOperation(t, "/v1/admin/subscribers/billing/rebuild", nil)
	time.Sleep(500 * time.Millisecond)
	stopLoad()
	load.Wait()
	require.Equal(t, "rebuild", op["kind"])
	require.Equal(t, "billing", op["target"])
	require.Equal(t, "0", fmt.Sprint(op["differences"]), "%v", op)
	require.NotEqual(t, "0", fmt.Sprint(op["events_applied"]))

	caughtUp := func() {
		e2ekit.Eventually(t, 30*time.Second, "billing applied every command", func() (bool, string) {
			code := s.get(t, s.api, usageNow(last), token)
			return code == http.StatusOK, fmt.Sprint(code)
		})
	}
	caughtUp()
	e2ekit.CheckStorageAndBilling(t, ctx, s.pool, e2ekit.LoadEvents(t, ctx, s.pool))

	// Four rows corrupted: two sizes, one row gone, one row that no event
	// made.
	owner := ownerOf(t, s, token)
	_, err := s.pool.Exec(ctx, `UPDATE billing_files SET size_bytes = size_bytes + 7
		WHERE file_id IN (SELECT file_id FROM billing_files WHERE owner_id = $1 AND size_bytes IS NOT NULL ORDER BY file_id LIMIT 2)`, owner)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `DELETE FROM billing_files WHERE file_id = (SELECT file_id FROM billing_files WHERE owner_id = $1 ORDER BY file_id DESC LIMIT 1)`, owner)
	require.NoError(t, err)
	_, err = s.pool.Exec(ctx, `INSERT INTO billing_files (file_id, owner_id, size_bytes, uploaded_at, position) VALUES ($1, $2, 5, now(), 1)`, uuid.New(), owner)
	require.NoError(t, err)

	op = s.runOperation(t, "/v1/admin/subscribers/billing/rebuild", nil)
	require.Equal(t, "4", fmt.Sprint(op["differences"]), "%v", op)
	e2ekit.CheckStorageAndBilling(t, ctx, s.pool, e2ekit.LoadEvents(t, ctx, s.pool))
	// Repaired: a third finds nothing.
	op = s.runOperation(t, "/v1/admin/subscribers/billing/rebuild", nil)
	require.Equal(t, "0", fmt.Sprint(op["differences"]))

	// Projections verify on the same history: nothing differs.
	op = s.runOperation(t, "/v1/admin/projections/rebuild", map[string]any{"swap": false})
	require.Equal(t, "projections_rebuild", op["kind"])
	require.Equal(t, "0", fmt.Sprint(op["differences"]))
}
