package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func TestFileResponses(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")

	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"report.pdf","size_bytes":9223372036854775807,"content_type":"application/pdf"}`})
	require.Len(t, got.JSON, 6, "file keys: %s", got.Raw)
	id := got.JSON["id"].(string)
	require.Equal(t, "report.pdf", got.JSON["name"])
	require.Equal(t, int64(9223372036854775807), num(t, got.JSON["size_bytes"]))
	require.Equal(t, "application/pdf", got.JSON["content_type"])
	_, err := time.Parse(time.RFC3339, got.JSON["created_at"].(string))
	require.NoError(t, err)
	pos := num(t, got.JSON["position"])
	require.Equal(t, strconv.FormatInt(pos, 10), got.Header.Get("Epoch-Position"))
	require.Equal(t, "/v1/files/"+id, got.Header.Get("Location"))

	// Absent or empty content type: application/octet-stream.
	for _, body := range []string{`{"name":"a","size_bytes":0}`, `{"name":"a","size_bytes":0,"content_type":""}`} {
		got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: a, Body: body})
		require.Equal(t, "application/octet-stream", got.JSON["content_type"])
	}

	read := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files/" + id, Token: a})
	require.Equal(t, got.JSON, read.JSON)
	require.Equal(t, strconv.FormatInt(pos, 10), read.Header.Get("Epoch-Position"))

	// Delete: 204 with a position, then 404.
	del := e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: "/v1/files/" + id, Token: a})
	require.Empty(t, del.Raw)
	delPos, err := strconv.ParseInt(del.Header.Get("Epoch-Position"), 10, 64)
	require.NoError(t, err)
	require.Greater(t, delPos, pos)
	requireError(t, e.do(t, req{Method: "DELETE", Path: "/v1/files/" + id, Token: a}), 404, "not_found")
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/files/" + id, Token: a}), 404, "not_found")
}

func TestJobResponses(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	f1 := e.upload(t, a, "one", 100)
	f2 := e.upload(t, a, "two", 23)

	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/jobs", Token: a, Body: `{"name":"render"}`})
	job := got.JSON["id"].(string)
	require.Equal(t, `"1"`, got.Header.Get("ETag"))
	require.Equal(t, "/v1/jobs/"+job, got.Header.Get("Location"))
	require.Equal(t, got.Header.Get("Epoch-Position"), fmt.Sprint(got.JSON["position"]))
	require.Equal(t, []any{}, got.JSON["files"])
	require.Equal(t, int64(0), num(t, got.JSON["file_count"]))
	require.Equal(t, int64(0), num(t, got.JSON["total_bytes"]))

	// Link: 200 with the preview read in the same transaction.
	got = e.must(t, http.StatusOK, req{Method: "PUT", Path: "/v1/jobs/" + job + "/files/" + f1, Token: a})
	require.Equal(t, `"2"`, got.Header.Get("ETag"))
	require.Equal(t, int64(2), num(t, got.JSON["version"]))
	require.Equal(t, got.Header.Get("Epoch-Position"), fmt.Sprint(got.JSON["position"]))
	files := got.JSON["files"].([]any)
	require.Len(t, files, 1)
	require.Equal(t, map[string]any{"id": f1, "name": "one", "size_bytes": json.Number("100")}, files[0])

	// Linking again writes nothing and answers 200.
	before := e.counts(t)
	again := e.must(t, http.StatusOK, req{Method: "PUT", Path: "/v1/jobs/" + job + "/files/" + f1, Token: a})
	require.Equal(t, `"2"`, again.Header.Get("ETag"))
	require.Equal(t, before, e.counts(t))

	// Set the whole list.
	body, _ := json.Marshal(map[string]any{"file_ids": []string{f2}})
	got = e.must(t, http.StatusOK, req{Method: "PUT", Path: "/v1/jobs/" + job + "/files", Token: a, Body: string(body)})
	files = got.JSON["files"].([]any)
	require.Len(t, files, 1)
	require.Equal(t, f2, files[0].(map[string]any)["id"])
	require.Equal(t, int64(23), num(t, got.JSON["total_bytes"]))
	require.Equal(t, `"4"`, got.Header.Get("ETag"))

	// Unlink.
	got = e.must(t, http.StatusOK, req{Method: "DELETE", Path: "/v1/jobs/" + job + "/files/" + f2, Token: a})
	require.Equal(t, []any{}, got.JSON["files"])
	require.Equal(t, `"5"`, got.Header.Get("ETag"))

	read := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/jobs/" + job, Token: a})
	require.Equal(t, `"5"`, read.Header.Get("ETag"))
	require.Equal(t, got.JSON, read.JSON)
	require.Equal(t, fmt.Sprint(read.JSON["position"]), read.Header.Get("Epoch-Position"))

	e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: "/v1/jobs/" + job, Token: a})
	requireError(t, e.do(t, req{Method: "DELETE", Path: "/v1/jobs/" + job, Token: a}), 404, "not_found")
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/jobs/" + job, Token: a}), 404, "not_found")
}

// A job command whose If-Match names another version answers 412 and
// writes nothing, even when it would have changed nothing.
func TestIfMatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	f1 := e.upload(t, a, "one", 1)
	f2 := e.upload(t, a, "two", 2)
	job := e.createJob(t, a, "j")
	path := "/v1/jobs/" + job

	got := e.must(t, http.StatusOK, req{Method: "PUT", Path: path + "/files/" + f1, Token: a, Header: map[string]string{"If-Match": `"1"`}})
	require.Equal(t, `"2"`, got.Header.Get("ETag"))
	got = e.must(t, http.StatusOK, req{Method: "PUT", Path: path + "/files/" + f2, Token: a, Header: map[string]string{"If-Match": `2`}})
	require.Equal(t, `"3"`, got.Header.Get("ETag"))
	e.must(t, http.StatusOK, req{Method: "GET", Path: path, Token: a, Header: map[string]string{"If-Match": `*`}})

	stale := map[string]string{"If-Match": `"2"`}
	body, _ := json.Marshal(map[string]any{"file_ids": []string{f1, f2}})
	for _, r := range []req{
		{Method: "PUT", Path: path + "/files/" + f1},               // already linked: a no-op but for If-Match
		{Method: "DELETE", Path: path + "/files/" + f2},            // would unlink
		{Method: "PUT", Path: path + "/files", Body: string(body)}, // the same list: a no-op
		{Method: "DELETE", Path: path},                             // would delete
	} {
		r.Token, r.Header = a, stale
		before := e.counts(t)
		requireError(t, e.do(t, r), 412, "precondition_failed")
		require.Equal(t, before, e.counts(t))
	}
	got = e.must(t, http.StatusOK, req{Method: "GET", Path: path, Token: a})
	require.Equal(t, `"3"`, got.Header.Get("ETag"))
	e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: path, Token: a, Header: map[string]string{"If-Match": `"3"`}})
}

func TestPagination(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	b := e.newUser(t, "b")
	e.upload(t, b, "other's", 1)
	var files, jobs []string
	for i := range 5 {
		files = append(files, e.upload(t, a, fmt.Sprintf("f%d", i), int64(i)))
		jobs = append(jobs, e.createJob(t, a, fmt.Sprintf("j%d", i)))
	}

	walk := func(path string, limit int) (ids []string, pages int) {
		cursor := ""
		for {
			url := fmt.Sprintf("%s?limit=%d", path, limit)
			if cursor != "" {
				url += "&cursor=" + cursor
			}
			got := e.must(t, http.StatusOK, req{Method: "GET", Path: url, Token: a})
			require.Len(t, got.JSON, 2, "items and next_cursor: %s", got.Raw)
			items := got.JSON["items"].([]any)
			require.LessOrEqual(t, len(items), limit)
			for _, it := range items {
				item := it.(map[string]any)
				ids = append(ids, item["id"].(string))
				if path == "/v1/jobs" {
					require.NotContains(t, item, "files", "list items are previews without files")
					require.Contains(t, item, "file_count")
				}
			}
			pages++
			next, ok := got.JSON["next_cursor"]
			require.True(t, ok)
			if next == nil {
				return ids, pages
			}
			cursor = next.(string)
		}
	}
	newestFirst := func(ids []string) []string {
		out := make([]string, len(ids))
		for i, id := range ids {
			out[len(ids)-1-i] = id
		}
		return out
	}
	got, pages := walk("/v1/files", 2)
	require.Equal(t, newestFirst(files), got)
	require.Equal(t, 3, pages)
	got, pages = walk("/v1/jobs", 2)
	require.Equal(t, newestFirst(jobs), got)
	require.Equal(t, 3, pages)
	got, pages = walk("/v1/jobs", 5)
	require.Equal(t, newestFirst(jobs), got)
	require.Equal(t, 1, pages, "an exactly full last page has no next cursor")

	// Default limit: everything here fits one page.
	all := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: a})
	require.Len(t, all.JSON["items"], 5)
	require.Nil(t, all.JSON["next_cursor"])
	empty := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/jobs", Token: e.newUser(t, "c")})
	require.Equal(t, []any{}, empty.JSON["items"])
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	e.upload(t, a, "x", 1)
	e.do(t, req{Method: "POST", Path: "/v1/files", Token: a, Body: `{}`, Hostile: true})
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: a})
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: a})
	e.must(t, http.StatusNotFound, req{Method: "GET", Path: "/v1/files/" + uuid.NewString(), Token: a})
	e.must(t, http.StatusNotFound, req{Method: "GET", Path: "/v1/nothing", Token: a})
	e.must(t, http.StatusMethodNotAllowed, req{Method: "PATCH", Path: "/v1/files", Token: a})
	e.must(t, http.StatusMethodNotAllowed, req{Method: "BREW", Path: "/v1/files", Token: a})
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: "/metrics"})
	text := string(got.Raw)
	require.Contains(t, text, `epoch_api_requests_total{method="GET",route="/v1/files",status="200"} 2`)
	require.Contains(t, text, `epoch_api_requests_total{method="GET",route="/v1/files/{id}",status="404"} 1`)
	require.Contains(t, text, `epoch_api_requests_total{method="POST",route="/v1/files",status="201"} 1`)
	require.Contains(t, text, `epoch_api_requests_total{method="POST",route="/v1/files",status="400"} 1`)
	require.Contains(t, text, `epoch_api_requests_total{method="GET",route="unmatched",status="404"} 1`)
	require.Contains(t, text, `epoch_api_requests_total{method="PATCH",route="unmatched",status="405"} 1`)
	require.Contains(t, text, `epoch_api_requests_total{method="other",route="unmatched",status="405"} 1`)
	require.NotContains(t, text, `epoch_api_commands_total{route="GET`, "reads are no commands")
	require.Contains(t, text, `epoch_api_commands_total{route="POST /v1/files",status="201"} 1`)
	require.Contains(t, text, `epoch_api_commands_total{route="POST /v1/files",status="400"} 1`)
	require.Contains(t, text, `epoch_api_request_duration_seconds_count{route="POST /v1/files"} 2`)
}
