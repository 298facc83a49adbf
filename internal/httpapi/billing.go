package httpapi

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/commandside/readmodel"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/operations"
	"github.com/catacloud/epoch/internal/subscribers/billing"
)

var errEffectiveInPast = &apiError{Status: http.StatusConflict, Code: "effective_in_past",
	Message: "effective_from is before now: a price change never reaches a period that has begun"}

// GET /v1/usage?from=&to=[&window=&tz=]
func (s *server) getUsage(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	q := r.URL.Query()
	from, to, err := domain.ParsePeriod(q.Get("from"), q.Get("to"))
	if err != nil {
		s.fail(w, r, errInvalid(err.Error()))
		return
	}
	window, windowed := q.Get("window"), q.Has("window")
	var loc *time.Location
	if windowed {
		if loc, err = billing.LoadZone(defaultString(q.Get("tz"), "UTC")); err != nil {
			s.fail(w, r, errInvalid("tz: "+err.Error()))
			return
		}
		// Too many windows or an unknown kind is the caller's, found
		// before anything is read.
		if _, err := billing.Windows(from, to, window, loc); err != nil {
			s.fail(w, r, errInvalid(err.Error()))
			return
		}
	} else if q.Has("tz") {
		s.fail(w, r, errInvalid("tz is only taken with window"))
		return
	}
	if err := s.catchUp(r, user, billing.Name); err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	if windowed {
		usage, err := billing.ReadWindows(ctx, s.cfg.Pool, user, from, to, window, loc, time.Time{})
		if err != nil {
			s.fail(w, r, err)
			return
		}
		w.Header().Set(headerPosition, position(usage.Position))
		writeJSON(w, http.StatusOK, usage)
		return
	}
	usage, err := billing.Read(ctx, s.cfg.Pool, user, from, to, time.Time{}, s.billing)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerPosition, position(usage.Position))
	writeJSON(w, http.StatusOK, usage)
}

// GET /v1/statements
func (s *server) listStatements(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	cursor, limit, err := parsePage(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.catchUp(r, user, billing.Name); err != nil {
		s.fail(w, r, err)
		return
	}
	var before time.Time
	if cursor.After != 0 {
		before = time.UnixMicro(cursor.After).UTC()
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	items, next, err := billing.Statements(ctx, s.cfg.Pool, user, before, int(limit), s.billing)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := readmodel.Page[billing.Statement]{Items: items}
	if page.Items == nil {
		page.Items = []billing.Statement{}
	}
	if !next.IsZero() {
		c := readmodel.Cursor{After: next.UnixMicro()}.String()
		page.NextCursor = &c
	}
	writeJSON(w, http.StatusOK, page)
}

// GET /v1/statements/{id}
func (s *server) getStatement(w http.ResponseWriter, r *http.Request, user uuid.UUID) {
	id, err := pathID(r, "id")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	st, err := billing.StatementByID(ctx, s.cfg.Pool, user, id, s.billing)
	if err != nil {
		s.fail(w, r, notFoundSays(err, "no such statement"))
		return
	}
	w.Header().Set(headerPosition, position(st.Position))
	writeJSON(w, http.StatusOK, st)
}

// POST /v1/admin/prices: a price version, appended to the price book.
func (s *server) schedulePrice(w http.ResponseWriter, r *http.Request) {
	_, in, err := readJSON[domain.PriceInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	data, err := domain.ParsePrice(in)
	if err != nil {
		s.fail(w, r, errInvalid(err.Error()))
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	var out command.PriceScheduled
	err = s.cfg.Commands.Run(ctx, func(tx *database.Tx) (err error) {
		out, err = s.cfg.Commands.SchedulePrice(ctx, tx, data)
		return err
	})
	if errors.Is(err, command.ErrEffectiveInPast) {
		err = errEffectiveInPast
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	v, err := billing.NewPriceVersion(out.Version, data)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set(headerPosition, position(out.Position))
	writeJSON(w, http.StatusCreated, v)
}

// GET /v1/admin/prices: every version, oldest first, paged as lists.
func (s *server) listPrices(w http.ResponseWriter, r *http.Request) {
	cursor, limit, err := parsePage(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	ctx, cancel := contextWithTimeout(r, s.cfg.DBTimeout)
	defer cancel()
	versions, err := billing.PriceVersions(ctx, s.cfg.Pool, int32(cursor.After), limit+1)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	page := readmodel.Page[billing.PriceVersion]{Items: versions}
	if len(page.Items) > int(limit) {
		page.Items = page.Items[:limit]
		c := readmodel.Cursor{After: int64(page.Items[limit-1].Version)}.String()
		page.NextCursor = &c
	}
	writeJSON(w, http.StatusOK, page)
}

type verifyInput struct {
	From *string `json:"from"`
	To   *string `json:"to"`
}

// POST /v1/admin/statements/verify: an operation that recomputes the closed
// statements whose periods end in [from, to).
func (s *server) verifyStatements(w http.ResponseWriter, r *http.Request) {
	_, in, err := readJSON[verifyInput](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	from, to, err := domain.ParsePeriod(derefString(in.From), derefString(in.To))
	if err != nil {
		s.fail(w, r, errInvalid(err.Error()))
		return
	}
	s.startOperation(w, r, func(ctx context.Context) (operations.Operation, error) {
		return s.op.VerifyStatements(ctx, s.life, from, to, s.billing)
	})
}

func defaultString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func derefString(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
