package httpapi_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/core/eventstore"
	"github.com/catacloud/epoch/internal/delivery/dispatch"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/subscribers/billing"
)

// dbNow is the database's clock, which events occur by.
func (e *env) dbNow(t testing.TB) time.Time {
	t.Helper()
	var now time.Time
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT clock_timestamp()").Scan(&now))
	return now.UTC()
}

func priceBody(from time.Time, currency string, tiers ...string) string {
	return fmt.Sprintf(`{"effective_from":%q,"currency":%q,"tiers":[%s]}`, from.Format(time.RFC3339Nano), currency, strings.Join(tiers, ","))
}

// TestPriceBookRules: a version in the future is 201 and listed, oldest
// first; one effective before the request is 409 effective_in_past; every
// input rule is a 400; none of the refused ones writes anything.
func TestPriceBookRules(t *testing.T) {
	t.Parallel()
	e := setup(t)
	future := e.dbNow(t).Add(time.Hour)
	tiers := []string{`{"up_to_gb_hours":"100","price_per_gb_hour":"0"}`, `{"up_to_gb_hours":null,"price_per_gb_hour":0.00002}`}
	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/admin/prices", Token: adminToken, Body: priceBody(future, "EUR", tiers...)})
	require.Equal(t, "1", fmt.Sprint(got.JSON["version"]))
	require.Equal(t, "EUR", got.JSON["currency"])
	require.NotEmpty(t, got.Header.Get("Epoch-Position"))
	require.Equal(t, []any{map[string]any{"up_to_gb_hours": "100", "price_per_gb_hour": "0"},
		map[string]any{"up_to_gb_hours": nil, "price_per_gb_hour": "0.00002"}}, got.JSON["tiers"])
	before := e.counts(t)

	past := e.dbNow(t).Add(-time.Second)
	requireError(t, e.do(t, req{Method: "POST", Path: "/v1/admin/prices", Token: adminToken, Body: priceBody(past, "USD", `{"up_to_gb_hours":null,"price_per_gb_hour":"1"}`)}),
		http.StatusConflict, "effective_in_past")

	var many []string
	for i := range 101 {
		many = append(many, fmt.Sprintf(`{"up_to_gb_hours":"%d","price_per_gb_hour":"1"}`, i+1))
	}
	many[100] = `{"up_to_gb_hours":null,"price_per_gb_hour":"1"}`
	last := `{"up_to_gb_hours":null,"price_per_gb_hour":"1"}`
	for name, body := range map[string]string{
		"bounds that do not rise":        priceBody(future, "USD", `{"up_to_gb_hours":"5","price_per_gb_hour":"1"}`, `{"up_to_gb_hours":"5","price_per_gb_hour":"1"}`, last),
		"bounds that fall":               priceBody(future, "USD", `{"up_to_gb_hours":"5","price_per_gb_hour":"1"}`, `{"up_to_gb_hours":"4.9","price_per_gb_hour":"1"}`, last),
		"a first bound of 0":             priceBody(future, "USD", `{"up_to_gb_hours":"0","price_per_gb_hour":"1"}`, last),
		"a negative price":               priceBody(future, "USD", `{"up_to_gb_hours":null,"price_per_gb_hour":"-0.1"}`),
		"a negative number":              priceBody(future, "USD", `{"up_to_gb_hours":null,"price_per_gb_hour":-1}`),
		"an exponent":                    priceBody(future, "USD", `{"up_to_gb_hours":null,"price_per_gb_hour":"1e-5"}`),
		"no ISO 4217 code":               priceBody(future, "XYZ", last),
		"a lower-case code":              priceBody(future, "usd", last),
		"101 tiers":                      priceBody(future, "USD", many...),
		"no tiers":                       priceBody(future, "USD"),
		"a last tier with a bound":       priceBody(future, "USD", `{"up_to_gb_hours":"5","price_per_gb_hour":"1"}`),
		"a bound missing":                priceBody(future, "USD", `{"up_to_gb_hours":null,"price_per_gb_hour":"1"}`, last),
		"no price":                       priceBody(future, "USD", `{"up_to_gb_hours":null}`),
		"no effective_from":              `{"currency":"USD","tiers":[` + last + `]}`,
		"a bad effective_from":           `{"effective_from":"tomorrow","currency":"USD","tiers":[` + last + `]}`,
		"an unknown field":               `{"effective_from":"2999-01-01T00:00:00Z","currency":"USD","tiers":[` + last + `],"x":1}`,
		"a tier's field in another case": priceBody(future, "USD", `{"up_to_gb_hours":null,"Price_Per_GB_Hour":"1"}`),
		"a price of text":                priceBody(future, "USD", `{"up_to_gb_hours":null,"price_per_gb_hour":"cheap"}`),
	} {
		requireError(t, e.do(t, req{Method: "POST", Path: "/v1/admin/prices", Token: adminToken, Body: body, Hostile: true}), http.StatusBadRequest, "invalid_input")
		_ = name
	}
	require.Equal(t, before, e.counts(t), "a refused price version wrote something")
	requireError(t, e.do(t, req{Method: "POST", Path: "/v1/admin/prices", Token: "nope", Body: priceBody(future, "USD", last)}), http.StatusUnauthorized, "unauthorized")

	e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/admin/prices", Token: adminToken, Body: priceBody(future.Add(time.Hour), "JPY", last)})
	list := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/admin/prices?limit=1", Token: adminToken})
	items := list.JSON["items"].([]any)
	require.Len(t, items, 1)
	require.Equal(t, "EUR", items[0].(map[string]any)["currency"])
	next := list.JSON["next_cursor"].(string)
	list = e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/admin/prices?cursor=" + next, Token: adminToken})
	items = list.JSON["items"].([]any)
	require.Len(t, items, 1)
	require.Equal(t, "JPY", items[0].(map[string]any)["currency"])
	require.Nil(t, list.JSON["next_cursor"])
}

// TestPriceVersionPricesPeriodsStartingAfterIt: with 2 s periods, a
// version effective in the middle of the current period does not price
// it; it prices the next one.
func TestPriceVersionPricesPeriodsStartingAfterIt(t *testing.T) {
	t.Parallel()
	e := setup(t, func(c *httpapi.Config) { c.BillingPeriod = "2s" })
	token := e.newUser(t, "pat")
	// An upload makes the user's statements start.
	e.upload(t, token, "f", 1_000_000_000)
	e.applyBilling(t)
	now := e.dbNow(t)
	periodStart := now.Truncate(2 * time.Second)
	effective := periodStart.Add(2*time.Second - 100*time.Millisecond)
	if !effective.After(now) {
		effective = effective.Add(2 * time.Second)
		periodStart = periodStart.Add(2 * time.Second)
	}
	e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/admin/prices", Token: adminToken,
		Body: priceBody(effective, "EUR", `{"up_to_gb_hours":null,"price_per_gb_hour":"7"}`)})
	// The period holding effective_from began before it: still the
	// configured price; the next one starts after it: the version.
	for time.Until(periodStart.Add(4*time.Second+200*time.Millisecond)) > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	sts := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/statements?limit=1000", Token: token}).JSON["items"].([]any)
	byStart := map[string]map[string]any{}
	for _, s := range sts {
		st := s.(map[string]any)
		byStart[st["period_start"].(string)] = st
	}
	began := byStart[periodStart.UTC().Format(time.RFC3339Nano)]
	require.NotNil(t, began, "no statement for the period holding effective_from: %v", sts)
	require.Equal(t, "USD", began["currency"])
	require.EqualValues(t, "0", fmt.Sprint(began["price_version"]))
	after := byStart[periodStart.Add(2*time.Second).UTC().Format(time.RFC3339Nano)]
	require.NotNil(t, after)
	require.Equal(t, "EUR", after["currency"])
	require.EqualValues(t, "1", fmt.Sprint(after["price_version"]))
}

// TestUsageWindows: a Europe/Berlin day across each DST change of 2026 is
// 23 and 25 hours; windows add up to the total; 1,001 windows, an unknown
// zone and an unknown window are 400.
func TestUsageWindows(t *testing.T) {
	t.Parallel()
	e := setup(t)
	token := e.newUser(t, "wendy")
	var owner string
	require.NoError(t, e.pool.QueryRow(context.Background(), "SELECT id::text FROM users WHERE name = 'wendy'").Scan(&owner))
	// A gigabyte stored since before the spring change, through the autumn one.
	writeHistory(t, e, owner, time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC))

	q := func(from, to, window, tz string) string {
		v := url.Values{"from": {from}, "to": {to}, "window": {window}}
		if tz != "" {
			v.Set("tz", tz)
		}
		return "/v1/usage?" + v.Encode()
	}
	for _, c := range []struct {
		from, to string
		hours    []float64
	}{
		{"2026-03-28T00:00:00+01:00", "2026-03-31T00:00:00+02:00", []float64{24, 23, 24}},
		{"2026-10-24T00:00:00+02:00", "2026-10-27T00:00:00+01:00", []float64{24, 25, 24}},
	} {
		got := e.must(t, http.StatusOK, req{Method: "GET", Path: q(c.from, c.to, "day", "Europe/Berlin"), Token: token})
		items := got.JSON["items"].([]any)
		require.Len(t, items, len(c.hours))
		total := int64(0)
		for i, it := range items {
			w := it.(map[string]any)
			from, err := time.Parse(time.RFC3339, w["from"].(string))
			require.NoError(t, err)
			to, err := time.Parse(time.RFC3339, w["to"].(string))
			require.NoError(t, err)
			require.Equal(t, c.hours[i], to.Sub(from).Hours(), "day %d of %s", i, c.from)
			// 10^9 bytes for h hours is h × 3.6e12 byte-seconds.
			require.Equal(t, fmt.Sprintf("%d", int64(c.hours[i])*3_600_000_000_000), w["byte_seconds"])
			total += int64(c.hours[i]) * 3_600_000_000_000
		}
		require.Equal(t, fmt.Sprint(total), got.JSON["byte_seconds"])
		require.Equal(t, "Europe/Berlin", got.JSON["tz"])
		require.Equal(t, "day", got.JSON["window"])
	}
	// Hours across the autumn change: 25 windows in the 25-hour day.
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: q("2026-10-25T00:00:00+02:00", "2026-10-26T00:00:00+01:00", "hour", "Europe/Berlin"), Token: token})
	require.Len(t, got.JSON["items"].([]any), 25)

	for _, bad := range []string{
		q("2026-01-01T00:00:00Z", "2026-02-11T17:00:00Z", "hour", ""), // 1,001 hours
		q("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "day", "Mars/Olympus"),
		q("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "week", ""),
		q("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "day", "Local"),
		"/v1/usage?from=2026-01-01T00:00:00Z&to=2026-01-02T00:00:00Z&tz=UTC",
	} {
		requireError(t, e.do(t, req{Method: "GET", Path: bad, Token: token, Hostile: true}), http.StatusBadRequest, "invalid_input")
	}
	// Bounds within years 0001–9999 in UTC whose windows end in year 10000,
	// or start in year 0000, in the zone's calendar: answered, in UTC there.
	for _, c := range []struct{ from, to, window, tz string }{
		{"9999-12-31T10:00:00Z", "9999-12-31T11:00:00Z", "hour", "Pacific/Kiritimati"},
		{"9999-12-31T22:00:00Z", "9999-12-31T23:00:00Z", "day", "Europe/Berlin"},
		{"0001-01-01T00:00:00Z", "0001-01-01T05:00:00Z", "hour", "America/New_York"},
	} {
		got := e.must(t, http.StatusOK, req{Method: "GET", Path: q(c.from, c.to, c.window, c.tz), Token: token})
		require.NotEmpty(t, got.JSON["items"])
	}
	// 1,000 hours is the most.
	e.must(t, http.StatusOK, req{Method: "GET", Path: q("2026-01-01T00:00:00Z", "2026-02-11T16:00:00Z", "hour", ""), Token: token})
}

// writeHistory stores, for owner, one gigabyte uploaded at from and never
// deleted, as an event of that time applied by billing (the API would take
// the database's clock).
func writeHistory(t testing.TB, e *env, owner string, from time.Time) {
	t.Helper()
	ctx := context.Background()
	ev, err := eventstore.New(domain.StreamFile, mustUUID(t, "0190aaaa-0000-7000-8000-000000000001"), 1, domain.FileUploaded,
		domain.FileUploadedData{OwnerID: mustUUID(t, owner), Name: "gb", SizeBytes: 1_000_000_000, ContentType: "application/octet-stream"}, from)
	require.NoError(t, err)
	evs := []eventstore.Event{ev}
	require.NoError(t, database.InTx(ctx, e.pool, func(tx *database.Tx) error {
		if err := eventstore.Append(ctx, tx, evs); err != nil {
			return err
		}
		return dispatch.Deliver(ctx, tx, billing.Subscriber{}, evs)
	}))
}

// applyBilling hands billing every stored event, as a worker would.
func (e *env) applyBilling(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	evs, err := eventstore.After(ctx, e.pool, 0, 100000)
	require.NoError(t, err)
	require.NoError(t, database.InTx(ctx, e.pool, func(tx *database.Tx) error {
		return dispatch.Deliver(ctx, tx, billing.Subscriber{}, evs)
	}))
}

func mustUUID(t testing.TB, s string) uuid.UUID {
	t.Helper()
	id, err := uuid.Parse(s)
	require.NoError(t, err)
	return id
}
