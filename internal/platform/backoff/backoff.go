// Package backoff is the one wait between retries of the loops that keep
// going through failures (the broker's and Postgres's redials, a batch or
// command tried again, the binaries' start-up waits, the relay's held-off
// partitions): a wait that doubles with each failure in a row, from a floor
// up to a cap, with jitter, so that the processes and goroutines that
// failed together do not all try again at the same instant.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// The bounds of a wait where a Config leaves them zero.
const (
	DefaultMin = 100 * time.Millisecond
	DefaultMax = 5 * time.Second
)

// Delay is the wait after failures failures in a row (1 for the first):
// lo doubled for each failure after the first, at most hi, times jitter in
// [0.5, 1), and never under lo.
func Delay(lo, hi time.Duration, failures int, jitter float64) time.Duration {
	d := lo
	for i := 1; i < failures && d > 0 && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return max(time.Duration(float64(d)*jitter), lo)
}

// Exponential is one loop's run of waits: Next after each failure, Reset
// after a success. It is not safe for concurrent use; each loop has its
// own.
type Exponential struct {
	lo, hi   time.Duration
	failures int
	jitter   func() float64 // in [0, 1)
}

// New returns waits from lo up to hi (hi under lo counts as lo).
func New(lo, hi time.Duration) *Exponential {
	return &Exponential{lo: lo, hi: max(lo, hi), jitter: rand.Float64}
}

// Next counts a failure and returns the wait before the next try.
func (e *Exponential) Next() time.Duration {
	if e.failures < 64 { // past the cap long before; keeps the count bounded
		e.failures++
	}
	return Delay(e.lo, e.hi, e.failures, 0.5+e.jitter()/2)
}

// Reset forgets the failures: the next wait is the floor again.
func (e *Exponential) Reset() { e.failures = 0 }

// Sleep waits d, or less if ctx ends first; it reports whether the whole
// of d passed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
