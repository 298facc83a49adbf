package outbox_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/testkit/testbroker"
)

// While a queue nacks every publish, the relay deletes no row, replaces its
// publisher's session after each nacked batch, and holds the failing
// partitions off, NOTIFYs and polls notwithstanding: a few cycles per
// MaxBackoff. Once the queue is gone every row drains, each stream in
// order.
func TestRelayBacksOffWhileNacked(t *testing.T) {
	t.Parallel()
	e := setup(t, testbroker.New(t), "#")
	testbroker.Block(t, e.amqpURL)
	ctx := context.Background()
	rec := consume(t, e.amqpURL)

	streams := make([]uuid.UUID, 20)
	for i := range streams {
		streams[i] = uuid.New()
	}
	version := int32(0)
	var all []eventstore.Event
	writeVersion := func() {
		version++
		batch := make([]eventstore.Event, len(streams))
		for i, s := range streams {
			batch[i] = newEvent(t, s, version, "file.uploaded")
		}
		write(t, ctx, e.pool, batch)
		all = append(all, batch...)
	}
	for range 3 {
		writeVersion()
	}

	reg := prometheus.NewRegistry()
	const maxBackoff = 400 * time.Millisecond
	pub := startRelay(t, e, outbox.Config{
		// One cycle takes every partition, so they fail, wait and are
		// retried together.
		PartitionShare: 1,
		PollInterval:   20 * time.Millisecond,
		MinBackoff:     20 * time.Millisecond, MaxBackoff: maxBackoff,
	}, reg)
	requireKept := func() {
		t.Helper()
		pending, _, err := outbox.Backlog(ctx, e.pool)
		require.NoError(t, err)
		require.Equal(t, int64(len(all)), pending, "outbox rows deleted while their events were nacked")
	}

	require.Eventually(t, func() bool { return counter(t, reg, "epoch_relay_failed_total") >= float64(len(all)) },
		30*time.Second, 10*time.Millisecond, "the relay never saw its batch nacked")
	require.Eventually(t, func() bool { return pub.Sessions() >= 2 },
		30*time.Second, 10*time.Millisecond, "the publisher kept its nacked session")
	requireKept()
	// Past the doubling from MinBackoff, each wait is at least half of
	// MaxBackoff.
	time.Sleep(1500 * time.Millisecond)

	cycles, sessions := phaseCount(t, reg, "publish"), pub.Sessions()
	const window = 2 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); {
		// Each commit wakes the relay, on the partitions it holds off.
		writeVersion()
		requireKept()
		time.Sleep(100 * time.Millisecond)
	}
	cycles = phaseCount(t, reg, "publish") - cycles
	sessions = pub.Sessions() - sessions
	t.Logf("in %s while nacked: %d publish cycles, %d sessions opened", window, cycles, sessions)
	require.LessOrEqual(t, cycles, uint64(window/(maxBackoff/2))+2, "publish cycles in %s while nacked", window)
	require.GreaterOrEqual(t, cycles, uint64(2), "the relay stopped retrying")
	require.GreaterOrEqual(t, sessions, uint64(1), "no fresh session after nacked cycles")
	require.LessOrEqual(t, sessions, cycles+1, "sessions opened in %s, for %d cycles", window, cycles)
	// Each batch was one chunk, all of it sent and nacked: every message
	// published is counted failed once, none confirmed.
	require.Zero(t, counter(t, reg, "epoch_relay_confirmed_total"))
	require.Equal(t, counter(t, reg, "epoch_relay_published_total"), counter(t, reg, "epoch_relay_failed_total"))
	requireKept()

	testbroker.Unblock(t, e.amqpURL)
	rec.waitAll(t, all, 30*time.Second)
	rec.requireStreamOrder(t)
	requireOutboxEmpty(t, e.pool)
}
