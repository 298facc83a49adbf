package httpapi_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// Bad input writes nothing and answers a 4xx in the error shape.
func TestBadInputWritesNothing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	b := e.newUser(t, "b")
	fileA := e.upload(t, a, "a.bin", 10)
	jobA := e.createJob(t, a, "job a")
	fileB := e.upload(t, b, "b.bin", 10)
	jobB := e.createJob(t, b, "job b")
	deleted := e.upload(t, a, "gone.bin", 10)
	e.must(t, http.StatusNoContent, req{Method: "DELETE", Path: "/v1/files/" + deleted, Token: a})
	unknown := uuid.NewString()

	ids := func(list ...string) string {
		b, _ := json.Marshal(map[string]any{"file_ids": list})
		return string(b)
	}
	many := make([]string, 10001)
	for i := range many {
		many[i] = uuid.NewString()
	}
	huge := `{"name":"` + strings.Repeat("x", 1<<20) + `","size_bytes":1}`

	cases := []struct {
		name   string
		r      req
		status int
		code   string
	}{
		// Malformed and strict JSON.
		{"malformed JSON", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x",`}, 400, "invalid_input"},
		{"not JSON", req{Method: "POST", Path: "/v1/files", Body: `name=x`}, 400, "invalid_input"},
		{"empty body", req{Method: "POST", Path: "/v1/files"}, 400, "invalid_input"},
		{"array body", req{Method: "POST", Path: "/v1/files", Body: `[{"name":"x","size_bytes":1}]`}, 400, "invalid_input"},
		{"null body", req{Method: "POST", Path: "/v1/files", Body: `null`}, 400, "invalid_input"},
		{"unknown field", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1,"owner_id":"` + unknown + `"}`}, 400, "invalid_input"},
		{"a field's name in another case", req{Method: "POST", Path: "/v1/files", Body: `{"Name":"x","size_bytes":1}`}, 400, "invalid_input"},
		{"a job's name in another case", req{Method: "POST", Path: "/v1/jobs", Body: `{"NAME":"j"}`}, 400, "invalid_input"},
		{"trailing data", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1} {}`}, 400, "invalid_input"},
		{"trailing garbage", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1}x`}, 400, "invalid_input"},
		{"invalid UTF-8", req{Method: "POST", Path: "/v1/files", Body: "{\"name\":\"\xff\",\"size_bytes\":1}"}, 400, "invalid_input"},
		{"name wrong type", req{Method: "POST", Path: "/v1/files", Body: `{"name":5,"size_bytes":1}`}, 400, "invalid_input"},
		{"name missing", req{Method: "POST", Path: "/v1/files", Body: `{"size_bytes":1}`}, 400, "invalid_input"},
		{"name null", req{Method: "POST", Path: "/v1/files", Body: `{"name":null,"size_bytes":1}`}, 400, "invalid_input"},
		{"name empty", req{Method: "POST", Path: "/v1/files", Body: `{"name":"","size_bytes":1}`}, 400, "invalid_input"},
		{"name NUL", req{Method: "POST", Path: "/v1/files", Body: `{"name":"a\u0000b","size_bytes":1}`}, 400, "invalid_input"},
		{"name newline", req{Method: "POST", Path: "/v1/files", Body: `{"name":"a\nb","size_bytes":1}`}, 400, "invalid_input"},
		{"name C1 control", req{Method: "POST", Path: "/v1/files", Body: `{"name":"a\u0085b","size_bytes":1}`}, 400, "invalid_input"},
		{"name 256 characters", req{Method: "POST", Path: "/v1/files", Body: `{"name":"` + strings.Repeat("é", 256) + `","size_bytes":1}`}, 400, "invalid_input"},
		{"size missing", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x"}`}, 400, "invalid_input"},
		{"size null", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":null}`}, 400, "invalid_input"},
		{"size negative", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":-1}`}, 400, "invalid_input"},
		{"size fraction", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1.0}`}, 400, "invalid_input"},
		{"size exponent", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1e3}`}, 400, "invalid_input"},
		{"size 2^63", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":9223372036854775808}`}, 400, "invalid_input"},
		{"size string", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":"5"}`}, 400, "invalid_input"},
		{"size bool", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":true}`}, 400, "invalid_input"},
		{"content_type NUL", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1,"content_type":"text/\u0000"}`}, 400, "invalid_input"},
		{"content_type 256 characters", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1,"content_type":"` + strings.Repeat("a", 256) + `"}`}, 400, "invalid_input"},
		{"content_type wrong type", req{Method: "POST", Path: "/v1/files", Body: `{"name":"x","size_bytes":1,"content_type":[]}`}, 400, "invalid_input"},
		{"body over 1 MiB", req{Method: "POST", Path: "/v1/files", Body: huge}, 413, "body_too_large"},
		{"job name NUL", req{Method: "POST", Path: "/v1/jobs", Body: `{"name":"\u0000"}`}, 400, "invalid_input"},
		{"job unknown field", req{Method: "POST", Path: "/v1/jobs", Body: `{"name":"j","version":3}`}, 400, "invalid_input"},
		{"job body over 1 MiB", req{Method: "POST", Path: "/v1/jobs", Body: huge}, 413, "body_too_large"},

		// Ids.
		{"non-UUID file id", req{Method: "GET", Path: "/v1/files/not-a-uuid"}, 400, "invalid_input"},
		{"non-UUID file id on delete", req{Method: "DELETE", Path: "/v1/files/123"}, 400, "invalid_input"},
		{"non-UUID job id", req{Method: "PUT", Path: "/v1/jobs/nope/files/" + fileA}, 400, "invalid_input"},
		{"non-UUID file id on link", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files/nope"}, 400, "invalid_input"},
		{"UUID without dashes", req{Method: "DELETE", Path: "/v1/jobs/" + strings.ReplaceAll(jobA, "-", "")}, 400, "invalid_input"},
		{"unknown file", req{Method: "GET", Path: "/v1/files/" + unknown}, 404, "not_found"},
		{"unknown file on delete", req{Method: "DELETE", Path: "/v1/files/" + unknown}, 404, "not_found"},
		{"unknown job", req{Method: "GET", Path: "/v1/jobs/" + unknown}, 404, "not_found"},
		{"unknown job on link", req{Method: "PUT", Path: "/v1/jobs/" + unknown + "/files/" + fileA}, 404, "not_found"},
		{"unknown file on link", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files/" + unknown}, 404, "not_found"},
		{"unknown job on delete", req{Method: "DELETE", Path: "/v1/jobs/" + unknown}, 404, "not_found"},

		// Another user's resources are not found.
		{"other's file", req{Method: "GET", Path: "/v1/files/" + fileB}, 404, "not_found"},
		{"other's file on delete", req{Method: "DELETE", Path: "/v1/files/" + fileB}, 404, "not_found"},
		{"other's job", req{Method: "GET", Path: "/v1/jobs/" + jobB}, 404, "not_found"},
		{"other's job on delete", req{Method: "DELETE", Path: "/v1/jobs/" + jobB}, 404, "not_found"},
		{"other's file on link", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files/" + fileB}, 404, "not_found"},
		{"own file to other's job", req{Method: "PUT", Path: "/v1/jobs/" + jobB + "/files/" + fileA}, 404, "not_found"},
		{"other's job on unlink", req{Method: "DELETE", Path: "/v1/jobs/" + jobB + "/files/" + fileB}, 404, "not_found"},
		{"other's file in set", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: ids(fileA, fileB)}, 404, "not_found"},

		// A deleted file.
		{"deleted file", req{Method: "GET", Path: "/v1/files/" + deleted}, 404, "not_found"},
		{"deleted file on delete", req{Method: "DELETE", Path: "/v1/files/" + deleted}, 404, "not_found"},
		{"deleted file on link", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files/" + deleted}, 404, "not_found"},
		{"deleted file in set", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: ids(fileA, deleted)}, 404, "not_found"},

		// file_ids.
		{"file_ids missing", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: `{}`}, 400, "invalid_input"},
		{"file_ids not an array", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: `{"file_ids":"` + fileA + `"}`}, 400, "invalid_input"},
		{"file_ids non-UUID", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: ids(fileA, "x")}, 400, "invalid_input"},
		{"file_ids null element", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: `{"file_ids":[null]}`}, 400, "invalid_input"},
		{"file_ids duplicate", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: ids(fileA, fileA)}, 400, "invalid_input"},
		{"file_ids over 10,000", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files", Body: ids(many...)}, 409, "job_file_limit"},

		// Headers and query.
		{"If-Match garbage", req{Method: "PUT", Path: "/v1/jobs/" + jobA + "/files/" + fileA, Header: map[string]string{"If-Match": `W/"x"`}}, 400, "invalid_input"},
		{"If-Match negative", req{Method: "DELETE", Path: "/v1/jobs/" + jobA, Header: map[string]string{"If-Match": "-1"}}, 400, "invalid_input"},
		{"Idempotency-Key too long", req{Method: "POST", Path: "/v1/jobs", Body: `{"name":"j"}`, Header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}}, 400, "invalid_input"},
		{"limit 0", req{Method: "GET", Path: "/v1/files?limit=0"}, 400, "invalid_input"},
		{"limit 1001", req{Method: "GET", Path: "/v1/jobs?limit=1001"}, 400, "invalid_input"},
		{"limit not a number", req{Method: "GET", Path: "/v1/jobs?limit=ten"}, 400, "invalid_input"},
		{"bad cursor", req{Method: "GET", Path: "/v1/files?cursor=nope"}, 400, "invalid_input"},

		// Tokens.
		{"missing token", req{Method: "POST", Path: "/v1/files", Token: "-", Body: `{"name":"x","size_bytes":1}`}, 401, "unauthorized"},
		{"wrong token", req{Method: "POST", Path: "/v1/jobs", Token: a + "x", Body: `{"name":"j"}`}, 401, "unauthorized"},
		{"wrong token on delete", req{Method: "DELETE", Path: "/v1/files/" + fileA, Token: "nope"}, 401, "unauthorized"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.r
			r.Hostile = true
			switch r.Token {
			case "":
				r.Token = a
			case "-":
				r.Token = ""
			}
			before := e.counts(t)
			got := e.do(t, r)
			requireError(t, got, c.status, c.code)
			require.Equal(t, before, e.counts(t), "rows written by a rejected request")
		})
	}

	// The preview of job A did not change through all of that.
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/jobs/" + jobA, Token: a})
	require.Equal(t, `"1"`, got.Header.Get("ETag"))
	require.Equal(t, fmt.Sprint([]any{}), fmt.Sprint(got.JSON["files"]))
}

// JSON with a duplicate key, a lone surrogate or invalid UTF-8 is a 400 that
// says what was wrong and writes nothing; a surrogate pair is a character.
func TestJSONDuplicateKeysAndSurrogates(t *testing.T) {
	t.Parallel()
	e := setup(t)
	a := e.newUser(t, "a")
	job := e.createJob(t, a, "j")
	before := e.counts(t)

	for _, c := range []struct {
		method, path, body, message string
	}{
		{"POST", "/v1/files", `{"name":"a","name":"b","size_bytes":1}`, `duplicate key "name"`},
		{"POST", "/v1/files", `{"name":"a","size_bytes":1,"size_bytes":1}`, `duplicate key "size_bytes"`},
		{"POST", "/v1/files", `{"name":"a","size_bytes":{"n":1,"n":2}}`, `duplicate key "n"`},
		{"POST", "/v1/jobs", `{"name":"a","\u006eame":"b"}`, `duplicate key "name"`},
		{"PUT", "/v1/jobs/" + job + "/files", `{"file_ids":[],"file_ids":[]}`, `duplicate key "file_ids"`},
		{"POST", "/v1/files", `{"name":"\ud800","size_bytes":1}`, `lone surrogate \ud800 in a string`},
		{"POST", "/v1/files", `{"name":"\udc00","size_bytes":1}`, `lone surrogate \udc00 in a string`},
		{"POST", "/v1/files", `{"name":"\ud800\u0041","size_bytes":1}`, `lone surrogate \ud800 in a string`},
		{"POST", "/v1/files", `{"name":"x","size_bytes":1,"content_type":"text/\udfff"}`, `lone surrogate \udfff in a string`},
		{"POST", "/v1/jobs", `{"name":"ok \ud83d"}`, `lone surrogate \ud83d in a string`},
		{"POST", "/v1/files", "{\"name\":\"a\xff\",\"size_bytes\":1}", "the body is not valid UTF-8"},
		{"POST", "/v1/files", "{\"name\":\"\xed\xa0\x80\",\"size_bytes\":1}", "the body is not valid UTF-8"}, // U+D800 in UTF-8
	} {
		got := e.do(t, req{Method: c.method, Path: c.path, Token: a, Body: c.body, Hostile: true})
		requireError(t, got, 400, "invalid_input")
		require.Equal(t, c.message, got.JSON["error"].(map[string]any)["message"], c.body)
	}
	require.Equal(t, before, e.counts(t), "rows written by a rejected request")
	list := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files", Token: a})
	require.Empty(t, list.JSON["items"])

	got := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: a, Body: `{"name":"\ud83d\ude00","size_bytes":1}`})
	require.Equal(t, "😀", got.JSON["name"])
	got = e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/files/" + got.JSON["id"].(string), Token: a})
	require.Equal(t, "😀", got.JSON["name"])
}
