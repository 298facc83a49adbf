package billing

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/outbox"
	"github.com/catacloud/epoch/internal/platform/backoff"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
)

// DefaultCloseInterval is how often the closer looks at the clock and at
// billing's progress.
const DefaultCloseInterval = 250 * time.Millisecond

// DefaultCloseBatch is how many owners' statements one transaction closes.
const DefaultCloseBatch = 2000

// DefaultCloseParallel is how many closing transactions run at once: the
// database's work of a close is most of it, and two keep two cores busy.
const DefaultCloseParallel = 2

// closerLockKey is the advisory lock that lets one closer work at a time.
const closerLockKey = 0x6570_6f63_6c6f_7365 // "epoclose"

// CloserConfig configures a Closer.
type CloserConfig struct {
	Settings Settings
	// Interval between looks (DefaultCloseInterval when zero).
	Interval time.Duration
	// Batch is the owners closed per transaction (DefaultCloseBatch when
	// zero).
	Batch int
	// Parallel is how many transactions close at once, each on its own
	// range of owners (DefaultCloseParallel when zero).
	Parallel int
	// OnClosed, when set, is told each period end whose due statements are
	// all closed, and how many closed now.
	OnClosed func(periodEnd time.Time, closed int)
}

// Closer closes billing periods: once a period has ended and is complete
// (no transaction that could still write an event occurring before its end
// is running, and billing has applied every event that did), it writes
// each owner's statement for it, a statement.closed event with its outbox
// row, in one transaction per batch of owners. One statement per owner and
// period: the statement stream holds one event, and one closer works at a
// time (a session's advisory lock); several billing workers may run one
// each, and a closer killed mid-batch closes nothing of it.
type Closer struct {
	pool *pgxpool.Pool
	cfg  CloserConfig
	log  *slog.Logger
	// closedThrough is the newest period end this closer closed every
	// statement for; zero after a start.
	closedThrough time.Time
	gaps          int
}

// NewCloser makes a Closer.
func NewCloser(pool *pgxpool.Pool, cfg CloserConfig, logger *slog.Logger) *Closer {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultCloseInterval
	}
	if cfg.Batch <= 0 {
		cfg.Batch = DefaultCloseBatch
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultCloseParallel
	}
	return &Closer{pool: pool, cfg: cfg, log: logger.With("subscriber", Name)}
}

// Run closes periods until ctx ends.
func (c *Closer) Run(ctx context.Context) error {
	retry := backoff.New(backoff.DefaultMin, backoff.DefaultMax)
	for {
		wait := c.cfg.Interval
		if err := c.Tick(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			wait = retry.Next()
			c.log.Warn("closing statements failed; trying again", "error", err, "wait", wait)
		} else {
			retry.Reset()
		}
		if !backoff.Sleep(ctx, wait) {
			return nil
		}
	}
}

// Tick does one look: the pending ledger changes are folded, billing's
// progress moves on, the latest period end's fence is taken or checked,
// and once the period is complete its due statements are closed.
func (c *Closer) Tick(ctx context.Context) error {
	unlock, locked, err := c.lock(ctx)
	if err != nil || !locked {
		return err
	}
	defer unlock()
	complete, err := c.advance(ctx)
	if err != nil {
		return err
	}
	return c.closeComplete(ctx, complete)
}

// Advance does the first part of a look and no more: the pending ledger
// changes are folded and billing's progress moves on. Looks through a
// period keep both current, so that at its end a look has only the last
// moments' events to take in before it closes.
func (c *Closer) Advance(ctx context.Context) error {
	unlock, locked, err := c.lock(ctx)
	if err != nil || !locked {
		return err
	}
	defer unlock()
	_, err = c.advance(ctx)
	return err
}

// lock takes the closer's lock, on a session of its own that a process
// that dies lets go with: one closer looks at a time. locked is false
// when another holds it.
func (c *Closer) lock(ctx context.Context) (unlock func(), locked bool, err error) {
	q := dbsqlc.New()
	session, err := c.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("billing closer: %w", err)
	}
	locked, err = q.BillingCloserLock(ctx, session, closerLockKey)
	if err != nil || !locked {
		session.Release()
		return nil, false, err
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := q.BillingCloserUnlock(uctx, session, closerLockKey); err != nil {
			// A session left holding the lock must not go back to the pool.
			_ = session.Conn().Close(uctx)
		}
		session.Release()
	}, true, nil
}

// advance folds the pending ledger changes and moves billing's progress
// on, and returns billing's complete_through.
func (c *Closer) advance(ctx context.Context) (complete int64, err error) {
	if _, err := Fold(ctx, c.pool); err != nil {
		return 0, err
	}
	q := dbsqlc.New()
	err = database.InTx(ctx, c.pool, func(tx *database.Tx) error {
		q.BillingPreferIndexes(ctx, tx, []string{"off"})
		if err := q.BillingGapsClear(ctx, tx, Name); err != nil {
			return err
		}
		complete, err = q.BillingProgressAdvance(ctx, tx, &dbsqlc.BillingProgressAdvanceParams{Subscriber: Name, Types: domain.FileEventTypes})
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("billing progress: %w", err)
	}
	return complete, nil
}

// closeComplete closes the due statements of the latest period end once
// that period is complete (billing applied everything through complete).
func (c *Closer) closeComplete(ctx context.Context, complete int64) error {
	q := dbsqlc.New()
	now, err := q.BillingClock(ctx, c.pool)
	if err != nil {
		return fmt.Errorf("billing clock: %w", err)
	}
	end, _ := c.cfg.Settings.Calendar.Period(now)
	gaps, err := q.BillingGaps(ctx, c.pool)
	if err != nil {
		return fmt.Errorf("billing gaps: %w", err)
	}
	// Nothing new to close unless a period ended, or a gap was filled (its
	// owner's statements may close now).
	if !end.After(c.closedThrough) && len(gaps) >= c.gaps {
		c.gaps = len(gaps)
		return nil
	}
	c.gaps = len(gaps)
	// The fence is taken in a transaction of its own, after the clock was
	// seen past the end, and must commit before it can pass.
	if err := q.BillingFenceTake(ctx, c.pool, end); err != nil {
		return fmt.Errorf("take the fence of %s: %w", end, err)
	}
	passed, err := q.BillingFenceCheck(ctx, c.pool, end)
	if err != nil {
		return fmt.Errorf("check the fence of %s: %w", end, err)
	}
	if passed < 0 || complete < passed {
		return nil // not complete yet: transactions still running, or billing behind
	}
	held := make(map[uuid.UUID]time.Time, len(gaps))
	for _, g := range gaps {
		held[g.OwnerID] = g.OccurredAt
	}
	book, err := ReadPriceBook(ctx, c.pool, c.cfg.Settings.Price)
	if err != nil {
		return err
	}
	closed, err := c.closeThrough(ctx, closing{end: end, complete: complete, held: held, book: book})
	if err != nil {
		return err
	}
	c.closedThrough = end
	if c.cfg.OnClosed != nil {
		c.cfg.OnClosed(end, closed)
	}
	if closed > 0 {
		c.log.Info("statements closed", "period_end", end, "statements", closed)
	}
	_ = q.BillingFencesPrune(ctx, c.pool)
	return nil
}

// closeThrough closes every due statement of a period ending at or before
// end, a batch of owners per transaction, until none is due: the owners
// split in Parallel ranges of ids closed at once. It returns how many it
// closed.
func (c *Closer) closeThrough(ctx context.Context, r closing) (int, error) {
	r.lastStart, _ = c.cfg.Settings.Calendar.Period(r.end.Add(-time.Microsecond))
	bounds := idRanges(c.cfg.Parallel)
	total := 0
	// Rounds: an owner several periods behind closes one per round.
	for {
		var mu sync.Mutex
		closedThisRound, behind := 0, false
		g, gctx := errgroup.WithContext(ctx)
		for i := range c.cfg.Parallel {
			g.Go(func() error {
				after := bounds[i]
				for {
					n, more, last, err := c.closeBatch(gctx, r, after, bounds[i+1])
					if err != nil {
						return err
					}
					mu.Lock()
					closedThisRound += n
					behind = behind || more
					mu.Unlock()
					if last == uuid.Nil {
						return nil
					}
					after = last
				}
			})
		}
		err := g.Wait()
		total += closedThisRound
		// Only an owner that closed a period ending before end can have
		// another one due: the others' next periods start at end or later,
		// and a round that found them would read every owner for nothing.
		if err != nil || closedThisRound == 0 || !behind {
			return total, err
		}
	}
}

// idRanges cuts the uuid space in n ranges: (bounds[i], bounds[i+1]].
func idRanges(n int) []uuid.UUID {
	bounds := make([]uuid.UUID, n+1)
	for i := 1; i < n; i++ {
		v := uint64(i) * (^uint64(0) / uint64(n))
		binary.BigEndian.PutUint64(bounds[i][:8], v)
	}
	for j := range bounds[n] {
		bounds[n][j] = 0xff
	}
	return bounds
}

// closing is what a look's closes share, read once for all its batches:
// the period end they close through (and the start of the period ending
// there), billing's complete_through, the owners held by gaps (with their
// earliest gap's time), and the price book.
type closing struct {
	end, lastStart time.Time
	complete       int64
	held           map[uuid.UUID]time.Time
	book           PriceBook
}

// due is one owner with a statement to close, and what its close needs.
type due struct {
	owner       uuid.UUID
	start, end  time.Time
	cum         *big.Rat
	hashState   []byte
	hashThrough int64
	covered     int64
	// quiet: billing applied no file event of the owner past hashThrough,
	// so there is none to hash (all at or below complete are applied).
	quiet bool
}

// closeBatch closes the next page of due owners (after after), in one
// transaction. behind: an owner closed a period ending before cl.end, so
// it has the next one due. last is the page's last owner (uuid.Nil: the
// last page).
func (c *Closer) closeBatch(ctx context.Context, cl closing, after, lastOwner uuid.UUID) (closed int, behind bool, last uuid.UUID, err error) {
	q := dbsqlc.New()
	err = database.InTx(ctx, c.pool, func(tx *database.Tx) error {
		closed, behind, last = 0, false, uuid.Nil
		q.BillingPreferIndexes(ctx, tx, []string{"off"})
		rows, err := q.BillingCloseDue(ctx, tx, &dbsqlc.BillingCloseDueParams{
			AfterOwner: after, LastOwner: lastOwner, PeriodEnd: cl.end, LastStart: cl.lastStart, MaxCount: int32(c.cfg.Batch)})
		if err != nil {
			return fmt.Errorf("due owners: %w", err)
		}
		if len(rows) == c.cfg.Batch {
			last = rows[len(rows)-1].OwnerID
		}
		if len(rows) == 0 {
			return nil
		}
		var owners []due
		for _, r := range rows {
			d := due{owner: r.OwnerID, hashThrough: r.HashThrough, covered: r.HashCovered, hashState: r.HashState,
				quiet: r.Position <= r.HashThrough}
			if r.ClosedBefore {
				d.start = r.NextPeriodStart.UTC()
			} else {
				d.start, _ = c.cfg.Settings.Calendar.Period(r.FirstUploadAt)
			}
			d.end = c.cfg.Settings.Calendar.End(d.start)
			if at, ok := cl.held[d.owner]; ok && at.Before(d.end) {
				continue // an event of the period waits for the operator
			}
			if d.end.After(cl.end) {
				continue
			}
			var ok bool
			if d.cum, ok = parseDecimal(r.CumAmount); !ok {
				return fmt.Errorf("owner %s cum_amount %q", d.owner, r.CumAmount)
			}
			owners = append(owners, d)
		}
		if len(owners) == 0 {
			return nil
		}
		// The statements' closed_at, and their events' time: the
		// database's clock, read in this transaction.
		now, err := q.BillingClock(ctx, tx)
		if err != nil {
			return err
		}
		closed, err = c.close(ctx, tx, owners, cl, now.UTC())
		for _, d := range owners {
			behind = behind || d.end.Before(cl.end)
		}
		return err
	})
	return closed, behind, last, err
}

// close writes the statements of owners, each for its period: the ledger
// gives the byte-seconds, the events since the kept hash state the rest.
func (c *Closer) close(ctx context.Context, tx *database.Tx, owners []due, cl closing, closedAt time.Time) (int, error) {
	q := dbsqlc.New()
	n := len(owners)
	bp := &dbsqlc.BillingCloseBalancesParams{OwnerIds: make([]uuid.UUID, n), PeriodStarts: make([]time.Time, n), PeriodEnds: make([]time.Time, n)}
	ep := &dbsqlc.BillingCloseEventsParams{}
	for i, d := range owners {
		bp.OwnerIds[i], bp.PeriodStarts[i], bp.PeriodEnds[i] = d.owner, d.start, d.end
		if !d.quiet {
			ep.OwnerIds, ep.AfterPositions = append(ep.OwnerIds, d.owner), append(ep.AfterPositions, d.hashThrough)
		}
	}
	bal, err := q.BillingCloseBalances(ctx, tx, bp)
	if err != nil {
		return 0, fmt.Errorf("close balances: %w", err)
	}
	evRows, err := q.BillingCloseEvents(ctx, tx, ep)
	if err != nil {
		return 0, fmt.Errorf("close events: %w", err)
	}
	byOwner := make(map[uuid.UUID][]*dbsqlc.BillingCloseEventsRow, n)
	for _, r := range evRows {
		byOwner[r.OwnerID] = append(byOwner[r.OwnerID], r)
	}

	events := make([]eventstore.Event, 0, n)
	rows := make([]closedRow, 0, n)
	for i, d := range owners {
		atStart, ok1 := parseDecimal(bal[i].AtStart)
		atEnd, ok2 := parseDecimal(bal[i].AtEnd)
		if !ok1 || !ok2 {
			return 0, fmt.Errorf("owner %s ledger %q, %q", d.owner, bal[i].AtStart, bal[i].AtEnd)
		}
		h, err := restoreHash(d.hashState)
		if err != nil {
			return 0, fmt.Errorf("owner %s: %w", d.owner, err)
		}
		settled := cl.complete
		if d.quiet {
			// Unread, the events past hashThrough may hold one billing
			// has not applied (a gap of a later period): the kept state
			// stays where it is until they are read.
			settled = d.hashThrough
		}
		r, err := closeOne(d, new(big.Rat).Sub(atEnd, atStart), cl.book.For(d.start), h, byOwner[d.owner], settled)
		if err != nil {
			return 0, err
		}
		r.data.ClosedAt = closedAt
		e, err := eventstore.New(domain.StreamStatement, r.data.ID, 1, domain.StatementClosed, r.data, closedAt)
		if err != nil {
			return 0, err
		}
		events = append(events, e)
		rows = append(rows, r)
	}
	// COPY: a close writes thousands of events at once.
	if err := eventstore.Copy(ctx, tx, events); err != nil {
		return 0, fmt.Errorf("write statement.closed: %w", err)
	}
	sp := make([]*dbsqlc.BillingStatementsCopyParams, len(rows))
	cp := &dbsqlc.BillingCloseSaveParams{}
	for i, r := range rows {
		d, e := r.data, events[i]
		lines, err := json.Marshal(d.Lines)
		if err != nil {
			return 0, err
		}
		bs, err1 := numericOf(r.byteSeconds)
		units, err2 := numericOf(r.units)
		cum, err3 := numericOf(r.cum)
		if err := errors.Join(err1, err2, err3); err != nil {
			return 0, fmt.Errorf("owner %s: %w", d.OwnerID, err)
		}
		// closed_at is the event's own time; its data says the same.
		sp[i] = &dbsqlc.BillingStatementsCopyParams{
			ID: d.ID, OwnerID: d.OwnerID, PeriodStart: d.PeriodStart, PeriodEnd: d.PeriodEnd,
			ByteSeconds: bs, GbHours: d.GBHours, Currency: d.Currency, PriceVersion: d.PriceVersion,
			Lines: lines, Amount: d.Amount, AmountDue: d.AmountDue, AmountUnits: units, CumAmount: cum,
			CoveredPosition: d.CoveredPosition, EventsSha256: d.EventsSHA256, ClosedAt: e.OccurredAt, Position: e.Position,
		}
		cp.OwnerIds = append(cp.OwnerIds, d.OwnerID)
		cp.NextPeriodStarts = append(cp.NextPeriodStarts, d.PeriodEnd)
		cp.CumAmount = append(cp.CumAmount, r.cum)
		cp.HashStates = append(cp.HashStates, r.hashState)
		cp.HashThroughs = append(cp.HashThroughs, r.hashThrough)
		cp.HashCovereds = append(cp.HashCovereds, r.hashCovered)
	}
	// COPY too: the statements' insert as arrays cost more to encode and
	// to unnest than the rows themselves.
	if _, err := q.BillingStatementsCopy(ctx, tx, sp); err != nil {
		return 0, fmt.Errorf("write statements: %w", err)
	}
	q.BillingCloseSave(ctx, tx, []*dbsqlc.BillingCloseSaveParams{cp})
	if err := outbox.Enqueue(ctx, tx, events); err != nil {
		return 0, err
	}
	return len(rows), nil
}

// closedRow is one statement a close writes, and the owner's closer state
// after it.
type closedRow struct {
	data                     domain.StatementClosedData
	byteSeconds, units, cum  string
	hashState                []byte
	hashThrough, hashCovered int64
}

// closeOne computes one owner's statement. h holds the ids of the owner's
// file events up to d.hashThrough; later are those above it, in position
// order. The statement hashes those of them that occurred before the end;
// the state kept for the next close takes in those that every later
// statement will hash first: up to the first event that did not occur
// before the end, and no further than complete (past it a position may
// still be taken by an event committing later).
func closeOne(d due, byteSeconds *big.Rat, v PriceVersion, h hash.Hash, later []*dbsqlc.BillingCloseEventsRow, complete int64) (closedRow, error) {
	p, err := price(byteSeconds, v)
	if err != nil {
		return closedRow{}, err
	}
	kept, covered, keptCovered, through := true, d.covered, d.covered, d.hashThrough
	var rest []*dbsqlc.BillingCloseEventsRow
	for _, e := range later {
		in := e.OccurredAt.Before(d.end)
		if kept && (!in || e.Position > complete) {
			kept = false
		}
		switch {
		case kept:
			writeID(h, e.ID)
			keptCovered, through = e.Position, e.Position
		case in:
			rest = append(rest, e)
		}
		if in {
			covered = max(covered, e.Position)
		}
	}
	if kept && complete > through {
		through = complete
	}
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return closedRow{}, err
	}
	for _, e := range rest {
		writeID(h, e.ID)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	units := p.units
	// The running sum of the amounts as written: a run of closed
	// statements costs what they say, to the last decimal.
	cum := new(big.Rat).Add(d.cum, p.shown)
	return closedRow{
		data: domain.StatementClosedData{
			OwnerID: d.owner, ID: domain.StatementID(d.owner, d.start), PeriodStart: d.start, PeriodEnd: d.end,
			State: StateClosed, ByteSeconds: p.byteSeconds, GBHours: p.gbHours, Currency: v.Currency,
			PriceVersion: v.Version, Lines: p.lines, Amount: p.amount, AmountDue: p.amountDue,
			CoveredPosition: covered, EventsSHA256: sum,
		},
		byteSeconds: p.byteSeconds, units: exactDecimal(units), cum: FormatAmount(cum),
		hashState: state, hashThrough: through, hashCovered: keptCovered,
	}, nil
}

// writeID adds one event id to a statement's hash: 36-character lower-case
// text and a newline.
func writeID(h hash.Hash, id uuid.UUID) {
	var b [37]byte
	copy(b[:36], id.String())
	b[36] = '\n'
	h.Write(b[:])
}

// restoreHash is a SHA-256 at a kept state (a fresh one for none).
func restoreHash(state []byte) (hash.Hash, error) {
	h := sha256.New()
	if len(state) == 0 {
		return h, nil
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("restore the statement hash: %w", err)
	}
	return h, nil
}

// numericOf is the numeric a plain decimal s writes, at the scale it is
// written with: what its text cast to numeric would store.
func numericOf(s string) (pgtype.Numeric, error) {
	whole, frac, _ := strings.Cut(s, ".")
	n, ok := new(big.Int).SetString(whole+frac, 10)
	if !ok {
		return pgtype.Numeric{}, fmt.Errorf("numeric %q", s)
	}
	return pgtype.Numeric{Int: n, Exp: -int32(len(frac)), Valid: true}, nil
}

// unitDecimals is how many decimals an amount in units can have: a
// period's byte-seconds have at most 6, a price at most 18.
const unitDecimals = 24

// exactDecimal writes units (a finite decimal of at most unitDecimals
// places) exactly.
func exactDecimal(r *big.Rat) string { return FormatDecimal(r, unitDecimals) }
