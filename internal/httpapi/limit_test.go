package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/commandside/command"
	"github.com/catacloud/epoch/internal/core/domain"
	"github.com/catacloud/epoch/internal/httpapi"
	"github.com/catacloud/epoch/internal/platform/database"
)

// A job holds domain.MaxJobFiles files and not one more: the link and the
// set past it are 409 job_file_limit and write nothing, and the full
// preview stays under 4 MiB with names of the longest length.
func TestJobFileLimit(t *testing.T) {
	t.Parallel()
	var svc *command.Service
	e := setup(t, func(c *httpapi.Config) { svc = c.Commands })
	user := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/users", Token: adminToken, Body: `{"name":"a"}`})
	a := user.JSON["token"].(string)
	owner := uuid.MustParse(user.JSON["id"].(string))

	// The files in one transaction through the command service: the setup
	// takes a second, not 10,000 requests.
	var ids []string
	err := svc.Run(t.Context(), func(tx *database.Tx) error {
		ids = ids[:0]
		for i := range domain.MaxJobFiles {
			name := fmt.Sprintf("%05d", i) + strings.Repeat("n", domain.MaxTextLength-5)
			out, err := svc.UploadFile(t.Context(), tx, owner, command.UploadFile{Name: name, SizeBytes: int64(i)})
			if err != nil {
				return err
			}
			ids = append(ids, out.ID.String())
		}
		return nil
	})
	require.NoError(t, err)

	job := e.createJob(t, a, "full")
	jobPath := "/v1/jobs/" + job
	setBody := func(list ...string) string {
		b, _ := json.Marshal(map[string]any{"file_ids": list})
		return string(b)
	}
	full := e.must(t, http.StatusOK, req{Method: "PUT", Path: jobPath + "/files", Token: a, Body: setBody(ids...)})
	require.Equal(t, int64(domain.MaxJobFiles), num(t, full.JSON["file_count"]))
	require.Len(t, full.JSON["files"], domain.MaxJobFiles)
	version := num(t, full.JSON["version"])

	// The whole preview, names at their longest, is bounded.
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: jobPath, Token: a})
	require.Less(t, len(got.Raw), 4<<20, "preview of a full job")
	t.Logf("preview of %d files with %d-character names: %d bytes", domain.MaxJobFiles, domain.MaxTextLength, len(got.Raw))

	// requireUnchanged checks that the full job and the tables are as
	// they were.
	before := e.counts(t)
	requireUnchanged := func(t *testing.T) {
		t.Helper()
		require.Equal(t, before, e.counts(t), "rows written")
		got := e.must(t, http.StatusOK, req{Method: "GET", Path: jobPath, Token: a})
		require.Equal(t, version, num(t, got.JSON["version"]))
		require.Equal(t, int64(domain.MaxJobFiles), num(t, got.JSON["file_count"]))
	}
	extra := e.upload(t, a, "one too many", 1)
	before = e.counts(t)

	t.Run("link past the limit", func(t *testing.T) {
		got := e.do(t, req{Method: "PUT", Path: jobPath + "/files/" + extra, Token: a})
		requireError(t, got, http.StatusConflict, "job_file_limit")
		require.Contains(t, got.JSON["error"].(map[string]any)["message"], "10000")
		requireUnchanged(t)
	})
	t.Run("set past the limit", func(t *testing.T) {
		got := e.do(t, req{Method: "PUT", Path: jobPath + "/files", Token: a, Body: setBody(append(ids[:len(ids):len(ids)], extra)...), Hostile: true})
		requireError(t, got, http.StatusConflict, "job_file_limit")
		requireUnchanged(t)
	})
	t.Run("link of a linked file", func(t *testing.T) {
		got := e.must(t, http.StatusOK, req{Method: "PUT", Path: jobPath + "/files/" + ids[0], Token: a})
		require.Equal(t, version, num(t, got.JSON["version"]))
		requireUnchanged(t)
	})
	t.Run("link up to the limit", func(t *testing.T) {
		e.must(t, http.StatusOK, req{Method: "DELETE", Path: jobPath + "/files/" + ids[0], Token: a})
		got := e.must(t, http.StatusOK, req{Method: "PUT", Path: jobPath + "/files/" + extra, Token: a})
		require.Equal(t, int64(domain.MaxJobFiles), num(t, got.JSON["file_count"]))
	})
}

// A 404 for a command's files names the first one missing, in the order
// the request gave them.
func TestNotFoundNamesTheFirstMissingFile(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	b := e.newUser(t, "b")
	mine := e.upload(t, a, "mine", 1)
	theirs := e.upload(t, b, "theirs", 1)
	deleted := e.upload(t, a, "deleted", 1)
	e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: "/v1/files/" + deleted, Token: a})
	missing := uuid.NewString()
	job := e.createJob(t, a, "job")
	before := e.counts(t)

	for _, c := range []struct {
		name, path, body, first string
	}{
		{"set, two missing", "/v1/jobs/" + job + "/files", `{"file_ids":["` + mine + `","` + missing + `","` + theirs + `"]}`, missing},
		{"set, the other order", "/v1/jobs/" + job + "/files", `{"file_ids":["` + theirs + `","` + mine + `","` + missing + `"]}`, theirs},
		{"set, deleted first", "/v1/jobs/" + job + "/files", `{"file_ids":["` + deleted + `","` + missing + `"]}`, deleted},
		{"link", "/v1/jobs/" + job + "/files/" + missing, "", missing},
		{"link of another user's", "/v1/jobs/" + job + "/files/" + theirs, "", theirs},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := e.do(t, req{Method: "PUT", Path: c.path, Token: a, Body: c.body})
			requireError(t, got, http.StatusNotFound, "not_found")
			require.Equal(t, "file "+c.first+" not found", got.JSON["error"].(map[string]any)["message"])
		})
	}
	require.Equal(t, before, e.counts(t), "rows written")
}
