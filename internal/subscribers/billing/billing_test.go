package billing_test

import (
	"context"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/subscribers/storage"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

var base = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// file is one generated file history: an upload, and maybe a delete.
type file struct {
	id       uuid.UUID
	owner    uuid.UUID
	size     int64
	uploaded time.Time
	deleted  *time.Time
}

func events(t require.TestingT, f file) []eventstore.Event {
	up, err := eventstore.New(domain.StreamFile, f.id, 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: f.owner, Name: "f", SizeBytes: f.size, ContentType: "application/octet-stream"}, f.uploaded)
	require.NoError(t, err)
	out := []eventstore.Event{up}
	if f.deleted != nil {
		del, err := eventstore.New(domain.StreamFile, f.id, 2, domain.FileDeleted, domain.FileDeletedData{OwnerID: f.owner}, *f.deleted)
		require.NoError(t, err)
		out = append(out, del)
	}
	return out
}

func deliver(t require.TestingT, ctx context.Context, pool *pgxpool.Pool, batch []eventstore.Event) {
	err := database.InTx(ctx, pool, func(tx *database.Tx) error {
		if err := dispatch.Deliver(ctx, tx, storage.Subscriber{}, batch); err != nil {
			return err
		}
		return dispatch.Deliver(ctx, tx, billing.Subscriber{}, batch)
	})
	require.NoError(t, err)
}

// bruteByteSeconds computes, from the delivered events alone, exactly what
// the design defines: Σ size × |[uploaded, deleted-or-now) ∩ [from, to)|.
func bruteByteSeconds(delivered []eventstore.Event, owner uuid.UUID, from, to, now time.Time) *big.Rat {
	type seen struct {
		size     int64
		up, del  *time.Time
		uploaded bool
	}
	files := map[uuid.UUID]*seen{}
	for _, e := range delivered {
		s := files[e.StreamID]
		if s == nil {
			s = &seen{}
			files[e.StreamID] = s
		}
		at := e.OccurredAt
		switch e.Type {
		case domain.FileUploaded:
			var d domain.FileUploadedData
			mustJSON(e, &d)
			if d.OwnerID != owner {
				delete(files, e.StreamID)
				continue
			}
			s.size, s.up = d.SizeBytes, &at
		case domain.FileDeleted:
			var d domain.FileDeletedData
			mustJSON(e, &d)
			if d.OwnerID != owner {
				delete(files, e.StreamID)
				continue
			}
			s.del = &at
		}
	}
	total := new(big.Rat)
	for _, s := range files {
		if s.up == nil {
			continue // only the delete arrived: nothing to bill yet
		}
		end := now
		if s.del != nil {
			end = *s.del
		}
		lo, hi := maxTime(*s.up, from), minTime(end, to)
		if !hi.After(lo) {
			continue
		}
		us := big.NewInt(hi.Sub(lo).Microseconds())
		total.Add(total, new(big.Rat).SetFrac(us.Mul(us, big.NewInt(s.size)), big.NewInt(1_000_000)))
	}
	return total
}

func TestUsageMatchesBruteForce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	price, err := billing.NewSettings("", "", "0.00003", "USD")
	require.NoError(t, err)

	rapid.Check(t, func(rt *rapid.T) {
		// Fresh owners and files each run: runs share the database, not rows.
		owners := []uuid.UUID{uuid.New(), uuid.New()}
		n := rapid.IntRange(1, 8).Draw(rt, "files")
		var all []eventstore.Event
		for i := range n {
			f := file{
				id:    uuid.New(),
				owner: owners[rapid.IntRange(0, 1).Draw(rt, "owner")],
				size: rapid.OneOf(rapid.Int64Range(0, 5000), rapid.Int64Range(0, 1<<62),
					rapid.Just(int64(1<<63-1))).Draw(rt, "size"),
				uploaded: base.Add(time.Duration(rapid.Int64Range(0, 10*24*3600*1e6).Draw(rt, "up")) * time.Microsecond),
			}
			if rapid.Bool().Draw(rt, "deleted") {
				d := f.uploaded.Add(time.Duration(rapid.Int64Range(0, 5*24*3600*1e6).Draw(rt, "life")) * time.Microsecond)
				f.deleted = &d
			}
			_ = i
			all = append(all, events(rt, f)...)
		}
		require.NoError(rt, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, all) }))

		// Deliver a subset (a late upload may never have arrived yet), with
		// duplicates, shuffled, in several batches.
		var delivered, sends []eventstore.Event
		for _, e := range all {
			if rapid.IntRange(0, 9).Draw(rt, "lost") == 0 {
				continue
			}
			delivered = append(delivered, e)
			for range rapid.IntRange(1, 3).Draw(rt, "copies") {
				sends = append(sends, e)
			}
		}
		sends = rapid.Permutation(sends).Draw(rt, "order")
		for len(sends) > 0 {
			k := rapid.IntRange(1, len(sends)).Draw(rt, "batch")
			deliver(rt, ctx, pool, sends[:k])
			sends = sends[k:]
			if rapid.Bool().Draw(rt, "fold") {
				_, err := billing.Fold(ctx, pool)
				require.NoError(rt, err)
			}
		}

		// Every answer is the same before and after the pending changes
		// are folded into the ledger.
		for _, fold := range []bool{false, true} {
			if fold {
				_, err := billing.Fold(ctx, pool)
				require.NoError(rt, err)
				var pending int
				require.NoError(rt, pool.QueryRow(ctx, "SELECT count(*) FROM billing_pending").Scan(&pending))
				require.Zero(rt, pending)
			}
			readsMatch(rt, ctx, pool, owners, all, delivered, price)
		}
	})
}

// readsMatch checks the usage and storage reads of each owner, over a
// random range, against what the delivered events alone say.
func readsMatch(rt *rapid.T, ctx context.Context, pool *pgxpool.Pool, owners []uuid.UUID, all, delivered []eventstore.Event, price billing.Settings) {
	for _, owner := range owners {
		from := base.Add(time.Duration(rapid.Int64Range(-24*3600*1e6, 16*24*3600*1e6).Draw(rt, "from")) * time.Microsecond)
		to := from.Add(time.Duration(rapid.Int64Range(0, 16*24*3600*1e6).Draw(rt, "span")) * time.Microsecond)
		// Now is the database's clock, the one the events occurred by:
		// at or after every one of them.
		now := latest(all).Add(time.Duration(rapid.Int64Range(0, 5*24*3600*1e6).Draw(rt, "now")) * time.Microsecond)

		got, err := billing.Read(ctx, pool, owner, from, to, now, price)
		require.NoError(rt, err)
		want := bruteByteSeconds(delivered, owner, from, to, now)
		require.Equal(rt, billing.FormatDecimal(want, 6), got.ByteSeconds)
		gbh := new(big.Rat).Quo(want, big.NewRat(3_600_000_000_000, 1))
		written, _ := refWrite(gbh)
		require.Equal(rt, trimZeros(written), got.GBHours)
		require.Equal(rt, 0, rat(got.Cost).Cmp(flatCost(delivered, owner, from, to, now, big.NewRat(3, 100000))), "cost %s", got.Cost)
		require.Equal(rt, "USD", got.Currency)
		require.Equal(rt, maxPosition(delivered, owner), got.Position)

		st, err := storage.Read(ctx, pool, owner)
		require.NoError(rt, err)
		count, bytes := bruteStorage(delivered, owner)
		require.Equal(rt, count, st.FileCount)
		require.Equal(rt, bytes.String(), st.Bytes.String())
		require.Equal(rt, maxPosition(delivered, owner), st.Position)
	}
}

// bruteStorage counts the files whose upload was delivered and delete not.
func bruteStorage(delivered []eventstore.Event, owner uuid.UUID) (int64, *big.Int) {
	size := map[uuid.UUID]int64{}
	deleted := map[uuid.UUID]bool{}
	for _, e := range delivered {
		switch e.Type {
		case domain.FileUploaded:
			var d domain.FileUploadedData
			mustJSON(e, &d)
			if d.OwnerID == owner {
				size[e.StreamID] = d.SizeBytes
			}
		case domain.FileDeleted:
			deleted[e.StreamID] = true
		}
	}
	var n int64
	total := new(big.Int)
	for id, s := range size {
		if !deleted[id] {
			n++
			total.Add(total, big.NewInt(s))
		}
	}
	return n, total
}

func maxPosition(delivered []eventstore.Event, owner uuid.UUID) int64 {
	var p int64
	for _, e := range delivered {
		var d struct {
			OwnerID uuid.UUID `json:"owner_id"`
		}
		mustJSON(e, &d)
		if d.OwnerID == owner {
			p = max(p, e.Position)
		}
	}
	return p
}

// latest is the time of the latest event.
func latest(events []eventstore.Event) time.Time {
	var t time.Time
	for _, e := range events {
		t = maxTime(t, e.OccurredAt)
	}
	return t
}

// flatCost is usage's cost at one flat price, from the events alone: for
// each calendar month (UTC) the range touches, the month's amount up to
// the range's end less its amount up to its start, each as a statement
// writes it.
func flatCost(delivered []eventstore.Event, owner uuid.UUID, from, to, now time.Time, price *big.Rat) *big.Rat {
	lo, hi := minTime(from, now), minTime(to, now)
	total := new(big.Rat)
	for m := time.Date(lo.Year(), lo.Month(), 1, 0, 0, 0, 0, time.UTC); m.Before(hi); m = m.AddDate(0, 1, 0) {
		end := m.AddDate(0, 1, 0)
		amount := func(upTo time.Time) *big.Rat {
			gbh := new(big.Rat).Quo(bruteByteSeconds(delivered, owner, m, upTo, now), big.NewRat(3_600_000_000_000, 1))
			_, v := refWrite(gbh.Mul(gbh, price))
			return v
		}
		a, b := amount(maxTime(lo, m)), amount(minTime(hi, end))
		total.Add(total, b.Sub(b, a))
	}
	return total
}
