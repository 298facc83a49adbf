package e2e_test

import (
	"context"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
)

// event is a row of the events table.
type event struct {
	Position   int64
	ID         uuid.UUID
	StreamType string
	StreamID   uuid.UUID
	Version    int32
	Type       string
	Data       []byte
	OccurredAt time.Time
}

// loadEvents reads the whole events table in position order.
func loadEvents(t *testing.T, ctx context.Context, pool *pgxpool.Pool) []event {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT position, id, stream_type, stream_id, version, type, data::text, occurred_at FROM events ORDER BY position`)
	require.NoError(t, err)
	defer rows.Close()
	var out []event
	for rows.Next() {
		var e event
		var data string
		require.NoError(t, rows.Scan(&e.Position, &e.ID, &e.StreamType, &e.StreamID, &e.Version, &e.Type, &data, &e.OccurredAt))
		e.Data = []byte(data)
		out = append(out, e)
	}
	require.NoError(t, rows.Err())
	return out
}

func eventIDs(events []event) []string {
	ids := make([]string, len(events))
	for i, e := range events {
		ids[i] = e.ID.String()
	}
	return ids
}

func countFileEvents(events []event) int {
	n := 0
	for _, e := range events {
		if e.Type == "file.uploaded" || e.Type == "file.deleted" {
			n++
		}
	}
	return n
}

// fileHistory is one file as its events tell it.
type fileHistory struct {
	owner    uuid.UUID
	size     int64
	uploaded time.Time
	deleted  *time.Time
}

// truth is what storage and billing must say, computed by brute force from
// the events table alone.
type truth struct {
	files    map[uuid.UUID]*fileHistory
	position map[uuid.UUID]int64 // owner → highest position of its file events
}

func bruteForce(t *testing.T, events []event) truth {
	t.Helper()
	tr := truth{files: make(map[uuid.UUID]*fileHistory), position: make(map[uuid.UUID]int64)}
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
			tr.position[d.OwnerID] = max(tr.position[d.OwnerID], e.Position)
		case "file.deleted":
			var d struct {
				OwnerID uuid.UUID `json:"owner_id"`
			}
			require.NoError(t, json.Unmarshal(e.Data, &d))
			f := tr.files[e.StreamID]
			require.NotNil(t, f, "file.deleted of %s before its upload in the events table", e.StreamID)
			at := e.OccurredAt
			f.deleted = &at
			tr.position[d.OwnerID] = max(tr.position[d.OwnerID], e.Position)
		}
	}
	return tr
}

// storage is what owner stores: live files and their bytes.
func (tr truth) storage(owner uuid.UUID) (count int64, bytes string) {
	sum := new(big.Int)
	for _, f := range tr.files {
		if f.owner == owner && f.deleted == nil {
			count++
			sum.Add(sum, big.NewInt(f.size))
		}
	}
	return count, sum.String()
}

// byteSeconds is Σ size × |[uploaded, deleted-or-now) ∩ [from, to)| in
// seconds, exactly, times cut to microseconds as the events keep them.
func (tr truth) byteSeconds(owner uuid.UUID, from, to, now time.Time) *big.Rat {
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

// owners lists every owner that has file events.
func (tr truth) owners() []uuid.UUID {
	var out []uuid.UUID
	for o := range tr.position {
		out = append(out, o)
	}
	return out
}

func jsonNumber(s string) json.Number { return json.Number(s) }
