package billing_test

import (
	"context"
	"encoding/json"
	"math/big"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

func TestFormatDecimal(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		num, den int64
		decimals int
		want     string
	}{
		{0, 1, 6, "0"},
		{7200, 1, 6, "7200"},
		{3, 2, 6, "1.5"},
		{1, 3, 6, "0.333333"},
		{2, 3, 6, "0.666667"},
		{5, 100, 1, "0"},    // 0.05 → 0.0, half to even
		{15, 100, 1, "0.2"}, // 0.15 → 0.2, half to even
		{25, 100, 1, "0.2"}, // 0.25 → 0.2, half to even
		{-3, 2, 0, "-2"},
		{-1, 1000, 2, "0"}, // never "-0"
	} {
		require.Equal(t, c.want, billing.FormatDecimal(big.NewRat(c.num, c.den), c.decimals), "%d/%d", c.num, c.den)
	}
}

// TestFormatAmount: a decimal that ends is written exactly, however many
// places it needs; one that does not is rounded half-to-even to 18.
func TestFormatAmount(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		r    *big.Rat
		want string
	}{
		{new(big.Rat).Quo(big.NewRat(55594937765691, 1_000_000), big.NewRat(3_600_000_000_000, 1)), "0.0000154430382682475"},
		{big.NewRat(1000, 3_600_000_000_000), "0.000000000277777778"},
		{big.NewRat(1, 8), "0.125"},
		{big.NewRat(1, 1<<40), "0.0000000000009094947017729282379150390625"},
		{big.NewRat(0, 1), "0"},
		{big.NewRat(7, 1), "7"},
		{big.NewRat(-1, 3), "-0.333333333333333333"},
	} {
		require.Equal(t, c.want, billing.FormatAmount(c.r), c.r.String())
	}
}

func TestParsePrice(t *testing.T) {
	t.Parallel()
	_, err := billing.ParsePrice("0.00003", "USD")
	require.NoError(t, err)
	for _, p := range []string{"", "-1", "1e-5", "1/3", "abc", "."} {
		_, err := billing.ParsePrice(p, "USD")
		require.Error(t, err, p)
	}
	for _, c := range []string{"", "usd", "ABC", "US"} {
		_, err = billing.ParsePrice("1", c)
		require.Error(t, err, c)
	}
}

// TestUsageKnownValues pins the formula on a hand-computed case: 10^9
// bytes for 1 h is 3.6e12 byte-seconds, 1 GB-hour, 0.00003 USD.
func TestUsageKnownValues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	price, err := billing.NewSettings("", "", "0.00003", "USD")
	require.NoError(t, err)
	owner := uuid.New()
	f := file{id: uuid.New(), owner: owner, size: 1_000_000_000, uploaded: base}
	del := base.Add(2 * time.Hour)
	f.deleted = &del
	evs := events(t, f)
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, evs) }))
	deliver(t, ctx, pool, evs)

	u, err := billing.Read(ctx, pool, owner, base.Add(time.Hour), base.Add(5*time.Hour), base.Add(9*time.Hour), price)
	require.NoError(t, err)
	require.Equal(t, "3600000000000", u.ByteSeconds)
	require.Equal(t, "1", u.GBHours)
	require.Equal(t, "0.00003", u.Cost)

	// Half a microsecond cannot happen; one microsecond of one byte can.
	u, err = billing.Read(ctx, pool, owner, base, base.Add(time.Microsecond), base.Add(9*time.Hour), price)
	require.NoError(t, err)
	require.Equal(t, "1000", u.ByteSeconds) // 10^9 bytes × 10^-6 s
	require.Equal(t, "0.000000000277777778", u.GBHours)
	require.Equal(t, "0.000000000000008333", u.Cost)
	require.Equal(t, evs[1].Position, u.Position)
}

// TestOrderAndDuplicatesChangeNothing delivers one history in order, then
// the same events again (duplicates) and, for a twin history, in reverse
// (the delete before its upload), and bypassing the inbox (the tables alone
// are commutative).
func TestOrderAndDuplicatesChangeNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	price, err := billing.NewSettings("", "", "0.00003", "USD")
	require.NoError(t, err)

	history := func(owner uuid.UUID) []eventstore.Event {
		d := base.Add(90*time.Minute + 7*time.Microsecond)
		evs := events(t, file{id: uuid.New(), owner: owner, size: 123_456_789, uploaded: base.Add(3 * time.Microsecond), deleted: &d})
		evs = append(evs, events(t, file{id: uuid.New(), owner: owner, size: 42, uploaded: base.Add(time.Hour)})...)
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, evs) }))
		return evs
	}
	read := func(owner uuid.UUID) billing.Usage {
		u, err := billing.Read(ctx, pool, owner, base, base.Add(24*time.Hour), base.Add(3*time.Hour), price)
		require.NoError(t, err)
		u.Position = 0 // the twins' positions differ by construction
		return u
	}

	inOrder, reversed, raw := uuid.New(), uuid.New(), uuid.New()
	evs := history(inOrder)
	deliver(t, ctx, pool, evs)
	want := read(inOrder)
	require.Equal(t, "666666963493.827156", want.ByteSeconds) // 123456789 × 5400.000004 + 42 × 7200

	deliver(t, ctx, pool, evs)
	deliver(t, ctx, pool, []eventstore.Event{evs[1], evs[1], evs[0]})
	require.Equal(t, want, read(inOrder), "duplicates changed the usage")

	evs = history(reversed)
	for i := len(evs) - 1; i >= 0; i-- {
		deliver(t, ctx, pool, evs[i:i+1])
	}
	require.Equal(t, want, read(reversed), "order changed the usage")

	evs = history(raw)
	for _, batch := range [][]eventstore.Event{{evs[1]}, {evs[1], evs[0]}, evs, {evs[0]}} {
		require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error {
			return billing.Subscriber{}.Handle(ctx, tx, batch)
		}))
	}
	require.Equal(t, want, read(raw), "the table alone is not commutative")
}

func TestBillingRejectsMalformedEvents(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	for _, data := range []string{`{"owner_id":42}`, `{"size_bytes":1}`, `{"owner_id":"` + uuid.NewString() + `","size_bytes":-1}`} {
		e, err := eventstore.New("file", uuid.New(), 1, "file.uploaded", json.RawMessage(data), time.Now())
		require.NoError(t, err)
		err = database.InTx(ctx, pool, func(tx *database.Tx) error { return billing.Subscriber{}.Handle(ctx, tx, []eventstore.Event{e}) })
		require.ErrorIs(t, err, billing.ErrMalformedEvent, data)
	}
}
