package billing

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/platform/operations"
)

// VerifyKind is the operation kind of a statements verification.
const VerifyKind = "statements_verify"

// verifyPage is how many statements one read of a verification takes.
const verifyPage = 500

// Verify recomputes every closed statement whose period ends in [from, to)
// from the event store and the price book alone (the owner's file events,
// the price_book stream, and the configured price for version 0) and
// counts, as differences, the statements whose row says anything else. It
// reports the file events it read as applied. Each difference is logged
// with the statement's id and what differs.
func Verify(ctx context.Context, pool *pgxpool.Pool, from, to time.Time, s Settings, logger *slog.Logger, progress *operations.Progress) error {
	q := dbsqlc.New()
	book, err := ReadPriceBook(ctx, pool, s.Price)
	if err != nil {
		return err
	}
	after, afterStart := uuid.Nil, time.Time{}
	var owner uuid.UUID
	var events []*dbsqlc.BillingOwnerFileEventsRow
	for {
		rows, err := q.BillingStatementsEnding(ctx, pool, &dbsqlc.BillingStatementsEndingParams{
			PeriodFrom: from, PeriodTo: to, AfterOwner: after, AfterStart: afterStart, MaxCount: verifyPage})
		if err != nil {
			return fmt.Errorf("verify: read statements: %w", err)
		}
		for _, r := range rows {
			if r.OwnerID != owner || events == nil {
				owner = r.OwnerID
				if events, err = q.BillingOwnerFileEvents(ctx, pool, owner); err != nil {
					return fmt.Errorf("verify: read the events of %s: %w", owner, err)
				}
				progress.Applied(len(events))
			}
			row := statementRow{ID: r.ID, OwnerID: r.OwnerID, PeriodStart: r.PeriodStart, PeriodEnd: r.PeriodEnd,
				ByteSeconds: r.ByteSeconds, GbHours: r.GbHours, Currency: r.Currency, PriceVersion: r.PriceVersion,
				Lines: r.Lines, Amount: r.Amount, AmountDue: r.AmountDue, AmountUnits: r.AmountUnits, CumAmount: r.CumAmount,
				CoveredPosition: r.CoveredPosition, EventsSha256: r.EventsSha256, ClosedAt: r.ClosedAt, Position: r.Position}
			what, err := recompute(&row, events, book, s.Calendar)
			if err != nil {
				return err
			}
			// The row says when, and by which event, it closed: the
			// store's statement.closed must agree.
			switch {
			case what != "":
			case !r.EventPosition.Valid || r.EventPosition.Int64 != r.Position:
				what = "position"
			case r.EventOccurredAt == nil || !r.EventOccurredAt.Equal(r.ClosedAt):
				what = "closed_at"
			}
			if what != "" {
				progress.Differences(1)
				logger.Warn("statement differs from its recomputation", "statement_id", r.ID, "owner_id", r.OwnerID, "differs", what)
			}
		}
		if len(rows) < verifyPage {
			return nil
		}
		after, afterStart = rows[len(rows)-1].OwnerID, rows[len(rows)-1].PeriodStart
	}
}

// recompute compares a stored statement with what its owner's events and
// the price book make of its period; it names the first field that
// differs ("" when none does).
func recompute(r *statementRow, events []*dbsqlc.BillingOwnerFileEventsRow, book PriceBook, cal Calendar) (string, error) {
	start, end := r.PeriodStart.UTC(), r.PeriodEnd.UTC()
	if r.ID != domain.StatementID(r.OwnerID, start) {
		return "id", nil
	}
	if s, e := cal.Period(start); !s.Equal(start) || !e.Equal(end) {
		return "period", nil
	}
	var before []*dbsqlc.BillingOwnerFileEventsRow
	for _, e := range events {
		if e.OccurredAt.Before(end) {
			before = append(before, e)
		}
	}
	return recomputeFrom(r, before, book, start, end)
}

// recomputeFrom does recompute's work on the events that occurred before
// the end (in position order).
func recomputeFrom(r *statementRow, before []*dbsqlc.BillingOwnerFileEventsRow, book PriceBook, start, end time.Time) (string, error) {
	h := sha256.New()
	var covered int64
	type life struct {
		size     int64
		uploaded bool
		up, del  time.Time
		deleted  bool
	}
	files := map[uuid.UUID]*life{}
	var order []uuid.UUID
	for _, e := range before {
		writeID(h, e.ID)
		covered = max(covered, e.Position)
		var d struct {
			SizeBytes int64 `json:"size_bytes"`
		}
		if err := json.Unmarshal(e.Data, &d); err != nil {
			return "", fmt.Errorf("verify: event %s: %w", e.ID, err)
		}
		file := e.StreamID
		f := files[file]
		if f == nil {
			f = &life{}
			files[file] = f
			order = append(order, file)
		}
		switch e.Type {
		case domain.FileUploaded:
			if !f.uploaded || e.OccurredAt.Before(f.up) {
				f.uploaded, f.size, f.up = true, d.SizeBytes, e.OccurredAt
			}
		case domain.FileDeleted:
			if !f.deleted || e.OccurredAt.Before(f.del) {
				f.deleted, f.del = true, e.OccurredAt
			}
		}
	}
	bs := new(big.Rat)
	for _, id := range order {
		f := files[id]
		if !f.uploaded {
			continue
		}
		lo, hi := maxTime(f.up, start), end
		if f.deleted {
			hi = minTime(f.del, end)
		}
		if !hi.After(lo) || (f.deleted && !f.del.After(f.up)) {
			continue
		}
		us := big.NewInt(hi.Sub(lo).Microseconds())
		bs.Add(bs, new(big.Rat).SetFrac(us.Mul(us, big.NewInt(f.size)), big.NewInt(1_000_000)))
	}
	v := book.For(start)
	p, err := price(bs, v)
	if err != nil {
		return "", err
	}
	stored, ok := parseDecimal(r.ByteSeconds)
	lines, _ := json.Marshal(p.lines)
	var storedLines []domain.StatementLine
	if err := json.Unmarshal(r.Lines, &storedLines); err != nil {
		return "lines", nil
	}
	storedLinesJSON, _ := json.Marshal(storedLines)
	units, okU := parseDecimal(r.AmountUnits)
	switch {
	case !ok || stored.Cmp(bs) != 0:
		return "byte_seconds", nil
	case r.GbHours != p.gbHours:
		return "gb_hours", nil
	case r.Currency != v.Currency:
		return "currency", nil
	case r.PriceVersion != v.Version:
		return "price_version", nil
	case string(lines) != string(storedLinesJSON):
		return "lines", nil
	case r.Amount != p.amount:
		return "amount", nil
	case r.AmountDue != p.amountDue:
		return "amount_due", nil
	case !okU || units.Cmp(p.units) != 0:
		return "amount_units", nil
	case r.CoveredPosition != covered:
		return "covered_position", nil
	case r.EventsSha256 != hex.EncodeToString(h.Sum(nil)):
		return "events_sha256", nil
	}
	return "", nil
}
