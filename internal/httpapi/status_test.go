package httpapi_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/delivery/broker"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/rabbitadmin"
	"github.com/catacloud/epoch/internal/subscribers"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/opstatustest"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

// inlineBilling runs billing in the command's transaction, storage remote.
func inlineBilling(t *testing.T) func(*httpapi.Config) {
	return func(c *httpapi.Config) {
		d, err := dispatch.New(subscribers.Projections(), subscribers.Movable(), []string{billing.Name})
		require.NoError(t, err)
		c.Commands = command.NewService(c.Pool, d)
	}
}

// statusBody is GET /v1/admin/status as DESIGN.md spells it, every field
// required: decoding into it would hide a missing one, so the keys are
// checked on the raw answer too.
type statusBody struct {
	Outbox struct {
		Pending          int64   `json:"pending"`
		OldestAgeSeconds float64 `json:"oldest_age_seconds"`
		BlockedBy        []struct {
			PID        int32   `json:"pid"`
			State      string  `json:"state"`
			AgeSeconds float64 `json:"age_seconds"`
		} `json:"blocked_by"`
	} `json:"outbox"`
	Subscribers []struct {
		Name            string     `json:"name"`
		Placement       string     `json:"placement"`
		AppliedPosition int64      `json:"applied_position"`
		QueueMessages   *int64     `json:"queue_messages"`
		DeadLetters     int64      `json:"dead_letters"`
		LagPositions    int64      `json:"lag_positions"`
		LagSeconds      float64    `json:"lag_seconds"`
		Healed          int64      `json:"healed"`
		LastHealedAt    *time.Time `json:"last_healed_at"`
	} `json:"subscribers"`
}

func getStatus(t *testing.T, e *env) statusBody {
	t.Helper()
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/admin/status", Token: adminToken})
	outbox := got.JSON["outbox"].(map[string]any)
	require.ElementsMatch(t, []string{"pending", "oldest_age_seconds", "blocked_by"}, keys(outbox))
	for _, tx := range outbox["blocked_by"].([]any) {
		require.ElementsMatch(t, []string{"pid", "state", "age_seconds"}, keys(tx.(map[string]any)))
	}
	for _, sub := range got.JSON["subscribers"].([]any) {
		require.ElementsMatch(t, []string{"name", "placement", "applied_position", "queue_messages", "dead_letters",
			"lag_positions", "lag_seconds", "healed", "last_healed_at"}, keys(sub.(map[string]any)))
	}
	var body statusBody
	require.NoError(t, json.Unmarshal(got.Raw, &body))
	return body
}

// With no relay and no worker, the status counts the outbox, names the
// transaction holding it open, and counts each subscriber's dead letters;
// without a broker to ask, queue_messages is null.
func TestAdminStatusWithoutRelay(t *testing.T) {
	t.Parallel()
	admin, err := rabbitadmin.NewAt("http://127.0.0.1:1", amqp.URI{Username: "guest", Password: "guest"}, time.Second)
	require.NoError(t, err)
	e := setup(t, inlineBilling(t), func(c *httpapi.Config) {
		c.QueueMessages = func(ctx context.Context, queue string) (int64, error) {
			return admin.QueueMessages(ctx, "/", queue)
		}
	})
	e.must(t, http.StatusUnauthorized, req{Method: "GET", Path: "/v1/admin/status"})
	e.must(t, http.StatusUnauthorized, req{Method: "GET", Path: "/v1/admin/status", Token: "wrong"})

	s := getStatus(t, e)
	require.Zero(t, s.Outbox.Pending)
	require.Zero(t, s.Outbox.OldestAgeSeconds, "0, not null, when nothing waits")
	require.Empty(t, s.Outbox.BlockedBy)

	opstatustest.Write(t, e.pool, 2)
	pid := opstatustest.HoldOpen(t, e.pool)
	opstatustest.DeadLetters(t, e.pool, "storage", 3)

	s = getStatus(t, e)
	require.EqualValues(t, 2, s.Outbox.Pending)
	require.Greater(t, s.Outbox.OldestAgeSeconds, 0.0)
	require.Len(t, s.Outbox.BlockedBy, 1)
	require.Equal(t, pid, s.Outbox.BlockedBy[0].PID)
	require.Equal(t, "idle in transaction", s.Outbox.BlockedBy[0].State)
	require.Greater(t, s.Outbox.BlockedBy[0].AgeSeconds, 0.0)
	require.Len(t, s.Subscribers, 2)
	require.Equal(t, "storage", s.Subscribers[0].Name)
	require.Equal(t, "remote", s.Subscribers[0].Placement)
	require.EqualValues(t, 3, s.Subscribers[0].DeadLetters)
	require.Nil(t, s.Subscribers[0].QueueMessages, "the management API does not answer")
	require.EqualValues(t, 2, s.Subscribers[0].LagPositions, "nothing consumes for storage: it is behind the store by the two events")
	require.Greater(t, s.Subscribers[0].LagSeconds, 0.0)
	require.Zero(t, s.Subscribers[0].Healed)
	require.Nil(t, s.Subscribers[0].LastHealedAt)
	require.Equal(t, "billing", s.Subscribers[1].Name)
	require.Equal(t, "inline", s.Subscribers[1].Placement)
	require.Zero(t, s.Subscribers[1].DeadLetters)
	require.Nil(t, s.Subscribers[1].QueueMessages)
}

// queue_messages is what the broker's management API says each queue
// holds.
func TestAdminStatusQueueMessages(t *testing.T) {
	t.Parallel()
	amqpURL := testbroker.New(t)
	uri, err := amqp.ParseURI(amqpURL)
	require.NoError(t, err)
	conn, err := amqp.Dial(amqpURL)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	require.NoError(t, broker.DeclareTopology(ch, subscribers.Movable().Subscriptions(), 20))
	for range 3 {
		require.NoError(t, ch.PublishWithContext(t.Context(), "", broker.QueueName("storage"), false, false, amqp.Publishing{Body: []byte("x")}))
	}

	admin := rabbitadmin.New(uri)
	e := setup(t, inlineBilling(t), func(c *httpapi.Config) {
		c.QueueMessages = func(ctx context.Context, queue string) (int64, error) {
			return admin.QueueMessages(ctx, uri.Vhost, queue)
		}
	})
	// The management API samples queues every few seconds.
	var s statusBody
	require.Eventually(t, func() bool {
		s = getStatus(t, e)
		return s.Subscribers[0].QueueMessages != nil && *s.Subscribers[0].QueueMessages == 3 && s.Subscribers[1].QueueMessages != nil
	}, 30*time.Second, 250*time.Millisecond, "%+v", s)
	require.Zero(t, *s.Subscribers[1].QueueMessages)
}
