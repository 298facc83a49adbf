package backoff

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The bounds of the waits under test.
const lo, hi = 100 * time.Millisecond, time.Second

func TestDelayDoublesUpToTheCapWithJitter(t *testing.T) {
	t.Parallel()
	for failures, want := range map[int]time.Duration{1: lo, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: hi, 60: hi, 1 << 30: hi} {
		require.Equal(t, want, Delay(lo, hi, failures, 1), "%d failures, no jitter", failures)
		require.Equal(t, max(want/2, lo), Delay(lo, hi, failures, 0.5), "%d failures, most jitter", failures)
	}
	require.Zero(t, Delay(0, hi, 1<<30, 1), "a zero floor stays zero")
}

func TestExponentialStaysWithinItsBoundsGrowsToTheCapAndResets(t *testing.T) {
	t.Parallel()
	e := New(lo, hi)
	var waits []time.Duration
	for range 1000 {
		d := e.Next()
		require.GreaterOrEqual(t, d, lo)
		require.LessOrEqual(t, d, hi)
		waits = append(waits, d)
	}
	require.Equal(t, lo, waits[0], "the first wait is the floor")
	// Past the doubling, each wait is in [hi/2, hi), and not all the same.
	tail := waits[10:]
	distinct := map[time.Duration]bool{}
	for _, d := range tail {
		require.GreaterOrEqual(t, d, hi/2)
		require.Less(t, d, hi)
		distinct[d] = true
	}
	require.Greater(t, len(distinct), 10, "jitter spreads the waits")

	e.Reset()
	require.Equal(t, lo, e.Next(), "after a reset, the floor again")

	// The jitter's extremes, one failure after another.
	e.Reset()
	e.jitter = func() float64 { return 0 }
	require.Equal(t, []time.Duration{lo, lo, 2 * lo, 4 * lo, hi / 2}, []time.Duration{e.Next(), e.Next(), e.Next(), e.Next(), e.Next()})
	e.Reset()
	e.jitter = func() float64 { return 0.999999 }
	got := []time.Duration{e.Next(), e.Next(), e.Next(), e.Next(), e.Next()}
	for i, want := range []time.Duration{lo, 2 * lo, 4 * lo, 8 * lo, hi} {
		require.InDelta(t, float64(want), float64(got[i]), float64(time.Microsecond), "wait %d", i+1)
	}

	require.Equal(t, hi, New(hi, lo).Next(), "a cap under the floor is the floor")
}

func TestSleepEndsWithTheContext(t *testing.T) {
	t.Parallel()
	require.True(t, Sleep(t.Context(), time.Millisecond))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	start := time.Now()
	require.False(t, Sleep(ctx, time.Hour))
	require.Less(t, time.Since(start), time.Second)
}
