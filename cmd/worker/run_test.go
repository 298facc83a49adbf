package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/broker"
	"github.com/catacloud/epoch/internal/testbroker"
)

// EPOCH_DECLARE_TOPOLOGY=only declares and returns, without a database:
// the compose one-shot has none.
func TestDeclareOnlyNeedsNoDatabase(t *testing.T) {
	t.Parallel()
	url := testbroker.New(t)
	cfg := config{
		DatabaseURL:     "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=1",
		AMQPURL:         url,
		WorkerRoles:     knownRoles,
		DeclareTopology: declareOnly,
		DeliveryLimit:   broker.DefaultDeliveryLimit,
		StartupTimeout:  10 * time.Second,
		RelayLanes:      1,
	}
	require.NoError(t, cfg.validate())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, run(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil))))

	conn, err := amqp.Dial(url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	require.NoError(t, err)
	for _, q := range []string{broker.QueueName(roleStorage), broker.DeadQueueName(roleBilling), broker.Unsubscribed} {
		_, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
		require.NoError(t, err, "%s declared", q)
	}
}

func TestDeclareTopologyValues(t *testing.T) {
	t.Parallel()
	for value, ok := range map[string]bool{"true": true, "false": true, "only": true, "yes": false, "": false} {
		cfg := config{WorkerRoles: knownRoles, RelayLanes: 1, DeliveryLimit: 1, DeclareTopology: value}
		if ok {
			require.NoError(t, cfg.validate(), value)
		} else {
			require.ErrorContains(t, cfg.validate(), "EPOCH_DECLARE_TOPOLOGY", value)
		}
	}
}
