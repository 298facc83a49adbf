package e2ekit

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/subscribers/storage"
)

// Event is a row of the events table.
type Event = eventstore.Event

// LoadEvents reads the whole events table in position order.
func LoadEvents(t testing.TB, ctx context.Context, pool *pgxpool.Pool) []Event {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT position, id, stream_type, stream_id, version, type, data::text, occurred_at FROM events ORDER BY position`)
	require.NoError(t, err)
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var data string
		require.NoError(t, rows.Scan(&e.Position, &e.ID, &e.StreamType, &e.StreamID, &e.Version, &e.Type, &data, &e.OccurredAt))
		e.Data = []byte(data)
		out = append(out, e)
	}
	require.NoError(t, rows.Err())
	return out
}

// EventIDs are the events' ids, as message ids.
func EventIDs(events []Event) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID.String()
	}
	return ids
}

// CountFileEvents is how many of events storage and billing handle.
func CountFileEvents(events []Event) int {
	n := 0
	for _, e := range events {
		if e.Type == "file.uploaded" || e.Type == "file.deleted" {
			n++
		}
	}
	return n
}

// StreamOrder checks that order (message ids, each once, as a consumer
// first got them) brings each stream's events in version order without a
// gap: version 1 first, then each the next. events names the ids.
func StreamOrder(events []Event, order []string) error {
	return streamOrder(events, order, true)
}

// StreamAscending checks that order brings each stream's events in
// rising versions, gaps allowed: for arrivals with some left out (the
// broker's redeliveries, which AMQP does not keep in order).
func StreamAscending(events []Event, order []string) error {
	return streamOrder(events, order, false)
}

func streamOrder(events []Event, order []string, gapless bool) error {
	byID := make(map[string]Event, len(events))
	for _, e := range events {
		byID[e.ID.String()] = e
	}
	next := make(map[uuid.UUID]int32)
	for i, id := range order {
		e, ok := byID[id]
		if !ok {
			return fmt.Errorf("arrival %d: message %s is no event of the table", i, id)
		}
		if gapless && e.Version != next[e.StreamID]+1 || !gapless && e.Version <= next[e.StreamID] {
			return fmt.Errorf("arrival %d: stream %s: version %d arrived after %d", i, e.StreamID, e.Version, next[e.StreamID])
		}
		next[e.StreamID] = e.Version
	}
	return nil
}

// fileHistory is one file as its events tell it.
type fileHistory struct {
	owner    uuid.UUID
	size     int64
	uploaded time.Time
	deleted  *time.Time
}

// Truth is what storage and billing must say, computed by brute force from
// the events table alone.
type Truth struct {
	files    map[uuid.UUID]*fileHistory
	Position map[uuid.UUID]int64 // owner → highest position of its file events
}

// BruteForce computes the truth of events.
func BruteForce(t testing.TB, events []Event) Truth {
	t.Helper()
	tr := Truth{files: make(map[uuid.UUID]*fileHistory), Position: make(map[uuid.UUID]int64)}
	for _, e := range events {
		switch e.Type {
		case "file.uploaded":
			var d struct {
				OwnerID   uuid.UUID `json:"owner_id"`
				SizeBytes int64     `json:"size_bytes"`
			}
			require.NoError(t, json.Unmarshal(e.Data, &d))
			f := tr.files[e.StreamID]
			if f == nil {
				f = &fileHistory{}
				tr.files[e.StreamID] = f
			}
			f.owner, f.size, f.uploaded = d.OwnerID, d.SizeBytes, e.OccurredAt
			tr.Position[d.OwnerID] = max(tr.Position[d.OwnerID], e.Position)
		case "file.deleted":
			var d struct {
				OwnerID uuid.UUID `json:"owner_id"`
			}
			require.NoError(t, json.Unmarshal(e.Data, &d))
			f := tr.files[e.StreamID]
			require.NotNil(t, f, "file.deleted of %s before its upload in the events table", e.StreamID)
			at := e.OccurredAt
			f.deleted = &at
			tr.Position[d.OwnerID] = max(tr.Position[d.OwnerID], e.Position)
		}
	}
	return tr
}

// Files is how many files were ever uploaded.
func (tr Truth) Files() int { return len(tr.files) }

// Storage is what owner stores: live files and their bytes.
func (tr Truth) Storage(owner uuid.UUID) (count int64, bytes string) {
	sum := new(big.Int)
	for _, f := range tr.files {
		if f.owner == owner && f.deleted == nil {
			count++
			sum.Add(sum, big.NewInt(f.size))
		}
	}
	return count, sum.String()
}

// ByteSeconds is Σ size × |[uploaded, deleted-or-now) ∩ [from, to)| in
// seconds, exactly, times cut to microseconds as the events keep them.
func (tr Truth) ByteSeconds(owner uuid.UUID, from, to, now time.Time) *big.Rat {
	from, to, now = from.Truncate(time.Microsecond), to.Truncate(time.Microsecond), now.Truncate(time.Microsecond)
	total := new(big.Rat)
	for _, f := range tr.files {
		if f.owner != owner {
			continue
		}
		end := now
		if f.deleted != nil {
			end = *f.deleted
		}
		start := f.uploaded
		if start.Before(from) {
			start = from
		}
		if end.After(to) {
			end = to
		}
		if !end.After(start) {
			continue
		}
		micros := end.Sub(start).Microseconds()
		r := new(big.Rat).SetFrac(new(big.Int).Mul(big.NewInt(f.size), big.NewInt(micros)), big.NewInt(1_000_000))
		total.Add(total, r)
	}
	return total
}

// Owners lists every owner that has file events.
func (tr Truth) Owners() []uuid.UUID {
	var out []uuid.UUID
	for o := range tr.Position {
		out = append(out, o)
	}
	return out
}

// CheckStorageAndBilling compares storage.Read and billing.Read for every
// owner with a brute-force computation from the events, exactly.
func CheckStorageAndBilling(t testing.TB, ctx context.Context, pool *pgxpool.Pool, events []Event) {
	t.Helper()
	tr := BruteForce(t, events)
	settings, err := billing.NewSettings("", "", "0.00003", "USD")
	require.NoError(t, err)
	first, last := events[0].OccurredAt, events[len(events)-1].OccurredAt
	n := len(events)
	windows := []struct{ from, to, now time.Time }{
		{first.Add(-time.Hour), last.Add(time.Second), last.Add(time.Hour)},                                 // everything, now after
		{events[n/3].OccurredAt, events[2*n/3].OccurredAt.Add(123 * time.Microsecond), last.Add(time.Hour)}, // cuts intervals on both sides
		{first.Add(-time.Hour), first.Add(-time.Minute), last},                                              // before anything: 0
	}
	gb := new(big.Rat).SetInt64(1_000_000_000 * 3600)
	owners := tr.Owners()
	require.NotEmpty(t, owners)
	for _, owner := range owners {
		count, bytes := tr.Storage(owner)
		got, err := storage.Read(ctx, pool, owner)
		require.NoError(t, err)
		require.Equal(t, storage.Usage{FileCount: count, Bytes: json.Number(bytes), Position: tr.Position[owner]}, got, "storage of %s", owner)
		for i, w := range windows {
			want := tr.ByteSeconds(owner, w.from, w.to, w.now)
			u, err := billing.Read(ctx, pool, owner, w.from, w.to, w.now, settings)
			require.NoError(t, err)
			require.Equal(t, billing.FormatDecimal(want, 6), u.ByteSeconds, "byte_seconds of %s, window %d", owner, i)
			require.Equal(t, billing.FormatAmount(new(big.Rat).Quo(want, gb)), u.GBHours, "gb_hours of %s, window %d", owner, i)
			require.Equal(t, tr.Position[owner], u.Position, "billing position of %s", owner)
		}
	}
}

// OutboxBacklog is how many events wait in the outbox.
func OutboxBacklog(t testing.TB, ctx context.Context, pool *pgxpool.Pool) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT coalesce(sum(last_position - position + 1), 0) FROM outbox").Scan(&n))
	return n
}

// InboxCount is how many events subscriber has applied.
func InboxCount(t testing.TB, ctx context.Context, pool *pgxpool.Pool, subscriber string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM inbox WHERE subscriber = $1", subscriber).Scan(&n))
	return n
}
