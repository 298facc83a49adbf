package billing

import (
	"crypto/sha256"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// BenchmarkCloseOne is the arithmetic of one statement at its close (the
// price, its lines and amount_due, the hash of one new event), without
// the database: go test -run '^$' -bench CloseOne ./internal/subscribers/billing
func BenchmarkCloseOne(b *testing.B) {
	v, err := ParsePrice("0.00003", "USD")
	if err != nil {
		b.Fatal(err)
	}
	start := time.Date(2026, 12, 7, 11, 0, 0, 0, time.UTC)
	d := due{owner: uuid.New(), start: start, end: start.Add(time.Hour), cum: new(big.Rat)}
	later := []*dbsqlc.BillingCloseEventsRow{{OwnerID: d.owner, Position: 10, ID: uuid.New(), OccurredAt: start.Add(time.Minute)}}
	bs := big.NewRat(3_600_000_000_000, 1)
	for b.Loop() {
		if _, err := closeOne(d, bs, v, sha256.New(), later, 100); err != nil {
			b.Fatal(err)
		}
	}
}
