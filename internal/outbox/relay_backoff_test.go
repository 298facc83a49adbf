package outbox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestHoldOffDoublesUpToMaxWithJitterAndForgives(t *testing.T) {
	t.Parallel()
	const lo, hi = 100 * time.Millisecond, time.Second
	h := newHoldOff(lo, hi)
	for failures, want := range map[int]time.Duration{1: lo, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: hi, 60: hi} {
		require.Equal(t, want, h.wait(failures, 1), "%d failures, no jitter", failures)
		require.Equal(t, max(want/2, lo), h.wait(failures, 0.5), "%d failures, most jitter", failures)
	}

	h.jitter = func() float64 { return 0.999999 } // a wait of almost the whole
	now := time.Now()
	h.record(now, []int16{1, 2, 3}, map[int16]bool{1: true, 2: true})
	require.ElementsMatch(t, []int16{1, 2}, h.held(now))
	at, ok := h.next(now)
	require.True(t, ok)
	require.WithinDuration(t, now.Add(lo), at, time.Millisecond)

	// Partition 1 fails again, 2 is confirmed.
	later := now.Add(lo)
	h.record(later, []int16{1, 2}, map[int16]bool{1: true})
	require.Equal(t, []int16{1}, h.held(later))
	at, _ = h.next(later)
	require.WithinDuration(t, later.Add(2*lo), at, time.Millisecond)
	// Its wait over, it is claimable again, and no longer a time to wake for.
	require.Empty(t, h.held(at))
	_, ok = h.next(at)
	require.False(t, ok)
}
