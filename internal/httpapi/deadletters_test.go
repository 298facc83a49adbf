package httpapi_test

import (
	"context"
	"encoding/json"
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
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/database"
	"github.com/catacloud/epoch/internal/platform/dbsqlc"
	"github.com/catacloud/epoch/internal/subscribers/billing"
	"github.com/catacloud/epoch/internal/subscribers/storage"
)

// dlUser makes a user and returns its id and token.
func (e *env) dlUser(t *testing.T, name string) (uuid.UUID, string) {
	t.Helper()
	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/users", Token: adminToken, Body: `{"name":"` + name + `"}`})
	return uuid.MustParse(got.JSON["id"].(string)), got.JSON["token"].(string)
}

// storeUpload appends a file.uploaded of owner straight to the event store:
// no projection, no subscriber, no outbox row has seen it.
func (e *env) storeUpload(t *testing.T, owner uuid.UUID, size int64) eventstore.Event {
	t.Helper()
	return e.storeUploads(t, owner, size, 1)[0]
}

// storeUploads is storeUpload n times, in one append.
func (e *env) storeUploads(t *testing.T, owner uuid.UUID, size int64, n int) []eventstore.Event {
	t.Helper()
	evs := make([]eventstore.Event, n)
	for i := range evs {
		ev, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded,
			domain.FileUploadedData{OwnerID: owner, Name: "f", SizeBytes: size, ContentType: "text/plain"}, time.Now())
		require.NoError(t, err)
		evs[i] = ev
	}
	require.NoError(t, database.InTx(t.Context(), e.pool, func(tx *database.Tx) error {
		return eventstore.Append(t.Context(), tx, evs)
	}))
	return evs
}

// deadLetter is one dead letter as the consumer keeps it.
type deadLetter struct {
	id       string
	position int64 // the body's claim; 0: none
	reason   string
}

// kill records dead letters for subscriber with the consumer's query.
func (e *env) kill(t *testing.T, subscriber string, dls ...deadLetter) {
	t.Helper()
	p := &dbsqlc.DeadLetterRecordParams{Subscriber: subscriber}
	for _, d := range dls {
		p.EventIds = append(p.EventIds, d.id)
		p.Positions = append(p.Positions, d.position)
		p.Reasons = append(p.Reasons, d.reason)
		p.Bodies = append(p.Bodies, []byte(`{"some":"body"}`))
	}
	require.NoError(t, database.InTx(t.Context(), e.pool, func(tx *database.Tx) error {
		_, err := dbsqlc.New().DeadLetterRecord(t.Context(), tx, p)
		return err
	}))
}

func (e *env) deadLetters(t *testing.T, subscriber, query string) resp {
	t.Helper()
	return e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/admin/subscribers/" + subscriber + "/dead-letters" + query, Token: adminToken})
}

// deadIDs lists every dead letter id of subscriber, in list order.
func (e *env) deadIDs(t *testing.T, subscriber string) []string {
	t.Helper()
	ids := []string{}
	for _, it := range e.deadLetters(t, subscriber, "?limit=1000").JSON["items"].([]any) {
		ids = append(ids, it.(map[string]any)["event_id"].(string))
	}
	return ids
}

func (e *env) replay(t *testing.T, subscriber, body string) int64 {
	t.Helper()
	got := e.must(t, http.StatusOK, req{Method: "POST", Path: "/v1/admin/subscribers/" + subscriber + "/dead-letters/replay", Token: adminToken, Body: body})
	require.Len(t, got.JSON, 1, "body: %s", got.Raw)
	return num(t, got.JSON["replayed"])
}

func (e *env) inboxHas(t *testing.T, subscriber string, id uuid.UUID) bool {
	t.Helper()
	var n int
	require.NoError(t, e.pool.QueryRow(t.Context(), `SELECT count(*) FROM inbox WHERE subscriber = $1 AND event_id = $2`, subscriber, id).Scan(&n))
	return n > 0
}

// storedBytes is GET /v1/storage's bytes for token.
func (e *env) storedBytes(t *testing.T, token string) (files int64, bytes string) {
	t.Helper()
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/storage", Token: token})
	return num(t, got.JSON["file_count"]), string(got.JSON["bytes"].(json.Number))
}

func TestDeadLetterReplayGenuine(t *testing.T) {
	e := setup(t)
	owner, token := e.dlUser(t, "ann")
	up := e.storeUpload(t, owner, 1234)
	e.kill(t, storage.Name, deadLetter{id: up.ID.String(), position: up.Position, reason: "failed"})

	files, _ := e.storedBytes(t, token)
	require.Zero(t, files)
	require.Equal(t, int64(1), e.replay(t, storage.Name, fmt.Sprintf(`{"event_ids":[%q]}`, up.ID)))

	files, bytes := e.storedBytes(t, token)
	require.Equal(t, int64(1), files)
	require.Equal(t, "1234", bytes)
	require.True(t, e.inboxHas(t, storage.Name, up.ID))
	require.False(t, e.inboxHas(t, billing.Name, up.ID), "billing is not handed a storage replay")
	var billed int
	require.NoError(t, e.pool.QueryRow(t.Context(), `SELECT count(*) FROM billing_files`).Scan(&billed))
	require.Zero(t, billed)
	require.Empty(t, e.deadIDs(t, storage.Name))

	// Again: it is no longer a dead letter; nothing changes.
	require.Zero(t, e.replay(t, storage.Name, fmt.Sprintf(`{"event_ids":[%q]}`, up.ID)))
	files, bytes = e.storedBytes(t, token)
	require.Equal(t, int64(1), files)
	require.Equal(t, "1234", bytes)

	// Dead again after it was applied (a late duplicate that died): a
	// replay finds it applied already, and it still leaves the list.
	e.kill(t, storage.Name, deadLetter{id: up.ID.String(), position: up.Position, reason: "failed"})
	require.Equal(t, int64(1), e.replay(t, storage.Name, `{"all":true}`))
	require.Empty(t, e.deadIDs(t, storage.Name))
	files, bytes = e.storedBytes(t, token)
	require.Equal(t, int64(1), files)
	require.Equal(t, "1234", bytes)
}

func TestDeadLetterReplayMismatchAppliesStored(t *testing.T) {
	e := setup(t)
	owner, token := e.dlUser(t, "ann")
	up := e.storeUpload(t, owner, 10)
	// An altered copy of a stored event: the replay applies what is stored.
	e.kill(t, billing.Name, deadLetter{id: up.ID.String(), position: up.Position, reason: "mismatch"})
	require.Equal(t, int64(1), e.replay(t, billing.Name, fmt.Sprintf(`{"event_ids":[%q]}`, up.ID)))
	require.True(t, e.inboxHas(t, billing.Name, up.ID))
	require.False(t, e.inboxHas(t, storage.Name, up.ID))
	var size int64
	require.NoError(t, e.pool.QueryRow(t.Context(), `SELECT size_bytes FROM billing_files WHERE file_id = $1`, up.StreamID).Scan(&size))
	require.Equal(t, int64(10), size)
	files, _ := e.storedBytes(t, token)
	require.Zero(t, files, "storage is not handed a billing replay")
}

func TestDeadLetterReplayForgery(t *testing.T) {
	e := setup(t)
	owner, token := e.dlUser(t, "ann")
	up := e.storeUpload(t, owner, 1)
	forged := uuid.New().String()
	e.kill(t, storage.Name,
		deadLetter{id: forged, position: up.Position + 100, reason: "unknown_event"},
		// A stored id at a position that is not its own names no stored event.
		deadLetter{id: up.ID.String(), position: up.Position + 1, reason: "unknown_event"},
		deadLetter{id: "sha256:00ff", reason: "malformed"})

	require.Zero(t, e.replay(t, storage.Name, fmt.Sprintf(`{"event_ids":[%q,%q,"sha256:00ff"]}`, forged, up.ID)))
	require.Zero(t, e.replay(t, storage.Name, `{"all":true}`))
	files, _ := e.storedBytes(t, token)
	require.Zero(t, files)
	require.False(t, e.inboxHas(t, storage.Name, up.ID))

	items := e.deadLetters(t, storage.Name, "").JSON["items"].([]any)
	require.Len(t, items, 3)
	reasons := map[string]string{}
	for _, it := range items {
		m := it.(map[string]any)
		reasons[m["event_id"].(string)] = m["reason"].(string)
		require.Nil(t, m["position"])
		require.Nil(t, m["type"])
		require.Nil(t, m["stream_id"])
	}
	require.Equal(t, map[string]string{forged: "unknown_event", up.ID.String(): "unknown_event", "sha256:00ff": "malformed"}, reasons)
}

func TestDeadLetterReplayAllInBatches(t *testing.T) {
	e := setup(t)
	owner, token := e.dlUser(t, "ann")
	ups := e.storeUploads(t, owner, 1, 1190)
	var dls []deadLetter
	for i := range 1203 {
		if i%100 == 0 {
			dls = append(dls, deadLetter{id: fmt.Sprintf("forged-%d", i), position: 1 << 40, reason: "unknown_event"})
			continue
		}
		up := ups[i-i/100-1]
		dls = append(dls, deadLetter{id: up.ID.String(), position: up.Position, reason: "failed"})
	}
	for i := 0; i < len(dls); i += 400 {
		e.kill(t, storage.Name, dls[i:min(i+400, len(dls))]...)
	}
	require.Equal(t, int64(1203-13), e.replay(t, storage.Name, `{"all":true}`))
	files, bytes := e.storedBytes(t, token)
	require.Equal(t, int64(1190), files)
	require.Equal(t, "1190", bytes)
	require.Len(t, e.deadIDs(t, storage.Name), 13)
}

func TestDeadLetterReplayFailingAgainStays(t *testing.T) {
	e := setup(t)
	owner, token := e.dlUser(t, "ann")
	good := e.storeUpload(t, owner, 5)
	bad, err := eventstore.New(domain.StreamFile, uuid.New(), 1, domain.FileUploaded, json.RawMessage(`{"owner_id":42}`), time.Now())
	require.NoError(t, err)
	evs := []eventstore.Event{bad}
	require.NoError(t, database.InTx(t.Context(), e.pool, func(tx *database.Tx) error {
		return eventstore.Append(t.Context(), tx, evs)
	}))
	bad = evs[0]
	e.kill(t, storage.Name, deadLetter{id: good.ID.String(), position: good.Position, reason: "failed"},
		deadLetter{id: bad.ID.String(), position: bad.Position, reason: "failed"})

	require.Equal(t, int64(1), e.replay(t, storage.Name, `{"all":true}`))
	files, bytes := e.storedBytes(t, token)
	require.Equal(t, int64(1), files)
	require.Equal(t, "5", bytes)
	require.Equal(t, []string{bad.ID.String()}, e.deadIDs(t, storage.Name))
	require.False(t, e.inboxHas(t, storage.Name, bad.ID), "a failed application claims no inbox row")
}

func TestDeadLetterDiscard(t *testing.T) {
	e := setup(t)
	owner, _ := e.dlUser(t, "ann")
	up := e.storeUpload(t, owner, 1)
	odd := "sha256:ab/c d"
	e.kill(t, storage.Name, deadLetter{id: up.ID.String(), position: up.Position, reason: "failed"},
		deadLetter{id: odd, reason: "malformed"})
	e.kill(t, billing.Name, deadLetter{id: up.ID.String(), position: up.Position, reason: "failed"})

	path := "/v1/admin/subscribers/storage/dead-letters/"
	e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: path + up.ID.String(), Token: adminToken})
	requireError(t, e.do(t, req{Method: "DELETE", Path: path + up.ID.String(), Token: adminToken}), http.StatusNotFound, "not_found")
	require.Equal(t, []string{odd}, e.deadIDs(t, storage.Name))
	require.Equal(t, []string{up.ID.String()}, e.deadIDs(t, billing.Name), "only that subscriber's dead letter goes")
	require.False(t, e.inboxHas(t, storage.Name, up.ID), "a discard applies nothing")

	e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: path + url.PathEscape(odd), Token: adminToken})
	require.Empty(t, e.deadIDs(t, storage.Name))

	requireError(t, e.do(t, req{Method: "DELETE", Path: path + strings.Repeat("x", 256), Token: adminToken, Hostile: true}), http.StatusBadRequest, "invalid_input")
	requireError(t, e.do(t, req{Method: "DELETE", Path: path + "%00", Token: adminToken, Hostile: true}), http.StatusBadRequest, "invalid_input")
	requireError(t, e.do(t, req{Method: "DELETE", Path: path + "%ff", Token: adminToken, Hostile: true}), http.StatusBadRequest, "invalid_input")
	requireError(t, e.do(t, req{Method: "DELETE", Path: "/v1/admin/subscribers/nope/dead-letters/x", Token: adminToken}), http.StatusNotFound, "not_found")
}

func TestDeadLetterList(t *testing.T) {
	e := setup(t)
	owner, _ := e.dlUser(t, "ann")
	var want []string
	stored := map[string]eventstore.Event{}
	for i := range 5 {
		if i%2 == 1 {
			id := fmt.Sprintf("forged-%d", i)
			e.kill(t, storage.Name, deadLetter{id: id, position: 1 << 40, reason: "unknown_event"})
			want = append(want, id)
			continue
		}
		up := e.storeUpload(t, owner, 1)
		e.kill(t, storage.Name, deadLetter{id: up.ID.String(), position: up.Position, reason: "mismatch"})
		stored[up.ID.String()] = up
		want = append(want, up.ID.String())
	}
	// A second death counts, and does not move it in the list.
	e.kill(t, storage.Name, deadLetter{id: want[0], position: stored[want[0]].Position, reason: "mismatch"})

	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 3)
		page := e.deadLetters(t, storage.Name, "?limit=2&cursor="+cursor).JSON
		items := page["items"].([]any)
		require.LessOrEqual(t, len(items), 2)
		for _, it := range items {
			m := it.(map[string]any)
			id := m["event_id"].(string)
			got = append(got, id)
			require.ElementsMatch(t, []string{"event_id", "position", "type", "stream_id", "reason", "deaths", "first_dead_at", "last_dead_at"}, keys(m))
			first, err := time.Parse(time.RFC3339Nano, m["first_dead_at"].(string))
			require.NoError(t, err)
			last, err := time.Parse(time.RFC3339Nano, m["last_dead_at"].(string))
			require.NoError(t, err)
			require.False(t, last.Before(first))
			if ev, ok := stored[id]; ok {
				require.Equal(t, ev.Position, num(t, m["position"]))
				require.Equal(t, domain.FileUploaded, m["type"])
				require.Equal(t, ev.StreamID.String(), m["stream_id"])
				require.Equal(t, "mismatch", m["reason"])
			} else {
				require.Nil(t, m["position"], "the body's position is not shown")
				require.Nil(t, m["type"])
				require.Nil(t, m["stream_id"])
				require.Equal(t, "unknown_event", m["reason"])
			}
			wantDeaths := int64(1)
			if id == want[0] {
				wantDeaths = 2
			}
			require.Equal(t, wantDeaths, num(t, m["deaths"]))
		}
		if page["next_cursor"] == nil {
			break
		}
		cursor = url.QueryEscape(page["next_cursor"].(string))
	}
	require.Equal(t, want, got)

	empty := e.deadLetters(t, billing.Name, "").JSON
	require.Equal(t, []any{}, empty["items"])
	require.Nil(t, empty["next_cursor"])

	path := "/v1/admin/subscribers/storage/dead-letters"
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?cursor=nope", "?cursor=cDox"} {
		requireError(t, e.do(t, req{Method: "GET", Path: path + q, Token: adminToken, Hostile: true}), http.StatusBadRequest, "invalid_input")
	}
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/admin/subscribers/projection/dead-letters", Token: adminToken}), http.StatusNotFound, "not_found")
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestDeadLetterBadRequests(t *testing.T) {
	e := setup(t)
	owner, token := e.dlUser(t, "ann")
	up := e.storeUpload(t, owner, 1)
	e.kill(t, storage.Name, deadLetter{id: up.ID.String(), position: up.Position, reason: "failed"})
	id := up.ID.String()

	tooMany := make([]string, 1001)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("id-%d", i)
	}
	tooManyJSON, _ := json.Marshal(map[string]any{"event_ids": tooMany})
	replayPath := "/v1/admin/subscribers/storage/dead-letters/replay"
	for _, body := range []string{
		fmt.Sprintf(`{"event_ids":[%q],"all":true}`, id),
		`{}`,
		`{"all":false}`,
		`{"event_ids":[]}`,
		`{"event_ids":null}`,
		string(tooManyJSON),
		fmt.Sprintf(`{"event_ids":[%q,%q]}`, id, id),
		fmt.Sprintf(`{"event_ids":[%q,""]}`, id),
		fmt.Sprintf(`{"event_ids":[%q,%q]}`, id, strings.Repeat("x", 256)),
		fmt.Sprintf(`{"event_ids":[%q,"a\u0000b"]}`, id),
		fmt.Sprintf(`{"event_ids":[%q,7]}`, id),
		fmt.Sprintf(`{"event_ids":[%q],"extra":1}`, id),
		`{"all":true} {}`,
		`{"all":"yes"}`,
		`not json`,
	} {
		requireError(t, e.do(t, req{Method: "POST", Path: replayPath, Token: adminToken, Body: body, Hostile: true}), http.StatusBadRequest, "invalid_input")
	}
	// 255 characters (not bytes) is still an id one may name.
	require.Zero(t, e.replay(t, storage.Name, fmt.Sprintf(`{"event_ids":[%q]}`, strings.Repeat("é", 255))))

	requireError(t, e.do(t, req{Method: "POST", Path: "/v1/admin/subscribers/nope/dead-letters/replay", Token: adminToken, Body: `{"all":true}`}),
		http.StatusNotFound, "not_found")

	calls := []req{
		{Method: "GET", Path: "/v1/admin/subscribers/storage/dead-letters"},
		{Method: "POST", Path: replayPath, Body: `{"all":true}`},
		{Method: "DELETE", Path: "/v1/admin/subscribers/storage/dead-letters/" + id},
	}
	for _, c := range calls {
		requireError(t, e.do(t, c), http.StatusUnauthorized, "unauthorized")
		c.Token = token // a user's token is not the admin's
		requireError(t, e.do(t, c), http.StatusUnauthorized, "unauthorized")
	}
	noAdmin := setup(t, func(c *httpapi.Config) { c.AdminToken = "" })
	for _, c := range calls {
		c.Token = adminToken
		requireError(t, noAdmin.do(t, c), http.StatusForbidden, "forbidden")
	}

	// Nothing of it was written: the dead letter is there, unapplied.
	require.Equal(t, []string{id}, e.deadIDs(t, storage.Name))
	require.False(t, e.inboxHas(t, storage.Name, up.ID))
	files, _ := e.storedBytes(t, token)
	require.Zero(t, files)
	var deaths int
	require.NoError(t, e.pool.QueryRow(context.Background(), `SELECT deaths FROM dead_letters`).Scan(&deaths))
	require.Equal(t, 1, deaths)
}
