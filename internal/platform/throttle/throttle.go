// Package throttle lets something that may happen on every call (a log
// line about a failure that an outage repeats for every command) happen at
// most once per interval, whichever goroutine asks.
package throttle

import (
	"sync/atomic"
	"time"
)

// Every allows once per Interval. Its zero value with Interval set is
// ready, and allows the first call.
type Every struct {
	Interval time.Duration
	last     atomic.Int64 // unix nanoseconds of the last call allowed
}

// Allow reports whether now is at least Interval after the last call it
// allowed; of calls racing for the same turn, one is allowed.
func (e *Every) Allow() bool {
	now := time.Now().UnixNano()
	last := e.last.Load()
	return (last == 0 || now-last >= int64(e.Interval)) && e.last.CompareAndSwap(last, now)
}
