package billing_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/operations"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/testdb"
)

// calendarCase is a billing calendar the property test draws, with the
// reference's own way of cutting time into its periods.
type calendarCase struct {
	period, zone string
	fixed        time.Duration
}

var calendars = []calendarCase{
	{period: "month", zone: "UTC"},
	{period: "month", zone: "Europe/Berlin"},
	{period: "month", zone: "America/New_York"},
	{period: "month", zone: "Asia/Kolkata"},
	{period: "1h", zone: "UTC", fixed: time.Hour},
	{period: "90m", zone: "Australia/Lord_Howe", fixed: 90 * time.Minute},
}

// refPeriod is the reference's period of t: calendar months in the zone, or
// fixed lengths counted from the Unix epoch.
func (c calendarCase) refPeriod(t time.Time) (time.Time, time.Time) {
	if c.fixed > 0 {
		n := t.UnixMicro() / c.fixed.Microseconds()
		s := time.UnixMicro(n * c.fixed.Microseconds()).UTC()
		return s, s.Add(c.fixed)
	}
	loc, _ := time.LoadLocation(c.zone)
	l := t.In(loc)
	return time.Date(l.Year(), l.Month(), 1, 0, 0, 0, 0, loc).UTC(), time.Date(l.Year(), l.Month()+1, 1, 0, 0, 0, 0, loc).UTC()
}

// refTier and refVersion are a price version as the reference reads it.
type refTier struct {
	upTo  *big.Rat // GB-hours, nil for the last
	price *big.Rat
	raw   string
}

type refVersion struct {
	version  int32
	from     time.Time
	currency string
	tiers    []refTier
}

func rat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic(s)
	}
	return r
}

var gbHour = big.NewRat(3_600_000_000_000, 1)

// refAmount prices GB-hours over graduated tiers, exactly.
func refAmount(gbh *big.Rat, v refVersion) (*big.Rat, []*big.Rat, []*big.Rat) {
	total, lower := new(big.Rat), new(big.Rat)
	var shares, amounts []*big.Rat
	for _, t := range v.tiers {
		upper := gbh
		if t.upTo != nil && t.upTo.Cmp(gbh) < 0 {
			upper = t.upTo
		}
		share := new(big.Rat).Sub(upper, lower)
		if share.Sign() < 0 {
			share = new(big.Rat)
		}
		a := new(big.Rat).Mul(share, t.price)
		total.Add(total, a)
		shares, amounts = append(shares, share), append(amounts, a)
		if t.upTo != nil {
			lower = t.upTo
		}
	}
	return total, shares, amounts
}

// refFor is the version that prices a period starting at start.
func refFor(versions []refVersion, start time.Time, fallback refVersion) refVersion {
	best := fallback
	found := false
	for _, v := range versions {
		if v.from.After(start) {
			continue
		}
		if !found || v.from.After(best.from) || (v.from.Equal(best.from) && v.version > best.version) {
			best, found = v, true
		}
	}
	return best
}

// refWrite writes an amount as DESIGN.md says: exactly when its decimal
// ends, else rounded half-to-even to 18 decimals; it also returns the value
// written.
func refWrite(r *big.Rat) (string, *big.Rat) {
	d := new(big.Int).Set(r.Denom())
	places := 0
	for _, p := range []int64{2, 5} {
		n := 0
		for new(big.Int).Mod(d, big.NewInt(p)).Sign() == 0 {
			d.Quo(d, big.NewInt(p))
			n++
		}
		places = max(places, n)
	}
	if d.Cmp(big.NewInt(1)) == 0 {
		return r.FloatString(places), r
	}
	s := billing.FormatDecimal(r, 18)
	return s, rat(s)
}

// fixed writes r rounded half-to-even to d decimals with exactly d of them.
func fixed(r *big.Rat, d int) string {
	s := billing.FormatDecimal(r, d)
	if d == 0 {
		return s
	}
	w, f, _ := strings.Cut(s, ".")
	return w + "." + f + strings.Repeat("0", d-len(f))
}

// refByteSeconds is Σ size × |[up, del) ∩ [from, to)| over owner's files.
func refByteSeconds(events []eventstore.Event, owner uuid.UUID, from, to time.Time) *big.Rat {
	type life struct {
		size    int64
		up, del *time.Time
	}
	files := map[uuid.UUID]*life{}
	for _, e := range events {
		var d struct {
			OwnerID   uuid.UUID `json:"owner_id"`
			SizeBytes int64     `json:"size_bytes"`
		}
		mustJSON(e, &d)
		if d.OwnerID != owner {
			continue
		}
		f := files[e.StreamID]
		if f == nil {
			f = &life{}
			files[e.StreamID] = f
		}
		at := e.OccurredAt
		if e.Type == domain.FileUploaded {
			f.size, f.up = d.SizeBytes, &at
		} else {
			f.del = &at
		}
	}
	total := new(big.Rat)
	for _, f := range files {
		if f.up == nil {
			continue
		}
		end := to
		if f.del != nil {
			end = minTime(*f.del, to)
		}
		lo := maxTime(*f.up, from)
		if !end.After(lo) {
			continue
		}
		us := big.NewInt(end.Sub(lo).Microseconds())
		total.Add(total, new(big.Rat).SetFrac(us.Mul(us, big.NewInt(f.size)), big.NewInt(1_000_000)))
	}
	return total
}

// TestStatementsAreExact draws histories of uploads, deletes and price
// versions over several periods of several calendars, lets the billing
// subscriber apply them in any batching and the closer close the ended
// periods, and checks every closed statement against a reference computed
// from the events alone, that the costs of consecutive usage ranges add up
// to the statements, that windows add up to their total exactly, and that
// verification finds nothing to report (and finds a row changed on
// purpose).
func TestStatementsAreExact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rapid.Check(t, func(rt *rapid.T) {
		resetBilling(rt, ctx, pool)
		cc := rapid.SampledFrom(calendars).Draw(rt, "calendar")
		settings, err := billing.NewSettings(cc.period, cc.zone, "0.00003", "USD")
		require.NoError(rt, err)
		// The database's clock, read for each case: the closer closes
		// what ended by it. A case begun just before the current period
		// ends waits for that end, or the closer would rightly close one
		// period more than the case's history has.
		var clock time.Time
		require.NoError(rt, pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&clock))
		current, end := cc.refPeriod(clock)
		if left := end.Sub(clock); left < boundaryMargin {
			time.Sleep(left + time.Second)
			require.NoError(rt, pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&clock))
			current, _ = cc.refPeriod(clock)
		}
		// The history runs over the periods before the current one.
		nPeriods := rapid.IntRange(1, 4).Draw(rt, "periods")
		first := current
		for range nPeriods {
			first, _ = cc.refPeriod(first.Add(-time.Microsecond))
		}
		span := current.Sub(first).Microseconds()
		at := func(label string) time.Time {
			return first.Add(time.Duration(rapid.Int64Range(0, span-1).Draw(rt, label)) * time.Microsecond)
		}

		// Price versions, effective anywhere in the history (they are
		// written straight into the store: the API would refuse a time
		// already past).
		fallback := refVersion{currency: "USD", tiers: []refTier{{price: rat("0.00003"), raw: "0.00003"}}}
		var versions []refVersion
		var priceEvents []eventstore.Event
		for v := range rapid.IntRange(0, 3).Draw(rt, "versions") {
			n := rapid.IntRange(1, 4).Draw(rt, "tiers")
			data := domain.PriceScheduledData{EffectiveFrom: at("effective"), Currency: rapid.SampledFrom([]string{"USD", "EUR", "JPY", "BHD"}).Draw(rt, "currency")}
			ref := refVersion{version: int32(v + 1), from: data.EffectiveFrom, currency: data.Currency}
			bound := 0
			for i := range n {
				price := fmt.Sprintf("%d.%06d", rapid.IntRange(0, 3).Draw(rt, "price_whole"), rapid.IntRange(0, 999999).Draw(rt, "price_frac"))
				price, err := domain.CanonicalDecimal("p", price)
				require.NoError(rt, err)
				tier := domain.PriceTier{Price: price}
				rtier := refTier{price: rat(price), raw: price}
				if i < n-1 {
					bound += rapid.IntRange(1, 50).Draw(rt, "bound")
					b := fmt.Sprintf("%d.5", bound)
					tier.UpTo, rtier.upTo = &b, rat(b)
				}
				data.Tiers = append(data.Tiers, tier)
				ref.tiers = append(ref.tiers, rtier)
			}
			e, err := eventstore.New(domain.StreamPriceBook, domain.PriceBookStream, int32(v+1), domain.PriceScheduled, data, time.Now())
			require.NoError(rt, err)
			e.OccurredAt = first.Add(-time.Hour)
			priceEvents = append(priceEvents, e)
			versions = append(versions, ref)
		}

		owners := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
		var files []eventstore.Event
		for range rapid.IntRange(1, 10).Draw(rt, "files") {
			f := file{id: uuid.New(), owner: rapid.SampledFrom(owners).Draw(rt, "owner"),
				size: rapid.OneOf(rapid.Int64Range(0, 5_000_000_000), rapid.Int64Range(0, 1<<62)).Draw(rt, "size"), uploaded: at("up")}
			if rapid.Bool().Draw(rt, "deleted") {
				d := maxTime(f.uploaded, at("del"))
				f.deleted = &d
			}
			files = append(files, events(rt, f)...)
		}
		// Commit in an order other than time's: positions and times differ.
		files = rapid.Permutation(files).Draw(rt, "commit order")
		sortByStreamVersion(files)
		all := append(append([]eventstore.Event{}, priceEvents...), files...)
		require.NoError(rt, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, all) }))
		files = all[len(priceEvents):]

		sends := rapid.Permutation(files).Draw(rt, "delivery order")
		for len(sends) > 0 {
			k := rapid.IntRange(1, len(sends)).Draw(rt, "batch")
			deliver(rt, ctx, pool, sends[:k])
			sends = sends[k:]
		}

		closer := billing.NewCloser(pool, billing.CloserConfig{Settings: settings}, logger)
		expected := map[uuid.UUID]int{} // statements per owner
		for _, o := range owners {
			if firstUp, ok := firstUpload(files, o); ok {
				for s, _ := cc.refPeriod(firstUp); s.Before(current); _, s = cc.refPeriod(s) {
					expected[o]++
				}
			}
		}
		closeAll(rt, ctx, pool, closer, expected)

		for _, o := range owners {
			sts, _, err := billing.Statements(ctx, pool, o, time.Time{}, 1000, settings)
			require.NoError(rt, err)
			var closed []billing.Statement
			for _, st := range sts {
				if st.State == billing.StateClosed {
					closed = append(closed, st)
				}
			}
			require.Len(rt, closed, expected[o], "closed statements of %s", o)
			sum := new(big.Rat)
			for _, st := range closed {
				checkStatement(rt, st, files, o, refFor(versions, st.PeriodStart, fallback), cc)
				sum.Add(sum, rat(st.Amount))
				got, err := billing.StatementByID(ctx, pool, o, st.ID, settings)
				require.NoError(rt, err)
				require.Equal(rt, st, got)
			}
			if len(closed) == 0 {
				continue
			}
			// Consecutive ranges over the closed periods: their costs add
			// up to the statements, to the last decimal where a quotient
			// does not end.
			cuts := []time.Time{first, current}
			for range rapid.IntRange(0, 5).Draw(rt, "cuts") {
				cuts = append(cuts, at("cut"))
			}
			sort.Slice(cuts, func(i, j int) bool { return cuts[i].Before(cuts[j]) })
			costs := new(big.Rat)
			for i := 0; i+1 < len(cuts); i++ {
				u, err := billing.Read(ctx, pool, o, cuts[i], cuts[i+1], time.Time{}, settings)
				require.NoError(rt, err)
				costs.Add(costs, rat(u.Cost))
				require.Equal(rt, billing.FormatDecimal(refByteSeconds(files, o, cuts[i], cuts[i+1]), 6), u.ByteSeconds)
			}
			require.Equal(rt, 0, costs.Cmp(sum), "costs %s, statements %s", costs.FloatString(40), sum.FloatString(40))

			// Windows of a zone's calendar add up to their total exactly.
			kind := billing.WindowDay
			if cc.fixed > 0 {
				kind = billing.WindowHour
			}
			zone := rapid.SampledFrom([]string{"UTC", "Europe/Berlin", "America/Los_Angeles", "Asia/Kolkata", "Australia/Lord_Howe"}).Draw(rt, "tz")
			loc, err := billing.LoadZone(zone)
			require.NoError(rt, err)
			wu, err := billing.ReadWindows(ctx, pool, o, first, current, kind, loc, time.Time{})
			require.NoError(rt, err)
			total := new(big.Rat)
			for i, w := range wu.Items {
				total.Add(total, rat(w.ByteSeconds))
				if i > 0 {
					require.True(rt, w.From.Equal(wu.Items[i-1].To))
				}
			}
			require.Equal(rt, billing.FormatDecimal(refByteSeconds(files, o, first, current), 6), wu.ByteSeconds)
			require.Equal(rt, 0, total.Cmp(rat(wu.ByteSeconds)), "windows add up to %s, total %s", total.FloatString(6), wu.ByteSeconds)
		}

		var p operations.Progress
		require.NoError(rt, billing.Verify(ctx, pool, first, current.Add(time.Microsecond), settings, logger, &p))
		_, differences := p.Counts()
		require.Zero(rt, differences, "verify found differences")
	})
}

// TestVerifyFindsAChangedStatement closes a statement, changes its row by
// hand, and verification reports it.
func TestVerifyFindsAChangedStatement(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool, _ := testdb.New(t)
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	settings, err := billing.NewSettings("1h", "UTC", "0.00003", "USD")
	require.NoError(t, err)
	var clock time.Time
	require.NoError(t, pool.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&clock))
	start := clock.Truncate(time.Hour).Add(-2 * time.Hour)
	owner := uuid.New()
	evs := events(t, file{id: uuid.New(), owner: owner, size: 1_000_000_000, uploaded: start.Add(10 * time.Minute)})
	require.NoError(t, database.InTx(ctx, pool, func(tx *database.Tx) error { return eventstore.Append(ctx, tx, evs) }))
	deliver(t, ctx, pool, evs)
	closeAll(t, ctx, pool, billing.NewCloser(pool, billing.CloserConfig{Settings: settings}, logger), map[uuid.UUID]int{owner: 2})

	verify := func() int64 {
		var p operations.Progress
		require.NoError(t, billing.Verify(ctx, pool, start, clock, settings, logger, &p))
		applied, differences := p.Counts()
		require.Equal(t, int64(1), applied) // the owner's one event, read once for both its statements
		return differences
	}
	require.Zero(t, verify())
	// Each a change to one statement's row: its amount, when it closed,
	// the position of the event that closed it.
	for i, change := range []string{"amount = '0.1'", "closed_at = closed_at + interval '1 second'", "position = position + 1"} {
		period := start.Add(time.Duration(i%2) * time.Hour)
		var before string
		require.NoError(t, pool.QueryRow(ctx, "SELECT row_to_json(s)::text FROM billing_statements s WHERE owner_id = $1 AND period_start = $2", owner, period).Scan(&before))
		_, err = pool.Exec(ctx, "UPDATE billing_statements SET "+change+" WHERE owner_id = $1 AND period_start = $2", owner, period)
		require.NoError(t, err)
		require.Equal(t, int64(1), verify(), change)
		_, err = pool.Exec(ctx, "UPDATE billing_statements s SET (amount, closed_at, position) = (SELECT r.amount, r.closed_at, r.position FROM json_populate_record(NULL::billing_statements, $3::json) r) WHERE owner_id = $1 AND period_start = $2", owner, period, before)
		require.NoError(t, err)
		require.Zero(t, verify(), "after undoing "+change)
	}
}

// checkStatement compares a closed statement with the reference.
func checkStatement(t require.TestingT, st billing.Statement, files []eventstore.Event, owner uuid.UUID, v refVersion, cc calendarCase) {
	start, end := cc.refPeriod(st.PeriodStart)
	require.Equal(t, start, st.PeriodStart)
	require.Equal(t, end, st.PeriodEnd)
	require.Equal(t, domain.StatementID(owner, start), st.ID)
	bs := refByteSeconds(files, owner, start, end)
	gbh := new(big.Rat).Quo(bs, gbHour)
	total, shares, amounts := refAmount(gbh, v)
	w := func(r *big.Rat) string { s, _ := refWrite(r); return trimZeros(s) }
	require.Equal(t, billing.FormatDecimal(bs, 6), st.ByteSeconds)
	require.Equal(t, w(gbh), st.GBHours)
	require.Equal(t, v.currency, st.Currency)
	require.Equal(t, v.version, st.PriceVersion)
	require.Equal(t, w(total), st.Amount)
	decimals := map[string]int{"USD": 2, "EUR": 2, "JPY": 0, "BHD": 3}[v.currency]
	require.Equal(t, fixed(rat(st.Amount), decimals), st.AmountDue)
	require.Len(t, st.Lines, len(v.tiers))
	for i, l := range st.Lines {
		require.Equal(t, domain.StatementLine{Tier: i + 1, GBHours: w(shares[i]), Price: v.tiers[i].raw, Amount: w(amounts[i])}, l)
	}
	// The owner's file events that occurred before the end, in position
	// order.
	var before []eventstore.Event
	for _, e := range files {
		var d domain.FileDeletedData
		mustJSON(e, &d)
		if d.OwnerID == owner && e.OccurredAt.Before(end) {
			before = append(before, e)
		}
	}
	sort.Slice(before, func(i, j int) bool { return before[i].Position < before[j].Position })
	h := sha256.New()
	for _, e := range before {
		fmt.Fprintf(h, "%s\n", e.ID)
	}
	require.NotNil(t, st.EventsSHA256)
	require.Equal(t, hex.EncodeToString(h.Sum(nil)), *st.EventsSHA256)
	require.NotNil(t, st.CoveredPosition)
	require.Equal(t, before[len(before)-1].Position, *st.CoveredPosition)
	require.NotNil(t, st.ClosedAt)
	require.False(t, st.ClosedAt.Before(st.PeriodEnd), "closed before its period ended")
}

// boundaryMargin is the least time a case of TestStatementsAreExact
// leaves before the current period ends: more than one case takes.
const boundaryMargin = 30 * time.Second

// closeAll ticks the closer until every owner has its statements closed.
func closeAll(t require.TestingT, ctx context.Context, pool *pgxpool.Pool, closer *billing.Closer, want map[uuid.UUID]int) {
	total := 0
	for _, n := range want {
		total += n
	}
	for range 200 {
		require.NoError(t, closer.Tick(ctx))
		var n int
		require.NoError(t, pool.QueryRow(ctx, "SELECT count(*) FROM billing_statements").Scan(&n))
		if n >= total {
			require.Equal(t, total, n)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.Fail(t, "the closer did not close every statement")
}

// resetBilling empties what the property's runs share in their database:
// the store and billing's rows, so each run has its own price book.
func resetBilling(t require.TestingT, ctx context.Context, pool *pgxpool.Pool) {
	_, err := pool.Exec(ctx, `TRUNCATE events, outbox, inbox, billing_files, billing_levels, billing_pending, billing_owners,
		billing_close, billing_statements, billing_gaps, billing_fences, storage_files, dead_letters, inbox_watermarks;
		UPDATE billing_progress SET complete_through = 0, candidate = NULL, candidate_xid = NULL`)
	require.NoError(t, err)
}

func firstUpload(events []eventstore.Event, owner uuid.UUID) (time.Time, bool) {
	var first time.Time
	found := false
	for _, e := range events {
		var d domain.FileUploadedData
		mustJSON(e, &d)
		if e.Type == domain.FileUploaded && d.OwnerID == owner && (!found || e.OccurredAt.Before(first)) {
			first, found = e.OccurredAt, true
		}
	}
	return first, found
}

// sortByStreamVersion puts each stream's events in version order (an
// append needs them so) in the places the stream's events hold, leaving
// the streams interleaved as drawn.
func sortByStreamVersion(evs []eventstore.Event) {
	at := map[uuid.UUID][]int{}
	for i, e := range evs {
		at[e.StreamID] = append(at[e.StreamID], i)
	}
	for _, idx := range at {
		stream := make([]eventstore.Event, len(idx))
		for k, i := range idx {
			stream[k] = evs[i]
		}
		sort.Slice(stream, func(a, b int) bool { return stream[a].Version < stream[b].Version })
		for k, i := range idx {
			evs[i] = stream[k]
		}
	}
}

// trimZeros drops the zeros FloatString leaves after the point.
func trimZeros(s string) string {
	if !strings.Contains(s, ".") {
		return s
	}
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
