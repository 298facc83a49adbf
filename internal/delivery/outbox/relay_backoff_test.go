package outbox

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The waits themselves are backoff.Delay's (its tests): here, that a
// partition's failures in a row grow them and a confirm forgives them.
func TestHoldOffDoublesUpToMaxWithJitterAndForgives(t *testing.T) {
	t.Parallel()
	const lo, hi = 100 * time.Millisecond, time.Second
	h := newHoldOff(lo, hi)
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
