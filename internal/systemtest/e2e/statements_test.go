package e2e_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// statementKeys is a statement.closed event's data fields.
var statementKeys = []string{"amount", "amount_due", "byte_seconds", "closed_at", "covered_position", "currency",
	"events_sha256", "gb_hours", "id", "lines", "owner_id", "period_end", "period_start", "price_version", "state"}

// With 2 s periods, commands landing, two billing workers and each of
// them SIGKILLed while periods close: every ended period of every user
// gets exactly one statement.closed, each reaches the exchange under the
// message contract, and verification finds nothing to report. A closed
// statement then never changes: after more commands, a billing rebuild, a
// redrive of every event, and a billing worker SIGKILLed and started again.
func TestStatementsCloseOnceEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := e2ekit.CtxFor(t, 3*time.Minute)
	s := newSystem(t, "statements", "")
	s.worker.Kill()
	s.api.Kill()
	periodEnv := map[string]string{"EPOCH_BILLING_PERIOD": "2s"}
	apiEnv := map[string]string{}
	for k, v := range s.apiEnv {
		apiEnv[k] = v
	}
	for k, v := range periodEnv {
		apiEnv[k] = v
	}
	s.api = bin.Start(t, "api", "statements-api-2s", apiEnv)
	s.api.WaitReady(t, 30*time.Second)
	workerEnv := func(roles string) map[string]string {
		env := map[string]string{
			"EPOCH_DATABASE_URL": s.apiEnv["EPOCH_DATABASE_URL"], "EPOCH_AMQP_URL": s.amqpURL,
			"EPOCH_DB_MAX_CONNS": "5", "EPOCH_WORKER_ROLES": roles, "EPOCH_RELAY_POLL_INTERVAL": "100ms",
		}
		for k, v := range periodEnv {
			env[k] = v
		}
		return env
	}
	relay := bin.Start(t, "worker", "statements-relay", workerEnv("relay,storage"))
	relay.WaitReady(t, 30*time.Second)
	billingA := bin.Start(t, "worker", "statements-billing-a", workerEnv("billing"))
	billingB := bin.Start(t, "worker", "statements-billing-b", workerEnv("billing"))
	billingA.WaitReady(t, 30*time.Second)
	billingB.WaitReady(t, 30*time.Second)

	tokens := []string{s.newUser(t, "a"), s.newUser(t, "b"), s.newUser(t, "c")}
	var mu sync.Mutex
	var last int64
	commands := func(d time.Duration) {
		var wg sync.WaitGroup
		for u, token := range tokens {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(u), uint64(time.Now().UnixNano())))
				var files []string
				for end := time.Now().Add(d); time.Now().Before(end); {
					var a e2ekit.Answer
					if len(files) > 0 && rng.IntN(3) == 0 {
						a = s.call(t, http.StatusNoContent, "DELETE", "/v1/files/"+files[0], token, nil)
						files = files[1:]
					} else {
						a = s.call(t, http.StatusCreated, "POST", "/v1/files", token, map[string]any{"name": "f", "size_bytes": 1 + rng.Int64N(5_000_000_000)})
						files = append(files, a.JSON(t)["id"].(string))
					}
					mu.Lock()
					last = max(last, a.Position(t))
					mu.Unlock()
					time.Sleep(time.Duration(20+rng.IntN(60)) * time.Millisecond)
				}
			}()
		}
		wg.Wait()
	}

	// Commands for 9 s; each billing worker SIGKILLed once while periods
	// close (a period ends every 2 s), and started again.
	done := make(chan struct{})
	go func() { defer close(done); commands(9 * time.Second) }()
	for i, w := range []**e2ekit.Proc{&billingA, &billingB} {
		time.Sleep(3*time.Second + time.Duration(rand.IntN(1000))*time.Millisecond)
		require.NoError(t, (*w).Signal(syscall.SIGKILL))
		<-(*w).Done()
		*w = bin.Start(t, "worker", fmt.Sprintf("statements-billing-again-%d", i), workerEnv("billing"))
	}
	<-done

	// Every period that ended 3 s ago or more is closed for every user.
	var cutoff time.Time
	require.NoError(t, s.pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&cutoff))
	type ownerPeriod struct{ owner, start string }
	expected := map[ownerPeriod]bool{}
	rows, err := s.pool.Query(ctx, `SELECT o.owner_id::text, p::text FROM billing_owners o,
		generate_series(date_bin('2 seconds', o.first_upload_at, 'epoch'), $1::timestamptz - interval '2 seconds', interval '2 seconds') p`,
		cutoff.Truncate(2*time.Second))
	require.NoError(t, err)
	for rows.Next() {
		var op ownerPeriod
		require.NoError(t, rows.Scan(&op.owner, &op.start))
		expected[op] = true
	}
	require.NoError(t, rows.Err())
	require.NotEmpty(t, expected)
	e2ekit.Eventually(t, 30*time.Second, "every ended period closed", func() (bool, string) {
		var n int
		err := s.pool.QueryRow(ctx, `SELECT count(*) FROM billing_statements WHERE period_end <= $1`, cutoff.Truncate(2*time.Second)).Scan(&n)
		require.NoError(t, err)
		return n == len(expected), fmt.Sprintf("%d of %d", n, len(expected))
	})
	var closedEvents, statements, distinct int
	require.NoError(t, s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events WHERE type = 'statement.closed'),
		(SELECT count(*) FROM billing_statements), (SELECT count(DISTINCT (owner_id, period_start)) FROM billing_statements)`).
		Scan(&closedEvents, &statements, &distinct))
	require.Equal(t, statements, closedEvents, "one statement.closed per statement")
	require.Equal(t, statements, distinct, "one statement per owner and period")

	// Each statement.closed reaches the exchange, under the contract.
	events := e2ekit.LoadEvents(t, ctx, s.pool)
	var closed []e2ekit.Event
	for _, e := range events {
		if e.Type == "statement.closed" {
			closed = append(closed, e)
		}
	}
	e2ekit.Eventually(t, 30*time.Second, "every statement.closed on the exchange", s.rec.HasAll(e2ekit.EventIDs(closed)))
	first, _ := s.rec.Snapshot()
	for _, e := range closed {
		checkMessage(t, e, first[e.ID.String()])
		var data map[string]any
		require.NoError(t, json.Unmarshal(e.Data, &data))
		require.Equal(t, "closed", data["state"])
		closedAt, err := time.Parse(time.RFC3339Nano, data["closed_at"].(string))
		require.NoError(t, err)
		require.True(t, closedAt.Equal(e.OccurredAt), "closed_at %s, the event occurred at %s", closedAt, e.OccurredAt)
		periodEnd, err := time.Parse(time.RFC3339Nano, data["period_end"].(string))
		require.NoError(t, err)
		require.False(t, closedAt.Before(periodEnd), "closed before its period ended")
	}
	verify := s.runOperation(t, "/v1/admin/statements/verify", map[string]any{"from": "2000-01-01T00:00:00Z", "to": "3000-01-01T00:00:00Z"})
	require.Equal(t, "0", fmt.Sprint(verify["differences"]), "%v", verify)
	require.Equal(t, "statements_verify", verify["kind"])

	// The closed statements as the API answers them, and again after all
	// that must not change them.
	closedNow := func() map[string]string {
		out := map[string]string{}
		for _, token := range tokens {
			page := s.call(t, http.StatusOK, "GET", "/v1/statements?limit=1000", token, nil).JSON(t)
			for _, item := range page["items"].([]any) {
				st := item.(map[string]any)
				if st["state"] != "closed" {
					continue
				}
				b, err := json.Marshal(st)
				require.NoError(t, err)
				out[st["id"].(string)] = string(b)
				one := s.call(t, http.StatusOK, "GET", "/v1/statements/"+st["id"].(string), token, nil).JSON(t)
				b1, err := json.Marshal(one)
				require.NoError(t, err)
				require.JSONEq(t, string(b), string(b1))
			}
		}
		return out
	}
	before := closedNow()
	require.GreaterOrEqual(t, len(before), len(expected))
	unchanged := func(when string) {
		after := closedNow()
		for id, b := range before {
			require.JSONEq(t, b, after[id], "statement %s changed %s", id, when)
		}
	}
	commands(2 * time.Second)
	unchanged("after more commands")
	s.runOperation(t, "/v1/admin/subscribers/billing/rebuild", nil)
	unchanged("after a billing rebuild")
	s.runOperation(t, "/v1/admin/subscribers/billing/redrive", map[string]any{"from_position": 0})
	unchanged("after a redrive of every event")
	require.NoError(t, billingA.Signal(syscall.SIGKILL))
	<-billingA.Done()
	billingA = bin.Start(t, "worker", "statements-billing-after-kill", workerEnv("billing"))
	billingA.WaitReady(t, 30*time.Second)
	commands(2 * time.Second)
	unchanged("after a billing worker was SIGKILLed and started again")
	require.Equal(t, http.StatusOK, s.get(t, s.api, usageNow(last), tokens[0]))
}
