package failovertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// verifyCommands checks the load's commands against the events of the new
// primary: each ended answered 2xx after 503s at most (never a 500, never
// a dropped connection), its 2xx answer is in the store at the position it
// answered, and each Idempotency-Key landed once. It returns how many
// tries answered 503, and how many commands answered 503 first and yet
// had committed before the promotion at since (their COMMIT reached the
// standby before the answer was lost; the retry replayed it).
func (d *deployment) verifyCommands(l *load, events []e2ekit.Event, since time.Time) (unavailable, replayed int) {
	t := d.t
	t.Helper()
	byPosition := make(map[int64]e2ekit.Event, len(events))
	uploads := map[string]int{} // file name → uploads stored
	for _, e := range events {
		byPosition[e.Position] = e
		if e.Type == "file.uploaded" {
			var data struct {
				Name string `json:"name"`
			}
			require.NoError(t, json.Unmarshal(e.Data, &data))
			uploads[data.Name]++
		}
	}
	for _, c := range l.snapshot() {
		for _, a := range c.tries {
			switch {
			case a.err != "":
				t.Fatalf("%s %s (key %s): no answer: %s", c.api, c.kind, c.key, a.err)
			case a.status == http.StatusServiceUnavailable:
				unavailable++
			case a.status/100 != 2:
				t.Fatalf("%s %s (key %s): answered %d (only 2xx or 503 may come): tries %+v", c.api, c.kind, c.key, a.status, c.tries)
			}
		}
		_, ok := c.ok()
		require.True(t, ok, "%s %s (key %s) never answered 2xx: %+v", c.api, c.kind, c.key, c.tries)
		e, stored := byPosition[c.position]
		want := map[string]string{"upload": "file.uploaded", "delete": "file.deleted"}[c.kind]
		require.True(t, stored, "%s %s (key %s) answered 2xx at position %d, which the new primary does not hold", c.api, c.kind, c.key, c.position)
		require.Equal(t, want, e.Type, "event at the answered position %d of %s (key %s)", c.position, c.kind, c.key)
		require.Equal(t, c.fileID, e.StreamID.String(), "file of the event at the answered position %d (key %s)", c.position, c.key)
		if c.kind == "upload" {
			require.Equal(t, 1, uploads[c.name], "uploads of %s stored (key %s, tries %+v)", c.name, c.key, c.tries)
		}
		if len(c.tries) > 1 && e.OccurredAt.Before(since) {
			replayed++
		}
	}
	return unavailable, replayed
}

// drained waits until the outbox is empty, every event of events reached
// the recorder and both subscribers applied every file event.
func (d *deployment) drained(ctx context.Context, events []e2ekit.Event) {
	t := d.t
	t.Helper()
	ids := e2ekit.EventIDs(events)
	fileEvents := e2ekit.CountFileEvents(events)
	start := time.Now()
	e2ekit.Eventually(t, 90*time.Second, "outbox drained, every event at the recorder, both subscribers caught up", func() (bool, string) {
		backlog := e2ekit.OutboxBacklog(t, ctx, d.pool)
		missing, example := d.rec.Missing(ids)
		st, bi := e2ekit.InboxCount(t, ctx, d.pool, "storage"), e2ekit.InboxCount(t, ctx, d.pool, "billing")
		return backlog == 0 && missing == 0 && st == fileEvents && bi == fileEvents,
			fmt.Sprintf("outbox %d events, %d events not at the recorder (e.g. %s), inbox storage %d billing %d of %d file events",
				backlog, missing, example, st, bi, fileEvents)
	})
	t.Logf("drained %s after the load stopped", time.Since(start).Round(time.Millisecond))
}

// streamOrder checks per-stream order at the recorder over the events of
// the new primary: the first arrivals the broker did not redeliver, and
// only of messages that name a stored event (a lost event's message may
// have come first at its id).
func (d *deployment) streamOrder(events []e2ekit.Event) {
	t := d.t
	t.Helper()
	stored := map[string]e2ekit.Event{}
	for _, e := range events {
		stored[e.ID.String()] = e
	}
	first, order := d.rec.Snapshot()
	sent := slices.DeleteFunc(slices.Clone(order), func(id string) bool {
		e, ok := stored[id]
		if !ok || first[id].Redelivered {
			return true
		}
		var body struct {
			Position int64 `json:"position"`
		}
		return json.Unmarshal(first[id].Body, &body) != nil || body.Position != e.Position
	})
	t.Logf("per-stream order checked on %d first arrivals of %d", len(sent), len(order))
	require.NoError(t, e2ekit.StreamAscending(events, sent), "per-stream order at the recorder")
}

// exact checks storage and usage against the brute-force truth of
// events, directly and through both api processes (with min_position),
// and one billing row per uploaded file.
func (d *deployment) exact(ctx context.Context, events []e2ekit.Event, users []*user) {
	t := d.t
	t.Helper()
	e2ekit.CheckStorageAndBilling(t, ctx, d.pool, events)
	tr := e2ekit.BruteForce(t, events)
	var billed int
	require.NoError(t, d.pool.QueryRow(ctx, "SELECT count(*) FROM billing_files").Scan(&billed))
	require.Equal(t, tr.Files(), billed, "billing keeps one row per uploaded file")
	from, to := events[0].OccurredAt.Add(-time.Hour), events[len(events)-1].OccurredAt.Add(time.Millisecond)
	time.Sleep(time.Until(to.Add(time.Millisecond)))
	for _, u := range users {
		count, bytes := tr.Storage(u.id)
		pos := tr.Position[u.id]
		want := billing.FormatDecimal(tr.ByteSeconds(u.id, from, to, to), 6)
		for _, api := range d.apis {
			got := e2ekit.Call(t, d.http, api.Addr, http.StatusOK, "GET", e2ekit.UsagePath(from, to, pos), u.token, nil).JSON(t)
			require.Equal(t, want, got["byte_seconds"], "usage of %s on %s", u.id, api.Name)
			got = e2ekit.Call(t, d.http, api.Addr, http.StatusOK, "GET", fmt.Sprintf("/v1/storage?min_position=%d", pos), u.token, nil).JSON(t)
			require.Equal(t, []string{fmt.Sprint(count), bytes, fmt.Sprint(pos)},
				[]string{fmt.Sprint(got["file_count"]), fmt.Sprint(got["bytes"]), fmt.Sprint(got["position"])}, "storage of %s on %s", u.id, api.Name)
		}
	}
}

// requireAlive: every process is still the one started.
func (d *deployment) requireAlive() {
	d.t.Helper()
	for _, p := range append(slices.Clone(d.apis), d.workers...) {
		require.False(d.t, p.Exited(), "%s must ride out the failover without a restart: %v", p.Name, p.Err())
	}
}

// minPositionRead reads storage with min_position at a position committed
// after the promotion, on each api: it must answer 200 at or past it.
func (d *deployment) minPositionRead(u *user, position int64) {
	d.t.Helper()
	for _, api := range d.apis {
		got := e2ekit.Call(d.t, d.http, api.Addr, http.StatusOK, "GET", fmt.Sprintf("/v1/storage?min_position=%d", position), u.token, nil).JSON(d.t)
		var p int64
		_, err := fmt.Sscan(fmt.Sprint(got["position"]), &p)
		require.NoError(d.t, err)
		require.GreaterOrEqual(d.t, p, position, "storage position on %s", api.Name)
	}
}

// uploadOne uploads a file as u through the first api and returns its id
// and the answer's position.
func (d *deployment) uploadOne(u *user, name string) (uuid.UUID, int64) {
	d.t.Helper()
	a := e2ekit.Call(d.t, d.http, d.apis[0].Addr, http.StatusCreated, "POST", "/v1/files", u.token, map[string]any{"name": name, "size_bytes": 1000})
	return uuid.MustParse(a.JSON(d.t)["id"].(string)), a.Position(d.t)
}

// deadLetter is one of a subscriber's dead letters, as the admin API
// lists it.
type deadLetter struct {
	reason string
	deaths int
}

// deadLetters lists a subscriber's dead letters through the admin API, by
// event id.
func (d *deployment) deadLetters(subscriber string) map[string]deadLetter {
	d.t.Helper()
	out := map[string]deadLetter{}
	cursor := ""
	for {
		path := "/v1/admin/subscribers/" + subscriber + "/dead-letters?limit=100"
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		page := e2ekit.Call(d.t, d.http, d.apis[0].Addr, http.StatusOK, "GET", path, adminToken, nil).JSON(d.t)
		items, _ := page["items"].([]any)
		for _, it := range items {
			m := it.(map[string]any)
			var deaths int
			_, err := fmt.Sscan(fmt.Sprint(m["deaths"]), &deaths)
			require.NoError(d.t, err)
			out[fmt.Sprint(m["event_id"])] = deadLetter{reason: fmt.Sprint(m["reason"]), deaths: deaths}
		}
		next, _ := page["next_cursor"].(string)
		if next == "" || len(items) == 0 {
			return out
		}
		cursor = next
	}
}

// publishAgain publishes copies of messages to the exchange, as they came
// (properties and body), with confirms.
func (d *deployment) publishAgain(msgs []amqp.Delivery) {
	d.t.Helper()
	conn, err := amqp.Dial(d.amqpURL)
	require.NoError(d.t, err)
	defer conn.Close()
	ch, err := conn.Channel()
	require.NoError(d.t, err)
	require.NoError(d.t, ch.Confirm(false))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range msgs {
		dc, err := ch.PublishWithDeferredConfirmWithContext(ctx, e2ekit.Exchange, m.RoutingKey, true, false, amqp.Publishing{
			Headers: m.Headers, ContentType: m.ContentType, DeliveryMode: amqp.Persistent, MessageId: m.MessageId,
			Timestamp: m.Timestamp, Type: m.Type, Body: m.Body,
		})
		require.NoError(d.t, err)
		acked, err := dc.WaitContext(ctx)
		require.NoError(d.t, err)
		require.True(d.t, acked, "the broker nacked the copy of %s", m.MessageId)
	}
}

// verifyCommandsAsync is verifyCommands for a failover that loses what the
// old primary committed after shippedAt: a command answered 2xx before
// shippedAt or after promotedAt is in the store at its position, one
// answered between may be lost, and a delete of a file whose upload was
// lost answers 404. Every command ended answered (after 503s at most,
// never a 500 or a dropped connection), and no upload landed twice. It
// returns how many 2xx answers were lost.
func (d *deployment) verifyCommandsAsync(l *load, events []e2ekit.Event, shippedAt, promotedAt time.Time) (lost int) {
	t := d.t
	t.Helper()
	byPosition := make(map[int64]e2ekit.Event, len(events))
	uploads := map[string]int{}
	files := map[string]bool{} // uploaded, in the store
	for _, e := range events {
		byPosition[e.Position] = e
		if e.Type == "file.uploaded" {
			var data struct {
				Name string `json:"name"`
			}
			require.NoError(t, json.Unmarshal(e.Data, &data))
			uploads[data.Name]++
			files[e.StreamID.String()] = true
		}
	}
	for _, c := range l.snapshot() {
		final := c.tries[len(c.tries)-1]
		for _, a := range c.tries[:len(c.tries)-1] {
			require.Equal(t, http.StatusServiceUnavailable, a.status, "%s %s (key %s): only 503s come before the last try: %+v", c.api, c.kind, c.key, c.tries)
		}
		if c.kind == "delete" && final.status == http.StatusNotFound && !files[c.fileID] {
			continue // its upload was lost
		}
		require.Empty(t, final.err, "%s %s (key %s): no answer", c.api, c.kind, c.key)
		require.Equal(t, 2, final.status/100, "%s %s (key %s): answered %d: %+v", c.api, c.kind, c.key, final.status, c.tries)
		if c.kind == "upload" {
			require.LessOrEqual(t, uploads[c.name], 1, "uploads of %s stored (key %s)", c.name, c.key)
		}
		e, stored := byPosition[c.position]
		if final.at.After(shippedAt) && final.at.Before(promotedAt) {
			if !stored || e.StreamID.String() != c.fileID {
				lost++
			}
			continue
		}
		want := map[string]string{"upload": "file.uploaded", "delete": "file.deleted"}[c.kind]
		require.True(t, stored, "%s %s (key %s) answered 2xx at position %d, which the new primary does not hold", c.api, c.kind, c.key, c.position)
		require.Equal(t, want, e.Type, "event at the answered position %d (key %s)", c.position, c.key)
		require.Equal(t, c.fileID, e.StreamID.String(), "file of the event at the answered position %d (key %s)", c.position, c.key)
	}
	return lost
}

// logSummary sums up a process's warnings and errors: each message with
// its level, how often, first and last, in seconds since since.
func logSummary(p *e2ekit.Proc, since time.Time) (summary string, errors []string) {
	var tally e2ekit.LogTally
	for _, line := range strings.Split(p.Output(), "\n") {
		var rec struct {
			Time  time.Time `json:"time"`
			Level string    `json:"level"`
			Msg   string    `json:"msg"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Level != "WARN" && rec.Level != "ERROR" {
			continue
		}
		if rec.Level == "ERROR" {
			errors = append(errors, line)
		}
		tally.Add(rec.Level+" "+rec.Msg, rec.Time)
	}
	return tally.String(p.Name, since), errors
}

// logsOfTheOutage logs what each process logged at warning and error
// level, and requires no error of a worker: the database's outage is a
// warning of the relay's and the subscribers', which pick up by
// themselves.
func (d *deployment) logsOfTheOutage(since time.Time) {
	d.t.Helper()
	for _, p := range append(slices.Clone(d.apis), d.workers...) {
		summary, errs := logSummary(p, since)
		d.t.Log(summary)
		if slices.Contains(d.workers, p) {
			require.Empty(d.t, errs, "%s logged errors for the database's outage", p.Name)
		}
	}
}
