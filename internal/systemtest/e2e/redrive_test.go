package e2e_test

import (
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// Billing's queue purged while its worker is down: min_position answers
// 504; a redrive from 0 brings usage back to exact, to the microsecond, and
// the billing worker back afterwards counts nothing twice.
func TestRedriveRecoversAPurgedQueue(t *testing.T) {
	t.Parallel()
	s := newSystem(t, "redrive", "")
	ctx := e2ekit.CtxFor(t, 2*time.Minute)
	// Billing in a worker of its own, so it can stop alone.
	s.worker.Kill()
	workerEnv := func(roles string) map[string]string {
		return map[string]string{
			"EPOCH_DATABASE_URL": s.apiEnv["EPOCH_DATABASE_URL"], "EPOCH_AMQP_URL": s.amqpURL,
			"EPOCH_DB_MAX_CONNS": "5", "EPOCH_WORKER_ROLES": roles, "EPOCH_RELAY_POLL_INTERVAL": "100ms",
		}
	}
	relay := bin.Start(t, "worker", "redrive-relay", workerEnv("relay,storage"))
	relay.WaitReady(t, 30*time.Second)
	billingWorker := bin.Start(t, "worker", "redrive-billing", workerEnv("billing"))
	billingWorker.WaitReady(t, 30*time.Second)

	token := s.newUser(t, "payer")
	commands := func(n int) int64 {
		var last int64
		for i := range n {
			f := s.call(t, http.StatusCreated, "POST", "/v1/files", token, map[string]any{"name": fmt.Sprint("f", i), "size_bytes": 1000 + i})
			last = f.Position(t)
			if i%3 == 0 {
				last = s.call(t, http.StatusNoContent, "DELETE", "/v1/files/"+f.JSON(t)["id"].(string), token, nil).Position(t)
			}
		}
		return last
	}
	usage := func(minPosition int64) int { return s.get(t, s.api, usageNow(minPosition), token) }
	first := commands(6)
	require.Equal(t, http.StatusOK, usage(first))

	billingWorker.Kill()
	last := commands(9)
	// The relay publishes them into billing's queue; then it is purged.
	conn, err := amqp.Dial(s.amqpURL)
	require.NoError(t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(t, err)
	e2ekit.Eventually(t, 20*time.Second, "billing's queue holds what the relay published", func() (bool, string) {
		q, err := ch.QueueDeclarePassive("catacloud.billing", true, false, false, false, amqp.Table{amqp.QueueTypeArg: amqp.QueueTypeQuorum})
		require.NoError(t, err)
		return e2ekit.OutboxBacklog(t, ctx, s.pool) == 0 && q.Messages > 0, "messages " + strconv.Itoa(q.Messages)
	})
	purged, err := ch.QueuePurge("catacloud.billing", false)
	require.NoError(t, err)
	require.Positive(t, purged)
	require.Equal(t, http.StatusGatewayTimeout, usage(last))

	op := s.call(t, http.StatusAccepted, "POST", "/v1/admin/subscribers/billing/redrive", adminToken, map[string]any{"from_position": 0})
	location := op.Header.Get("Location")
	var state map[string]any
	e2ekit.Eventually(t, 30*time.Second, "the redrive ends", func() (bool, string) {
		state = s.call(t, http.StatusOK, "GET", location, adminToken, nil).JSON(t)
		return state["state"] != "running", fmt.Sprint(state)
	})
	require.Equal(t, "done", state["state"], "%v", state)
	require.Equal(t, strconv.Itoa(purged), fmt.Sprint(state["events_applied"]), "the redrive applied what was purged, and nothing else")
	require.Equal(t, http.StatusOK, usage(last))
	events := e2ekit.LoadEvents(t, ctx, s.pool)
	e2ekit.CheckStorageAndBilling(t, ctx, s.pool, events)

	// The billing worker back: nothing left to apply, nothing counted twice.
	billingWorker = bin.Start(t, "worker", "redrive-billing-again", workerEnv("billing"))
	billingWorker.WaitReady(t, 30*time.Second)
	final := commands(2)
	require.Equal(t, http.StatusOK, usage(final))
	e2ekit.CheckStorageAndBilling(t, ctx, s.pool, e2ekit.LoadEvents(t, ctx, s.pool))
	require.Equal(t, e2ekit.CountFileEvents(e2ekit.LoadEvents(t, ctx, s.pool)), e2ekit.InboxCount(t, ctx, s.pool, "billing"))
}
