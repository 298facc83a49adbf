package billing

import (
	"errors"
	"fmt"
	"strings"
	"time"

	// Zones come with the binary, so a container without zoneinfo still
	// knows every IANA name.
	_ "time/tzdata"

	"github.com/catacloud/epoch/internal/core/domain"
)

// The billing period settings' defaults (EPOCH_BILLING_PERIOD,
// EPOCH_BILLING_TIMEZONE).
const (
	DefaultPeriod   = "month"
	DefaultTimezone = "UTC"
)

// Calendar cuts time into billing periods: calendar months in a zone, or a
// fixed length counted in whole multiples since 1970-01-01T00:00:00Z.
type Calendar struct {
	fixed time.Duration // 0: months
	loc   *time.Location
}

// ParseCalendar reads EPOCH_BILLING_PERIOD ("month" or a Go duration of at
// least a second, in whole microseconds) and EPOCH_BILLING_TIMEZONE (an
// IANA name; it places the months).
func ParseCalendar(period, timezone string) (Calendar, error) {
	if period == "" {
		period = DefaultPeriod
	}
	if timezone == "" {
		timezone = DefaultTimezone
	}
	loc, err := LoadZone(timezone)
	if err != nil {
		return Calendar{}, fmt.Errorf("billing: timezone: %w", err)
	}
	if period == "month" {
		return Calendar{loc: loc}, nil
	}
	d, err := time.ParseDuration(period)
	if err != nil {
		return Calendar{}, fmt.Errorf("billing: period %q is neither \"month\" nor a duration: %w", period, err)
	}
	if d < time.Second || d%time.Microsecond != 0 {
		return Calendar{}, fmt.Errorf("billing: period %s must be at least 1s, in whole microseconds", d)
	}
	return Calendar{fixed: d, loc: loc}, nil
}

// LoadZone loads an IANA zone by name. "Local" and the empty name, which
// time.LoadLocation also takes, are refused: they name no zone.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" || strings.ContainsAny(name, "\x00\\") || strings.HasPrefix(name, "/") || strings.Contains(name, "..") {
		return nil, fmt.Errorf("%q is not an IANA time zone", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IANA time zone", name)
	}
	return loc, nil
}

// Period returns the period that holds t: [start, end).
func (c Calendar) Period(t time.Time) (start, end time.Time) {
	if c.fixed > 0 {
		p := c.fixed.Microseconds()
		us := t.UnixMicro()
		q := us / p
		if us%p < 0 {
			q--
		}
		start = time.UnixMicro(q * p).UTC()
		return start, start.Add(c.fixed)
	}
	l := t.In(c.loc)
	start = time.Date(l.Year(), l.Month(), 1, 0, 0, 0, 0, c.loc)
	end = time.Date(l.Year(), l.Month()+1, 1, 0, 0, 0, 0, c.loc)
	return start.UTC(), end.UTC()
}

// End is the end of the period that starts at start.
func (c Calendar) End(start time.Time) time.Time {
	_, end := c.Period(start)
	return end
}

// Window kinds of GET /v1/usage.
const (
	WindowHour  = "hour"
	WindowDay   = "day"
	WindowMonth = "month"
)

// MaxWindows is the most windows one usage read answers.
const MaxWindows = 1000

// ErrTooManyWindows: a window series past MaxWindows.
var ErrTooManyWindows = errors.New("too many windows")

// Window is [From, To).
type Window struct{ From, To time.Time }

// Windows cuts [from, to) at the boundaries of kind's units in loc's
// calendar (whole hours, midnights, first days of months, as the zone's
// clocks show them), the first and last windows clipped to [from, to). A
// day across a daylight-saving change is 23 or 25 hours long. More than
// MaxWindows windows is a domain.RuleError; so is an unknown kind.
func Windows(from, to time.Time, kind string, loc *time.Location) ([]Window, error) {
	var next func(t time.Time) time.Time
	switch kind {
	case WindowHour:
		next = func(t time.Time) time.Time { return nextHour(t, loc) }
	case WindowDay:
		next = func(t time.Time) time.Time {
			l := t.In(loc)
			return firstAfter(t, time.Date(l.Year(), l.Month(), l.Day()+1, 0, 0, 0, 0, loc))
		}
	case WindowMonth:
		next = func(t time.Time) time.Time {
			l := t.In(loc)
			return firstAfter(t, time.Date(l.Year(), l.Month()+1, 1, 0, 0, 0, 0, loc))
		}
	default:
		return nil, &domain.RuleError{Field: "window", Message: fmt.Sprintf("must be hour, day or month, not %q", domain.Excerpt(kind))}
	}
	var out []Window
	for start := from; start.Before(to); {
		if len(out) == MaxWindows {
			return nil, &domain.RuleError{Field: "window", Message: fmt.Sprintf("cuts the range into more than %d windows", MaxWindows)}
		}
		end := next(start)
		if end.After(to) {
			end = to
		}
		out = append(out, Window{From: start, To: end})
		start = end
	}
	return out, nil
}

// firstAfter guards against a zone whose local midnight does not exist
// (time.Date then may land before t): the boundary is never at or before t.
func firstAfter(t, b time.Time) time.Time {
	if b.After(t) {
		return b
	}
	return t.Add(time.Hour)
}

// nextHour is the first instant after t at which loc's clocks show a whole
// hour, or at which the zone's offset changes (an offset that moves by half
// an hour starts a new hour of its own).
func nextHour(t time.Time, loc *time.Location) time.Time {
	l := t.In(loc)
	_, offset := l.Zone()
	sinceHour := time.Duration(l.Minute())*time.Minute + time.Duration(l.Second())*time.Second + time.Duration(l.Nanosecond())
	next := t.Add(time.Hour - sinceHour)
	if _, zoneEnd := l.ZoneBounds(); !zoneEnd.IsZero() && zoneEnd.After(t) && zoneEnd.Before(next) {
		if _, o := zoneEnd.In(loc).Zone(); o != offset {
			return zoneEnd
		}
	}
	return next
}
