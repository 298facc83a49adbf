package throttle

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestOnceAnIntervalWhoeverAsks(t *testing.T) {
	e := &Every{Interval: 50 * time.Millisecond}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if e.Allow() {
				allowed.Add(1)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, int32(1), allowed.Load(), "the first turn is one caller's")
	require.False(t, e.Allow(), "within the interval")
	time.Sleep(60 * time.Millisecond)
	require.True(t, e.Allow(), "after it")
}
