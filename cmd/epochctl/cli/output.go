package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"
)

// The API's answers, as far as the tables show them; --json prints them
// whole, as they came.
type (
	status struct {
		Outbox struct {
			Pending          int64   `json:"pending"`
			OldestAgeSeconds float64 `json:"oldest_age_seconds"`
			BlockedBy        []struct {
				PID        int32   `json:"pid"`
				State      string  `json:"state"`
				AgeSeconds float64 `json:"age_seconds"`
			} `json:"blocked_by"`
		} `json:"outbox"`
		Subscribers []struct {
			Name            string     `json:"name"`
			Placement       string     `json:"placement"`
			AppliedPosition int64      `json:"applied_position"`
			QueueMessages   *int64     `json:"queue_messages"`
			DeadLetters     int64      `json:"dead_letters"`
			LagPositions    int64      `json:"lag_positions"`
			LagSeconds      float64    `json:"lag_seconds"`
			Healed          int64      `json:"healed"`
			LastHealedAt    *time.Time `json:"last_healed_at"`
		} `json:"subscribers"`
	}

	deadLetterPage struct {
		Items []struct {
			EventID     string    `json:"event_id"`
			Position    *int64    `json:"position"`
			Type        *string   `json:"type"`
			StreamID    *string   `json:"stream_id"`
			Reason      string    `json:"reason"`
			Deaths      int32     `json:"deaths"`
			FirstDeadAt time.Time `json:"first_dead_at"`
			LastDeadAt  time.Time `json:"last_dead_at"`
		} `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}

	user struct {
		ID    string `json:"id"`
		Name  string `json:"name"`
		Token string `json:"token"`
	}

	priceVersion struct {
		Version       int32     `json:"version"`
		EffectiveFrom time.Time `json:"effective_from"`
		Currency      string    `json:"currency"`
		Tiers         []struct {
			UpTo  *string `json:"up_to_gb_hours"`
			Price string  `json:"price_per_gb_hour"`
		} `json:"tiers"`
	}

	pricePage struct {
		Items      []priceVersion `json:"items"`
		NextCursor *string        `json:"next_cursor"`
	}
)

// table writes rows aligned in columns on stdout.
type table struct{ w *tabwriter.Writer }

func (a *app) table(header ...string) table {
	t := table{tabwriter.NewWriter(a.opts.Stdout, 0, 0, 2, ' ', 0)}
	t.row(header...)
	return t
}

func (t table) row(cells ...string) { fmt.Fprintln(t.w, strings.Join(cells, "\t")) }

func (t table) flush() { _ = t.w.Flush() }

// orDash shows an absent value as "-".
func orDash[T any](v *T, format func(T) string) string {
	if v == nil {
		return "-"
	}
	return format(*v)
}

func itoa(n int64) string      { return fmt.Sprint(n) }
func seconds(s float64) string { return fmt.Sprintf("%.1f", s) }
func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
func same(s string) string     { return s }

func (a *app) statusTable(st status) {
	out := a.opts.Stdout
	fmt.Fprintf(out, "outbox: %d pending, oldest %ss\n", st.Outbox.Pending, seconds(st.Outbox.OldestAgeSeconds))
	for _, b := range st.Outbox.BlockedBy {
		fmt.Fprintf(out, "  held back by pid %d (%s, %ss)\n", b.PID, b.State, seconds(b.AgeSeconds))
	}
	fmt.Fprintln(out)
	t := a.table("SUBSCRIBER", "PLACEMENT", "APPLIED", "LAG", "LAG_S", "QUEUE", "DEAD_LETTERS", "HEALED", "LAST_HEALED")
	for _, s := range st.Subscribers {
		t.row(s.Name, s.Placement, itoa(s.AppliedPosition), itoa(s.LagPositions), seconds(s.LagSeconds),
			orDash(s.QueueMessages, itoa), itoa(s.DeadLetters), itoa(s.Healed), orDash(s.LastHealedAt, stamp))
	}
	t.flush()
}

func (a *app) deadLetterTable(page deadLetterPage) {
	t := a.table("EVENT_ID", "POSITION", "TYPE", "STREAM_ID", "REASON", "DEATHS", "FIRST_DEAD", "LAST_DEAD")
	for _, d := range page.Items {
		t.row(d.EventID, orDash(d.Position, itoa), orDash(d.Type, same), orDash(d.StreamID, same), d.Reason,
			itoa(int64(d.Deaths)), stamp(d.FirstDeadAt), stamp(d.LastDeadAt))
	}
	t.flush()
	a.more(page.NextCursor)
}

// more tells, on stderr, how to read the next page.
func (a *app) more(next *string) {
	if next != nil {
		fmt.Fprintf(a.opts.Stderr, "more: run again with --cursor %s\n", *next)
	}
}

func (a *app) userTable(ans answer) error {
	var u user
	if err := ans.decode(&u); err != nil {
		return err
	}
	t := a.table("ID", "NAME", "TOKEN")
	t.row(u.ID, u.Name, u.Token)
	t.flush()
	return nil
}

func (a *app) priceTable(versions []priceVersion, next *string) {
	t := a.table("VERSION", "EFFECTIVE_FROM", "CURRENCY", "TIERS (PRICE PER GB-HOUR)")
	for _, v := range versions {
		t.row(itoa(int64(v.Version)), stamp(v.EffectiveFrom), v.Currency, tiersText(v))
	}
	t.flush()
	a.more(next)
}

// tiersText is a version's tiers on one line: "100: 0, beyond: 0.00003"
// (up to 100 GB-hours at 0, the rest at 0.00003); a flat price alone.
func tiersText(v priceVersion) string {
	if len(v.Tiers) == 1 {
		return v.Tiers[0].Price
	}
	parts := make([]string, len(v.Tiers))
	for i, t := range v.Tiers {
		bound := "beyond"
		if t.UpTo != nil {
			bound = "up to " + *t.UpTo
		}
		parts[i] = bound + ": " + t.Price
	}
	return strings.Join(parts, ", ")
}

func (a *app) operationTable(op operation) {
	t := a.table("OPERATION", "KIND", "TARGET", "STATE", "EVENTS_APPLIED", "DIFFERENCES", "STARTED", "FINISHED")
	t.row(op.ID, op.Kind, op.Target, op.State, itoa(op.EventsApplied), itoa(op.Differences), stamp(op.StartedAt),
		orDash(op.FinishedAt, stamp))
	t.flush()
	if op.Error != nil {
		fmt.Fprintf(a.opts.Stdout, "error: %s\n", *op.Error)
	}
}
