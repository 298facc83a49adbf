package domain

import (
	"errors"
	"fmt"
	"time"
)

// ErrInvalidPeriod is a usage period the caller got wrong (a 400).
var ErrInvalidPeriod = errors.New("invalid period")

// ParsePeriod reads a usage period, from and to as the caller wrote them
// (GET /v1/usage's query). Both are required RFC 3339 times (any offset, fractional seconds
// allowed), and from must not be after to; from == to is an empty period.
// Both must lie within years 0001–9999 in UTC. The times are returned in
// UTC, cut to microseconds, the precision of the events.
func ParsePeriod(from, to string) (time.Time, time.Time, error) {
	f, err := parseBound("from", from)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	t, err := parseBound("to", to)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	if f.After(t) {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: from is after to", ErrInvalidPeriod)
	}
	return f, t, nil
}

func parseBound(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("%w: %s is required (RFC 3339, e.g. 2026-01-01T00:00:00Z)", ErrInvalidPeriod, name)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: %s is not an RFC 3339 time: %q", ErrInvalidPeriod, name, s)
	}
	t = t.UTC().Truncate(time.Microsecond)
	// An offset can carry a bound written in year 0000 or 9999 out of
	// 0001–9999 in UTC, where neither the database nor the answer's JSON
	// can hold it.
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}, fmt.Errorf("%w: %s must lie within years 0001–9999 in UTC, not %q (year %d in UTC)", ErrInvalidPeriod, name, s, y)
	}
	return t, nil
}
