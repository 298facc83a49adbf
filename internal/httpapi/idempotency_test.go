package httpapi_test

import (
	"net/http"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// replayed requires that two answers are the same: status, body and the
// headers a client acts on.
func requireSameAnswer(t *testing.T, first, again resp) {
	t.Helper()
	require.Equal(t, first.Status, again.Status)
	require.Equal(t, string(first.Raw), string(again.Raw))
	for _, h := range []string{"Content-Type", "Epoch-Position", "ETag", "Location"} {
		require.Equal(t, first.Header.Get(h), again.Header.Get(h), h)
	}
}

// A retried command with the same Idempotency-Key returns the same answer
// and writes one event.
func TestIdempotencyReplay(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	b := e.newUser(t, "b")
	key := map[string]string{"Idempotency-Key": "upload-1"}

	upload := req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"x","size_bytes":5}`, Header: key}
	first := e.must(t, http.StatusCreated, upload)
	before := e.counts(t)
	for range 3 {
		requireSameAnswer(t, first, e.do(t, upload))
	}
	require.Equal(t, before, e.counts(t), "a replay writes nothing")
	require.Equal(t, 1, before.Events)
	require.Equal(t, 1, before.Keys)

	// The same key with another body, method or path: 409, nothing written.
	for _, r := range []req{
		{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":6}`},
		{Method: "POST", Path: "/v1/jobs", Body: `{"name":"x"}`},
		{Method: "DELETE", Path: "/v1/files/" + first.JSON["id"].(string)},
	} {
		r.Token, r.Header = a, key
		requireError(t, e.do(t, r), 409, "idempotency_key_reused")
	}
	require.Equal(t, before, e.counts(t))

	// Keys belong to a user: b's same key is b's own.
	otherUser := upload
	otherUser.Token = b
	got := e.must(t, http.StatusCreated, otherUser)
	require.NotEqual(t, first.JSON["id"], got.JSON["id"])

	// Replays of job commands keep the ETag; a delete's 204 replays too.
	jobKey := map[string]string{"Idempotency-Key": "job-1"}
	create := req{Method: "POST", Path: "/v1/jobs", Token: a, Body: `{"name":"j"}`, Header: jobKey}
	firstJob := e.must(t, http.StatusCreated, create)
	job := firstJob.JSON["id"].(string)
	link := req{Method: "PUT", Path: "/v1/jobs/" + job + "/files/" + first.JSON["id"].(string), Token: a,
		Header: map[string]string{"Idempotency-Key": "link-1", "If-Match": `"1"`}}
	firstLink := e.must(t, http.StatusOK, link)
	del := req{Method: "DELETE", Path: "/v1/jobs/" + job, Token: a, Header: map[string]string{"Idempotency-Key": "del-1"}}
	firstDel := e.must(t, http.StatusNoContent, del)
	before = e.counts(t)
	requireSameAnswer(t, firstJob, e.do(t, create))
	// The job is gone and If-Match is stale now, yet the replay answers
	// the first answer: it is judged by the key, not afresh.
	requireSameAnswer(t, firstLink, e.do(t, link))
	requireSameAnswer(t, firstDel, e.do(t, del))
	require.Equal(t, before, e.counts(t))
}

// Rejected requests are not stored: a retry with the same key is judged
// afresh.
func TestIdempotencyRejectedNotStored(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	job := e.createJob(t, a, "j")
	file := e.upload(t, a, "f", 1)
	key := map[string]string{"Idempotency-Key": "k"}

	stale := req{Method: "PUT", Path: "/v1/jobs/" + job + "/files/" + file, Token: a,
		Header: map[string]string{"Idempotency-Key": "k", "If-Match": `"7"`}}
	requireError(t, e.do(t, stale), 412, "precondition_failed")
	require.Equal(t, 0, e.counts(t).Keys)

	// Same key, same request: judged afresh, so still 412 ...
	requireError(t, e.do(t, stale), 412, "precondition_failed")
	// ... and the request it really meant now succeeds with that key.
	ok := req{Method: "PUT", Path: "/v1/jobs/" + job + "/files/" + file, Token: a, Header: key}
	first := e.must(t, http.StatusOK, ok)
	requireSameAnswer(t, first, e.do(t, ok))

	// A 400 is not stored either.
	bad := req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"x"}`, Header: map[string]string{"Idempotency-Key": "k2"}, Hostile: true}
	requireError(t, e.do(t, bad), 400, "invalid_input")
	e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"x","size_bytes":1}`, Header: map[string]string{"Idempotency-Key": "k2"}})
}

// Concurrent requests with one key: one runs the command, the others wait
// for it and replay its answer.
func TestIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	r := req{Method: "POST", Path: "/v1/jobs", Token: a, Body: `{"name":"once"}`, Header: map[string]string{"Idempotency-Key": "same"}}

	const n = 12
	answers := make([]resp, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i] = e.do(t, r)
		})
	}
	close(start)
	wg.Wait()
	for _, got := range answers {
		require.Equal(t, http.StatusCreated, got.Status, "body: %s", got.Raw)
		requireSameAnswer(t, answers[0], got)
	}
	c := e.counts(t)
	require.Equal(t, 1, c.Events)
	require.Equal(t, 1, c.Jobs)
	require.Equal(t, 1, c.Keys)
}

// A key older than 24 h is treated as absent: the request runs again.
func TestIdempotencyExpiry(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	r := req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"x","size_bytes":1}`, Header: map[string]string{"Idempotency-Key": "old"}}
	first := e.must(t, http.StatusCreated, r)
	_, err := e.pool.Exec(t.Context(), "UPDATE idempotency_keys SET created_at = now() - interval '24 hours 1 second'")
	require.NoError(t, err)

	second := e.must(t, http.StatusCreated, r)
	require.NotEqual(t, first.JSON["id"], second.JSON["id"])
	requireSameAnswer(t, second, e.do(t, r))
	c := e.counts(t)
	require.Equal(t, 2, c.Events)
	require.Equal(t, 1, c.Keys)

	// Another body under the expired key is no conflict either.
	_, err = e.pool.Exec(t.Context(), "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
	require.NoError(t, err)
	r.Body = `{"name":"y","size_bytes":2}`
	e.must(t, http.StatusCreated, r)
}

// A retry whose body is the same JSON with other whitespace or key order is
// the same request: it replays the first answer. Another value is a 409.
func TestIdempotencyCanonicalBody(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	key := map[string]string{"Idempotency-Key": "canonical-1"}

	first := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: a, Header: key,
		Body: `{"name":"x","size_bytes":5,"content_type":"text/plain"}`})
	before := e.counts(t)
	for _, body := range []string{
		"{\n  \"content_type\" : \"text/plain\",\n\t\"size_bytes\": 5,  \"name\":\"x\"\n}\n",
		` {"size_bytes":5,"name":"\u0078","content_type":"text\/plain"} `,
	} {
		requireSameAnswer(t, first, e.do(t, req{Method: "POST", Path: "/v1/files", Token: a, Header: key, Body: body}))
	}
	require.Equal(t, before, e.counts(t), "a replay writes nothing")
	list := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: a})
	require.Len(t, list.JSON["items"], 1)

	for _, body := range []string{
		`{"content_type":"text/plain","size_bytes":6,"name":"x"}`,
		`{"content_type":"text/plain","size_bytes":5,"name":"y"}`,
		`{"size_bytes":5,"name":"x"}`,
	} {
		requireError(t, e.do(t, req{Method: "POST", Path: "/v1/files", Token: a, Header: key, Body: body}), 409, "idempotency_key_reused")
	}
	require.Equal(t, before, e.counts(t))
	list = e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: a})
	require.Len(t, list.JSON["items"], 1)
}
