package billing

import (
	"context"
	"fmt"
	"math/big"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// Settings are what billing reads and closes by: the periods and the price
// that stands in while the price book holds no version.
type Settings struct {
	Calendar Calendar
	Price    PriceVersion
}

// The flat price's defaults (EPOCH_PRICE_PER_GB_HOUR, EPOCH_CURRENCY).
const (
	DefaultPricePerGBHour = "0.00003"
	DefaultCurrency       = "USD"
)

// NewSettings reads the billing settings of a binary's configuration; an
// empty one takes its default.
func NewSettings(period, timezone, pricePerGBHour, currency string) (Settings, error) {
	if pricePerGBHour == "" {
		pricePerGBHour = DefaultPricePerGBHour
	}
	if currency == "" {
		currency = DefaultCurrency
	}
	cal, err := ParseCalendar(period, timezone)
	if err != nil {
		return Settings{}, err
	}
	p, err := ParsePrice(pricePerGBHour, currency)
	if err != nil {
		return Settings{}, err
	}
	return Settings{Calendar: cal, Price: p}, nil
}

// Usage is the body of GET /v1/usage. The three amounts are decimal strings
// in their shortest exact form: no exponent, no trailing zeros after the
// point, no point at all when whole ("0", "7200", "1.5").
//
//   - ByteSeconds is exact (the events keep microseconds, so at most 6
//     decimals).
//   - GBHours = byte_seconds / (10^9 × 3600), rounded half-to-even to 18
//     decimals where it does not end.
//   - Cost is what those GB-hours add to the statements of the periods they
//     fall in: for each period touched, the period's amount for its
//     GB-hours up to to, less its amount for those up to from; so the costs
//     of consecutive ranges add up to the statements, and with one flat
//     price it is gb_hours × price. Rounded as GBHours. Currency is that of
//     the last period touched (the configured one when none is).
type Usage struct {
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	ByteSeconds string    `json:"byte_seconds"`
	GBHours     string    `json:"gb_hours"`
	Cost        string    `json:"cost"`
	Currency    string    `json:"currency"`
	Position    int64     `json:"position"`
}

// WindowUsage is one window of a usage series.
type WindowUsage struct {
	From        time.Time `json:"from"`
	To          time.Time `json:"to"`
	ByteSeconds string    `json:"byte_seconds"`
	GBHours     string    `json:"gb_hours"`
}

// WindowedUsage is the body of GET /v1/usage with window=: the windows of
// [from, to) in tz's calendar, each window's byte-seconds exact, so they
// add up to the total exactly. Times are written in tz's offsets.
type WindowedUsage struct {
	From        time.Time     `json:"from"`
	To          time.Time     `json:"to"`
	Window      string        `json:"window"`
	TZ          string        `json:"tz"`
	Items       []WindowUsage `json:"items"`
	ByteSeconds string        `json:"byte_seconds"`
	GBHours     string        `json:"gb_hours"`
	Position    int64         `json:"position"`
}

// account is what billing knows of an owner when a read starts.
type account struct {
	now         time.Time // the database's clock
	firstUpload *time.Time
	position    int64
	nextStart   *time.Time // the first period not closed; nil: none closed
	cumAmount   *big.Rat
}

// readAccount reads the owner's account and the price book in one round
// trip.
func readAccount(ctx context.Context, db database.DBTX, owner uuid.UUID, s Settings) (account, PriceBook, error) {
	q := dbsqlc.New()
	acctRes := q.BillingAccount(ctx, db, []uuid.UUID{owner})
	bookRes := q.PriceBookList(ctx, db, []*dbsqlc.PriceBookListParams{domainPriceStream()})
	row, err := database.One(acctRes)
	if err != nil {
		return account{}, PriceBook{}, fmt.Errorf("billing: read account: %w", err)
	}
	rows, err := database.Many(bookRes)
	if err != nil {
		return account{}, PriceBook{}, fmt.Errorf("billing: read the price book: %w", err)
	}
	book, err := priceBook(rows, s.Price)
	if err != nil {
		return account{}, PriceBook{}, err
	}
	cum, ok := parseDecimal(row.CumAmount)
	if !ok {
		return account{}, PriceBook{}, fmt.Errorf("billing: cum_amount %q", row.CumAmount)
	}
	return account{now: row.Now.UTC(), firstUpload: row.FirstUploadAt, position: row.Position,
		nextStart: row.NextPeriodStart, cumAmount: cum}, book, nil
}

// balances is the byte-seconds owner stored from the start of its ledger
// up to each of ats (each cut at now): one index lookup per time.
func balances(ctx context.Context, db database.DBTX, owner uuid.UUID, ats []time.Time, now time.Time) ([]*big.Rat, error) {
	clipped := make([]time.Time, len(ats))
	for i, t := range ats {
		clipped[i] = minTime(t, now)
	}
	rows, err := database.Many(dbsqlc.New().BillingBalances(ctx, db, []*dbsqlc.BillingBalancesParams{{Ats: clipped, OwnerID: owner}}))
	if err != nil {
		return nil, fmt.Errorf("billing: read the ledger: %w", err)
	}
	if len(rows) != len(ats) {
		return nil, fmt.Errorf("billing: the ledger answered %d of %d times", len(rows), len(ats))
	}
	out := make([]*big.Rat, len(rows))
	for i, r := range rows {
		v, ok := parseDecimal(r.ByteSeconds)
		if !ok {
			return nil, fmt.Errorf("billing: byte_seconds %q from the database is not a decimal", r.ByteSeconds)
		}
		out[i] = v
	}
	return out, nil
}

// Read returns owner's usage over [from, to) as the billing subscriber has
// applied it so far. now closes the interval of a file not deleted yet; the
// zero time takes the database's clock, the one events occur by. A file
// whose upload the subscriber has not seen counts nothing. Position is the
// highest event position it applied for owner (0 if none).
func Read(ctx context.Context, db database.DBTX, owner uuid.UUID, from, to, now time.Time, s Settings) (Usage, error) {
	from, to = from.UTC().Truncate(time.Microsecond), to.UTC().Truncate(time.Microsecond)
	acct, book, err := readAccount(ctx, db, owner, s)
	if err != nil {
		return Usage{}, err
	}
	if !now.IsZero() {
		acct.now = now.UTC().Truncate(time.Microsecond)
	}
	t0, t1 := minTime(from, acct.now), minTime(to, acct.now)
	// The currency of the last period the range touches (to is not in it).
	lastTouched, _ := s.Calendar.Period(maxTime(t0, t1.Add(-time.Microsecond)))
	u := Usage{From: from, To: to, Position: acct.position, Currency: book.For(lastTouched).Currency}

	// The periods touched, from the first upload's on: before it the owner
	// stored nothing.
	type term struct {
		start, end time.Time
		lo, hi     time.Time // what of the period the range covers
	}
	var terms []term
	var closedFrom, closedTo time.Time // the whole closed periods, summed from their statements
	lo := t0
	if acct.firstUpload != nil {
		firstStart, _ := s.Calendar.Period(*acct.firstUpload)
		lo = maxTime(t0, firstStart)
	}
	if acct.firstUpload != nil && lo.Before(t1) {
		lastWholeEnd, _ := s.Calendar.Period(t1)
		for start, end := s.Calendar.Period(lo); start.Before(t1); start, end = end, s.Calendar.End(end) {
			whole := !lo.After(start) && !t1.Before(end)
			if whole && acct.nextStart != nil && start.Before(*acct.nextStart) {
				// The run of whole closed periods, summed in one step
				// however many there are.
				closedFrom, closedTo = start, minTime(*acct.nextStart, lastWholeEnd)
				end = closedTo
				continue
			}
			terms = append(terms, term{start, end, maxTime(lo, start), minTime(t1, end)})
		}
	}
	ats := []time.Time{t0, t1}
	for _, t := range terms {
		ats = append(ats, t.start, t.lo, t.hi)
	}
	q := dbsqlc.New()
	var cums *dbsqlc.BillingStatementCumsBatchResults
	if !closedFrom.IsZero() {
		cums = q.BillingStatementCums(ctx, db, []*dbsqlc.BillingStatementCumsParams{{PeriodStarts: []time.Time{closedFrom, closedTo}, OwnerID: owner}})
	}
	bal, err := balances(ctx, db, owner, ats, acct.now)
	if err != nil {
		return Usage{}, err
	}
	bs := new(big.Rat).Sub(bal[1], bal[0])
	cost := new(big.Rat)
	if cums != nil {
		rows, err := database.Many(cums)
		if err != nil {
			return Usage{}, fmt.Errorf("billing: read closed statements: %w", err)
		}
		a, okA := parseDecimal(rows[0].CumAmount)
		b, okB := parseDecimal(rows[1].CumAmount)
		if !okA || !okB {
			return Usage{}, fmt.Errorf("billing: cum_amount %q, %q", rows[0].CumAmount, rows[1].CumAmount)
		}
		cost.Add(cost, b.Sub(b, a))
	}
	// Each period's share: its amount up to the range's end less its
	// amount up to the range's start, each as a statement writes it, so
	// consecutive ranges add up to the statements to the last decimal.
	for i, t := range terms {
		begin, atLo, atHi := bal[2+3*i], bal[3+3*i], bal[4+3*i]
		v := book.For(t.start)
		hi := writtenAmount(new(big.Rat).Sub(atHi, begin), v)
		lo := writtenAmount(new(big.Rat).Sub(atLo, begin), v)
		cost.Add(cost, hi.Sub(hi, lo))
	}
	u.ByteSeconds = FormatDecimal(bs, 6)
	u.GBHours = FormatAmount(new(big.Rat).Quo(bs, bytesPerGBHour))
	u.Cost = FormatAmount(cost)
	return u, nil
}

// ReadWindows returns owner's usage over [from, to) in windows of kind in
// loc's calendar (Windows), with the same now as Read.
func ReadWindows(ctx context.Context, db database.DBTX, owner uuid.UUID, from, to time.Time, kind string, loc *time.Location, now time.Time) (WindowedUsage, error) {
	from, to = from.UTC().Truncate(time.Microsecond), to.UTC().Truncate(time.Microsecond)
	windows, err := Windows(from, to, kind, loc)
	if err != nil {
		return WindowedUsage{}, err
	}
	q := dbsqlc.New()
	row, err := database.One(q.BillingAccount(ctx, db, []uuid.UUID{owner}))
	if err != nil {
		return WindowedUsage{}, fmt.Errorf("billing: read account: %w", err)
	}
	if now.IsZero() {
		now = row.Now
	}
	ats := make([]time.Time, 0, len(windows)+1)
	ats = append(ats, from)
	for _, w := range windows {
		ats = append(ats, w.To)
	}
	bal, err := balances(ctx, db, owner, ats, now.UTC().Truncate(time.Microsecond))
	if err != nil {
		return WindowedUsage{}, err
	}
	out := WindowedUsage{From: inZone(from, loc), To: inZone(to, loc), Window: kind, TZ: loc.String(),
		Items: make([]WindowUsage, len(windows)), Position: row.Position}
	for i, w := range windows {
		bs := new(big.Rat).Sub(bal[i+1], bal[i])
		out.Items[i] = WindowUsage{From: inZone(w.From, loc), To: inZone(w.To, loc), ByteSeconds: FormatDecimal(bs, 6),
			GBHours: FormatAmount(new(big.Rat).Quo(bs, bytesPerGBHour))}
	}
	total := new(big.Rat).Sub(bal[len(bal)-1], bal[0])
	out.ByteSeconds = FormatDecimal(total, 6)
	out.GBHours = FormatAmount(new(big.Rat).Quo(total, bytesPerGBHour))
	return out, nil
}

// inZone is t as loc's clocks show it, for the answer; in UTC where RFC
// 3339 cannot write that: a local year outside 0001–9999 (a bound near
// either end of the range, in a zone far from UTC), or an offset of
// seconds (a zone's local mean time before 1900), which it would cut.
func inZone(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	if _, offset := l.Zone(); offset%60 != 0 || l.Year() < 1 || l.Year() > 9999 {
		return t.UTC()
	}
	return l
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
