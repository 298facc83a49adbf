package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/testkit/e2ekit"
)

// occurredAtRE is RFC 3339 with exactly six fractional digits.
var occurredAtRE = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$`)

// dataKeys is DESIGN.md's table of event data, by type.
var dataKeys = map[string][]string{
	"file.uploaded":     {"content_type", "name", "owner_id", "size_bytes"},
	"file.deleted":      {"owner_id"},
	"job.created":       {"name", "owner_id"},
	"job.file_linked":   {"file_id"},
	"job.file_unlinked": {"file_id"},
	"job.deleted":       {},
}

// Through the built binaries (api and worker processes), an
// outside consumer bound to catacloud.events with "#" gets every event of
// the events table, each with DESIGN.md's message contract, each stream in
// version order; and the worker's subscribers answer GET /v1/storage.
func TestMessageContractEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := e2ekit.CtxFor(t, 2*time.Minute)
	start := time.Now()
	s := newSystem(t, "sys", "")
	const users = 3
	script := makeScript(uint64(time.Now().UnixNano()), users, 150)
	tokens, positions := s.run(t, users, script)
	last := slices.Max(positions)

	events := e2ekit.LoadEvents(t, ctx, s.pool)
	require.Equal(t, last, events[len(events)-1].Position, "the highest command position is the last event's")
	seen := map[string]bool{}
	for _, e := range events {
		seen[e.Type] = true
	}
	for typ := range dataKeys {
		require.True(t, seen[typ], "the script wrote no %s event", typ)
	}
	e2ekit.Eventually(t, 30*time.Second, "every event on the exchange", s.rec.HasAll(e2ekit.EventIDs(events)))
	first, order := s.rec.Snapshot()
	require.Len(t, first, len(events), "messages that are not events of the table")

	for _, e := range events {
		d := first[e.ID.String()]
		checkMessage(t, e, d)
	}

	// One relay, no faults: each stream arrives in version order, without gaps.
	require.NoError(t, e2ekit.StreamOrder(events, order))

	// The worker's subscribers, end to end: what each user stores.
	tr := e2ekit.BruteForce(t, events)
	for u, tok := range tokens {
		got := s.call(t, http.StatusOK, "GET", fmt.Sprintf("/v1/storage?min_position=%d", last), tok, nil).JSON(t)
		owner := ownerOf(t, s, tok)
		count, bytes := tr.Storage(owner)
		require.Equal(t, map[string]any{
			"file_count": json.Number(fmt.Sprint(count)), "bytes": json.Number(bytes), "position": json.Number(fmt.Sprint(tr.Position[owner])),
		}, got, "storage of user %d", u)
	}
	t.Logf("%d events, %d commands, checked in %s", len(events), len(script), time.Since(start))
}

// checkMessage holds one delivery to DESIGN.md's message contract for e.
func checkMessage(t *testing.T, e e2ekit.Event, d amqp.Delivery) {
	t.Helper()
	id := e.ID.String()
	require.Equal(t, e2ekit.Exchange, d.Exchange, id)
	require.Equal(t, e.Type, d.RoutingKey, id)
	require.Equal(t, uint8(amqp.Persistent), d.DeliveryMode, id)
	require.Equal(t, "application/json", d.ContentType, id)
	require.Equal(t, id, d.MessageId)
	require.Equal(t, e.Type, d.Type, id)
	require.Equal(t, e.OccurredAt.Unix(), d.Timestamp.Unix(), "timestamp of %s", id)

	var body map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(d.Body))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&body), "body of %s: %s", id, d.Body)
	require.False(t, dec.More(), "trailing data after the body of %s", id)
	keys := make([]string, 0, len(body))
	for k := range body {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	require.Equal(t, []string{"data", "id", "occurred_at", "position", "stream_id", "stream_type", "type", "version"}, keys, "body of %s", id)

	str := func(k string) string {
		var s string
		require.NoError(t, json.Unmarshal(body[k], &s), "%s of %s: %s", k, id, body[k])
		return s
	}
	num := func(k string) int64 {
		var n json.Number
		require.NoError(t, json.Unmarshal(body[k], &n), "%s of %s must be a JSON integer: %s", k, id, body[k])
		v, err := n.Int64()
		require.NoError(t, err, "%s of %s must be a JSON integer: %s", k, id, body[k])
		return v
	}
	require.Equal(t, id, str("id"))
	require.Equal(t, e.Type, str("type"), id)
	require.Equal(t, e.StreamType, str("stream_type"), id)
	require.Equal(t, e.StreamID.String(), str("stream_id"), id)
	require.Equal(t, int64(e.Version), num("version"), id)
	require.Equal(t, e.Position, num("position"), id)
	at := str("occurred_at")
	require.Regexp(t, occurredAtRE, at, "occurred_at of %s", id)
	parsed, err := time.Parse(time.RFC3339Nano, at)
	require.NoError(t, err)
	require.True(t, parsed.Equal(e.OccurredAt), "occurred_at of %s: %s, table has %s", id, at, e.OccurredAt)

	var got, want map[string]any
	require.NoError(t, json.Unmarshal(body["data"], &got), "data of %s: %s", id, body["data"])
	require.NoError(t, json.Unmarshal(e.Data, &want))
	if len(want) == 0 {
		want = map[string]any{}
	}
	require.Equal(t, want, got, "data of %s", id)
	gotKeys := make([]string, 0, len(got))
	for k := range got {
		gotKeys = append(gotKeys, k)
	}
	slices.Sort(gotKeys)
	wantKeys, ok := dataKeys[e.Type]
	if !ok && e.Type == "statement.closed" {
		wantKeys = statementKeys
	}
	require.Equal(t, wantKeys, gotKeys, "data fields of %s %s", e.Type, id)
}

// ownerOf is the user id behind a token (the users table keeps its SHA-256).
func ownerOf(t *testing.T, s *system, token string) uuid.UUID {
	t.Helper()
	var id uuid.UUID
	err := s.pool.QueryRow(t.Context(), "SELECT id FROM users WHERE token_hash = sha256($1::text::bytea)", token).Scan(&id)
	require.NoError(t, err)
	return id
}
