package outbox

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/catacloud/epoch/internal/platform/backoff"
)

// holdOff keeps a relay's cycles off the partitions whose last publish
// failed (a message nacked, returned, unconfirmed in time or not sent), for
// a wait that doubles with each failure in a row, from MinBackoff up to
// MaxBackoff, with jitter (backoff.Delay). Without it a failing partition is sent again at
// every cycle, NOTIFY or poll, and a broker that refuses messages (a queue
// full, a leader being elected) is asked again at once by every relay; the
// rows stay meanwhile, and the other partitions go on. A partition is
// forgiven by the first cycle that has all of its events confirmed. The
// lanes of a relay share it, as they share the partitions.
type holdOff struct {
	min, max time.Duration
	jitter   func() float64 // in [0, 1)

	mu      sync.Mutex
	waiting map[int16]*retry
}

// retry is a partition's failures in a row and when it may be tried again.
type retry struct {
	failures int
	at       time.Time
}

func newHoldOff(lo, hi time.Duration) *holdOff {
	return &holdOff{min: lo, max: hi, jitter: rand.Float64, waiting: make(map[int16]*retry)}
}

// held returns the partitions a cycle starting at now must not claim.
func (h *holdOff) held(now time.Time) []int16 {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]int16, 0, len(h.waiting))
	for p, r := range h.waiting {
		if now.Before(r.at) {
			out = append(out, p)
		}
	}
	return out
}

// next returns the earliest time after now at which a held partition may
// be tried again; ok is false when none is held. A partition whose wait is
// over but that another relay holds is not counted: waking for it would
// only spin.
func (h *holdOff) next(now time.Time) (at time.Time, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range h.waiting {
		if now.Before(r.at) && (!ok || r.at.Before(at)) {
			at, ok = r.at, true
		}
	}
	return at, ok
}

// record takes a cycle's outcome: each of claimed, the partitions it
// locked, is forgiven unless it is in failed, which waits longer. One
// jitter for the cycle keeps the partitions that failed together retried
// together, in one cycle (and one session of the publisher), while relays
// and lanes that failed at the same moment spread out.
func (h *holdOff) record(now time.Time, claimed []int16, failed map[int16]bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	jitter := 0.5 + h.jitter()/2
	for _, p := range claimed {
		if !failed[p] {
			delete(h.waiting, p)
			continue
		}
		r := h.waiting[p]
		if r == nil {
			r = &retry{}
			h.waiting[p] = r
		}
		r.failures++
		r.at = now.Add(backoff.Delay(h.min, h.max, r.failures, jitter))
	}
}
