package billing

import (
	"context"
	"encoding/json"
	"fmt"
	"math/big"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// Statement states.
const (
	StateOpen   = "open"
	StateClosed = "closed"
)

// Statement is what an owner owes for one billing period, as GET
// /v1/statements answers it. An open statement counts up to now; its
// covered_position, events_sha256 and closed_at are null until it closes.
type Statement struct {
	ID              uuid.UUID              `json:"id"`
	PeriodStart     time.Time              `json:"period_start"`
	PeriodEnd       time.Time              `json:"period_end"`
	State           string                 `json:"state"`
	ByteSeconds     string                 `json:"byte_seconds"`
	GBHours         string                 `json:"gb_hours"`
	Currency        string                 `json:"currency"`
	PriceVersion    int32                  `json:"price_version"`
	Lines           []domain.StatementLine `json:"lines"`
	Amount          string                 `json:"amount"`
	AmountDue       string                 `json:"amount_due"`
	CoveredPosition *int64                 `json:"covered_position"`
	EventsSHA256    *string                `json:"events_sha256"`
	ClosedAt        *time.Time             `json:"closed_at"`
	Position        int64                  `json:"position"`
}

// priced is a period's amounts: byteSeconds priced by v.
type priced struct {
	byteSeconds, gbHours, amount, amountDue string
	lines                                   []domain.StatementLine
	shown                                   *big.Rat // the amount as written
	units                                   *big.Rat // amount × 3.6e12, exact
}

// price prices one period's byte-seconds: each tier's GB-hours and amount,
// and the amount, all written by FormatAmount (exact where they end,
// rounded half-to-even to 18 decimals where they do not); amount_due, the
// amount as written rounded half-to-even to the currency's minor unit, with
// exactly that many decimals.
func price(byteSeconds *big.Rat, v PriceVersion) (priced, error) {
	total, tierBS, tierUnits := v.units(byteSeconds)
	amount, shown := writeAmount(new(big.Rat).Quo(total, bytesPerGBHour))
	p := priced{
		byteSeconds: FormatDecimal(byteSeconds, 6),
		gbHours:     FormatAmount(new(big.Rat).Quo(byteSeconds, bytesPerGBHour)),
		amount:      amount,
		shown:       shown,
		units:       total,
		lines:       make([]domain.StatementLine, len(tierBS)),
	}
	for i := range tierBS {
		line := domain.StatementLine{Tier: i + 1, Price: v.Tiers[i].Price}
		if len(tierBS) == 1 {
			line.GBHours, line.Amount = p.gbHours, p.amount // one tier takes it all
		} else {
			line.GBHours = FormatAmount(new(big.Rat).Quo(tierBS[i], bytesPerGBHour))
			line.Amount = FormatAmount(new(big.Rat).Quo(tierUnits[i], bytesPerGBHour))
		}
		p.lines[i] = line
	}
	decimals, err := minorUnitDecimals(v.Currency)
	if err != nil {
		return priced{}, err
	}
	// amount_due rounds the amount as written, so a reader can check one
	// from the other.
	p.amountDue = FormatFixed(shown, decimals)
	return p, nil
}

// writtenAmount is the amount byteSeconds of one period cost under v, as
// a statement writes it (FormatAmount's value).
func writtenAmount(byteSeconds *big.Rat, v PriceVersion) *big.Rat {
	total, _, _ := v.units(byteSeconds)
	_, shown := writeAmount(total.Quo(total, bytesPerGBHour))
	return shown
}

// openStatement is owner's statement for [start, end) as billing has it so
// far: up to now, or the end.
func openStatement(owner uuid.UUID, start, end time.Time, begin, upTo *big.Rat, v PriceVersion, position int64) (Statement, error) {
	bs := new(big.Rat).Sub(upTo, begin)
	p, err := price(bs, v)
	if err != nil {
		return Statement{}, err
	}
	return Statement{
		ID: domain.StatementID(owner, start), PeriodStart: start, PeriodEnd: end, State: StateOpen,
		ByteSeconds: p.byteSeconds, GBHours: p.gbHours, Currency: v.Currency, PriceVersion: v.Version,
		Lines: p.lines, Amount: p.amount, AmountDue: p.amountDue, Position: position,
	}, nil
}

// statementRow is a billing_statements row as the queries read it.
type statementRow = dbsqlc.BillingStatementGetRow

// closedStatement is a stored closed statement as the API answers it.
func closedStatement(r *statementRow) (Statement, error) {
	var lines []domain.StatementLine
	if err := json.Unmarshal(r.Lines, &lines); err != nil {
		return Statement{}, fmt.Errorf("billing: statement %s lines: %w", r.ID, err)
	}
	bs, ok := parseDecimal(r.ByteSeconds)
	if !ok {
		return Statement{}, fmt.Errorf("billing: statement %s byte_seconds %q", r.ID, r.ByteSeconds)
	}
	covered, sha, closedAt := r.CoveredPosition, r.EventsSha256, r.ClosedAt.UTC()
	return Statement{
		ID: r.ID, PeriodStart: r.PeriodStart.UTC(), PeriodEnd: r.PeriodEnd.UTC(), State: StateClosed,
		ByteSeconds: FormatDecimal(bs, 6), GBHours: r.GbHours, Currency: r.Currency, PriceVersion: r.PriceVersion,
		Lines: lines, Amount: r.Amount, AmountDue: r.AmountDue, CoveredPosition: &covered,
		EventsSHA256: &sha, ClosedAt: &closedAt, Position: r.Position,
	}, nil
}

// Statements reads owner's statements newest period first: the open ones
// (the current period's, and any ended but not closed yet) and then the
// closed ones, up to limit of them starting before before (the zero time:
// from the newest). next is the cursor of the page after, zero when this
// is the last.
func Statements(ctx context.Context, db database.DBTX, owner uuid.UUID, before time.Time, limit int, s Settings) (items []Statement, next time.Time, err error) {
	acct, book, err := readAccount(ctx, db, owner, s)
	if err != nil || acct.firstUpload == nil {
		return nil, time.Time{}, err
	}
	firstStart, _ := s.Calendar.Period(*acct.firstUpload)
	closedBefore := firstStart
	if acct.nextStart != nil {
		closedBefore = *acct.nextStart
	}
	// The open periods of this page, newest first, one more than fits.
	var open [][2]time.Time
	for start, _ := s.Calendar.Period(acct.now); !start.Before(closedBefore) && len(open) <= limit; {
		if before.IsZero() || start.Before(before) {
			open = append(open, [2]time.Time{start, s.Calendar.End(start)})
		}
		start, _ = s.Calendar.Period(start.Add(-time.Microsecond))
	}
	if len(open) > 0 {
		if items, err = openStatements(ctx, db, owner, open, acct, book); err != nil {
			return nil, time.Time{}, err
		}
	}
	if rest := limit + 1 - len(items); rest > 0 {
		upper := closedBefore
		if !before.IsZero() && before.Before(upper) {
			upper = before
		}
		rows, err := database.Many(dbsqlc.New().BillingStatementList(ctx, db, []*dbsqlc.BillingStatementListParams{{
			OwnerID: owner, Before: upper, MaxCount: int32(rest)}}))
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("billing: list statements: %w", err)
		}
		for _, r := range rows {
			row := statementRow(*r)
			st, err := closedStatement(&row)
			if err != nil {
				return nil, time.Time{}, err
			}
			items = append(items, st)
		}
	}
	if len(items) > limit {
		items = items[:limit]
		next = items[limit-1].PeriodStart
	}
	return items, next, nil
}

// StatementByID reads one of owner's statements: a closed one by its row,
// an open one by matching the ids of the periods not closed yet.
// database.ErrNotFound when owner has none with that id.
func StatementByID(ctx context.Context, db database.DBTX, owner, id uuid.UUID, s Settings) (Statement, error) {
	row, err := database.One(dbsqlc.New().BillingStatementGet(ctx, db, []*dbsqlc.BillingStatementGetParams{{ID: id, OwnerID: owner}}))
	if err == nil {
		return closedStatement(row)
	}
	if err = database.NotFound(err); err != database.ErrNotFound {
		return Statement{}, fmt.Errorf("billing: read statement: %w", err)
	}
	acct, book, err := readAccount(ctx, db, owner, s)
	if err != nil {
		return Statement{}, err
	}
	if acct.firstUpload == nil {
		return Statement{}, database.ErrNotFound
	}
	start, _ := s.Calendar.Period(*acct.firstUpload)
	if acct.nextStart != nil {
		start = *acct.nextStart
	}
	for ; !start.After(acct.now); start = s.Calendar.End(start) {
		if domain.StatementID(owner, start) == id {
			sts, err := openStatements(ctx, db, owner, [][2]time.Time{{start, s.Calendar.End(start)}}, acct, book)
			if err != nil {
				return Statement{}, err
			}
			return sts[0], nil
		}
	}
	return Statement{}, database.ErrNotFound
}

// openStatements prices periods not closed yet from the ledger.
func openStatements(ctx context.Context, db database.DBTX, owner uuid.UUID, periods [][2]time.Time, acct account, book PriceBook) ([]Statement, error) {
	var ats []time.Time
	for _, p := range periods {
		ats = append(ats, p[0], p[1])
	}
	bal, err := balances(ctx, db, owner, ats, acct.now)
	if err != nil {
		return nil, err
	}
	out := make([]Statement, len(periods))
	for i, p := range periods {
		st, err := openStatement(owner, p[0], p[1], bal[2*i], bal[2*i+1], book.For(p[0]), acct.position)
		if err != nil {
			return nil, err
		}
		out[i] = st
	}
	return out, nil
}

// minorUnits caches the currencies' minor units: a close asks once per
// statement.
var minorUnits sync.Map

func minorUnitDecimals(code string) (int, error) {
	if d, ok := minorUnits.Load(code); ok {
		return d.(int), nil
	}
	d, err := domain.MinorUnitDecimals(code)
	if err == nil {
		minorUnits.Store(code, d)
	}
	return d, err
}
