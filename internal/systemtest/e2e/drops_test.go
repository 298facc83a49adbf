package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

// Connections to the broker dropped mid-relay, end to end: while the
// worker process relays and consumes, every connection of its vhost is
// closed (as `rabbitmqctl close_all_connections` does) three times. The
// worker recovers by itself — no restart — and every event arrives, with
// storage and billing exact. (A whole node's loss is the cluster tests'.)
func TestConnectionsDroppedEndToEnd(t *testing.T) {
	t.Parallel()
	const totalEvents, drops = 4000, 3
	ctx := e2ekit.CtxFor(t, 2*time.Minute)
	start := time.Now()
	s := newSystem(t, "drops", "")

	prod := newProducer(t, s.pool, 2, 5)
	var wg sync.WaitGroup
	prodErr := make(chan error, 2)
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := prod.runUpTo(ctx, g, totalEvents); err != nil {
				prodErr <- err
				prod.stop()
			}
		}()
	}
	t.Cleanup(func() { prod.stop(); wg.Wait() })

	for drop := range drops {
		share := int64(totalEvents * (drop + 1) / drops)
		prod.raise(share)
		before := s.rec.Distinct()
		frac := 0.1 + 0.6*rand.Float64()
		e2ekit.Eventually(t, 30*time.Second, "relay progress", func() (bool, string) {
			goal := before + int(frac*float64(int(share)-before))
			return s.rec.Distinct() >= goal, fmt.Sprintf("recorder has %d, waiting for %d", s.rec.Distinct(), goal)
		})
		backlog := e2ekit.OutboxBacklog(t, ctx, s.pool)
		testbroker.CloseConnections(t, s.amqpURL)
		t.Logf("drop %d: connections closed with %d outbox rows left, recorder at %d", drop, backlog, s.rec.Distinct())
	}
	wg.Wait()
	select {
	case err := <-prodErr:
		t.Fatalf("producer: %v", err)
	default:
	}

	events := e2ekit.LoadEvents(t, ctx, s.pool)
	ids := e2ekit.EventIDs(events)
	fileEvents := e2ekit.CountFileEvents(events)
	e2ekit.Eventually(t, 45*time.Second, "outbox drained, every event on the exchange, both subscribers caught up", func() (bool, string) {
		backlog := e2ekit.OutboxBacklog(t, ctx, s.pool)
		missing, _ := s.rec.Missing(ids)
		st, bi := e2ekit.InboxCount(t, ctx, s.pool, "storage"), e2ekit.InboxCount(t, ctx, s.pool, "billing")
		return backlog == 0 && missing == 0 && st == fileEvents && bi == fileEvents,
			fmt.Sprintf("outbox %d rows, %d events not received, inbox storage %d billing %d of %d file events", backlog, missing, st, bi, fileEvents)
	})
	require.False(t, s.worker.Exited(), "the worker must ride out dropped connections, not exit: %v", s.worker.Err())
	e2ekit.CheckStorageAndBilling(t, ctx, s.pool, events)
	distinct, deliveries := s.rec.Stats()
	t.Logf("%d events after %d drops; %d deliveries of %d ids; total %s", len(events), drops, deliveries, distinct, time.Since(start))
}
