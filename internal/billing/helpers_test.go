package billing_test

import (
	"encoding/json"
	"time"

	"github.com/catacloud/epoch/internal/eventstore"
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
