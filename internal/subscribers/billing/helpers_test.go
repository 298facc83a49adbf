package billing_test

import (
	"encoding/json"
	"math/big"
	"time"

	"github.com/catacloud/epoch/internal/core/eventstore"
)

func mustJSON(e eventstore.Event, into any) {
	if err := json.Unmarshal(e.Data, into); err != nil {
		panic(err)
	}
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// bsUpTo is size bytes stored from from to to, in byte-seconds.
func bsUpTo(from, to time.Time, size int64) *big.Rat {
	us := big.NewInt(to.Sub(from).Microseconds())
	return new(big.Rat).SetFrac(us.Mul(us, big.NewInt(size)), big.NewInt(1_000_000))
}
