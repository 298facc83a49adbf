package httpapi_test

import (
	"encoding/json"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

// The fuzz targets below send any body to the api, as a client would, and
// hold it to the input rules: an accepted body writes what it said and
// obeys the rules DESIGN.md states, written again in its plain form it is
// accepted the same; a refused one is a 400 (413 past the size limit) and
// writes nothing.

// requireText checks a name or content type as DESIGN.md states the rule:
// 1 to 255 characters of UTF-8, no control characters.
func requireText(t *testing.T, field, s string) {
	t.Helper()
	require.True(t, utf8.ValidString(s), "%s %q is not UTF-8", field, s)
	n := utf8.RuneCountInString(s)
	require.True(t, n >= 1 && n <= 255, "%s %q has %d characters", field, s, n)
	require.False(t, strings.ContainsFunc(s, unicode.IsControl), "%s %q has a control character", field, s)
}

// bodyFuzz is one call fuzzed by its body.
type bodyFuzz struct {
	method, path, token string
	seeds               []string
	// rewrite, when set, makes a body what is sent (and checked).
	rewrite func(body string) string
	// accepted is the status of an accepted body, which check then holds
	// to the rules; before is what the tables held before it.
	accepted int
	check    func(t *testing.T, body string, got resp, before counts)
	// refusedAlso are the statuses, besides 400 and 413, that refuse a
	// body, with their error codes.
	refusedAlso map[int]string
}

// fuzzBodies fuzzes z: every answer is z.accepted, checked by z.check, or
// a refusal in the error shape that wrote nothing.
func (e *env) fuzzBodies(f *testing.F, z bodyFuzz) {
	for _, body := range z.seeds {
		f.Add(body)
	}
	refused := map[int]string{http.StatusBadRequest: "invalid_input", http.StatusRequestEntityTooLarge: "body_too_large"}
	for status, code := range z.refusedAlso {
		refused[status] = code
	}
	f.Fuzz(func(t *testing.T, body string) {
		if z.rewrite != nil {
			body = z.rewrite(body)
		}
		before := e.counts(t)
		got := e.do(t, req{Method: z.method, Path: z.path, Token: z.token, Body: body, Hostile: true})
		if got.Status == z.accepted {
			z.check(t, body, got, before)
			return
		}
		code, ok := refused[got.Status]
		if !ok {
			t.Fatalf("a body is accepted (%d) or refused, not answered %d: %s", z.accepted, got.Status, got.Raw)
		}
		requireError(t, got, got.Status, code)
		require.Equal(t, before, e.counts(t), "a refused body wrote something")
	})
}

// plain decodes an accepted body with encoding/json alone (no strictness
// of the api's own), the way a client that wrote it meant it.
func plain(t *testing.T, body string, v any) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(body))
	dec.UseNumber()
	require.NoError(t, dec.Decode(v), "an accepted body is JSON: %s", body)
}

func FuzzUploadBody(f *testing.F) {
	e := setup(f)
	token := e.newUser(f, "fuzz")
	e.fuzzBodies(f, bodyFuzz{
		method: "POST", path: "/v1/files", token: token,
		seeds: []string{
			`{"name":"a.txt","size_bytes":1}`,
			`{"name":"r","size_bytes":0,"content_type":"text/plain"}`,
			`{"name":"é😀","size_bytes":9223372036854775807,"content_type":""}`,
			`{"name":"","size_bytes":1}`,
			`{"name":"x","size_bytes":-1}`,
			`{"name":"x","size_bytes":1.5}`,
			`{"name":"x","size_bytes":"1"}`,
			`{"name":"x","size_bytes":1e3}`,
			`{"name":"x","name":"y","size_bytes":1}`,
			`{"name":"\ud800","size_bytes":1}`,
			`{"name":"a\u0000b","size_bytes":1}`,
			`{"name":"x","size_bytes":1,"other":1}`,
			`{"name":"x","size_bytes":1} {}`,
		},
		accepted: http.StatusCreated,
		check: func(t *testing.T, body string, got resp, before counts) {
			var in struct {
				Name        string      `json:"name"`
				SizeBytes   json.Number `json:"size_bytes"`
				ContentType string      `json:"content_type"`
			}
			plain(t, body, &in)
			requireText(t, "name", in.Name)
			size, err := in.SizeBytes.Int64()
			require.NoError(t, err, "size_bytes %q is an integer", in.SizeBytes)
			require.GreaterOrEqual(t, size, int64(0))
			if in.ContentType == "" {
				in.ContentType = "application/octet-stream"
			}
			requireText(t, "content_type", in.ContentType)
			require.Equal(t, in.Name, got.JSON["name"])
			require.Equal(t, size, num(t, got.JSON["size_bytes"]))
			require.Equal(t, in.ContentType, got.JSON["content_type"])
			after := e.counts(t)
			require.Equal(t, before.Events+1, after.Events)
			require.Equal(t, before.Files+1, after.Files)

			again, err := json.Marshal(map[string]any{"name": in.Name, "size_bytes": size, "content_type": in.ContentType})
			require.NoError(t, err)
			got2 := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/files", Token: token, Body: string(again)})
			for _, k := range []string{"name", "size_bytes", "content_type"} {
				require.Equal(t, got.JSON[k], got2.JSON[k], k)
			}
		},
	})
}

func FuzzCreateJobBody(f *testing.F) {
	e := setup(f)
	token := e.newUser(f, "fuzz")
	e.fuzzBodies(f, bodyFuzz{
		method: "POST", path: "/v1/jobs", token: token,
		seeds: []string{
			`{"name":"q3"}`, `{"name":"ünïcødé 😀"}`, `{"name":""}`, `{"name":null}`, `{}`, `[]`,
			`{"name":"a","name":"a"}`, `{"name":"\udc00"}`, `{"name":"a\tb"}`, `{"name":1}`, `{"Name":"x"}`, `{"name":"x"}x`,
		},
		accepted: http.StatusCreated,
		check: func(t *testing.T, body string, got resp, before counts) {
			var in struct {
				Name string `json:"name"`
			}
			plain(t, body, &in)
			requireText(t, "name", in.Name)
			require.Equal(t, in.Name, got.JSON["name"])
			require.EqualValues(t, 1, num(t, got.JSON["version"]))
			require.Empty(t, got.JSON["files"])
			after := e.counts(t)
			require.Equal(t, before.Events+1, after.Events)
			require.Equal(t, before.Jobs+1, after.Jobs)

			again, err := json.Marshal(map[string]string{"name": in.Name})
			require.NoError(t, err)
			got2 := e.must(t, http.StatusCreated, req{Method: "POST", Path: "/v1/jobs", Token: token, Body: string(again)})
			require.Equal(t, got.JSON["name"], got2.JSON["name"])
		},
	})
}

func FuzzSetJobFilesBody(f *testing.F) {
	e := setup(f)
	token := e.newUser(f, "fuzz")
	job := e.createJob(f, token, "j")
	// The seeds name the files by placeholder: each fuzzing process has
	// files of its own.
	a, b := "FILE_A", "FILE_B"
	files := strings.NewReplacer(a, e.upload(f, token, "a", 1), b, e.upload(f, token, "b", 2))
	e.fuzzBodies(f, bodyFuzz{
		method: "PUT", path: "/v1/jobs/" + job + "/files", token: token, rewrite: files.Replace,
		seeds: []string{
			`{"file_ids":[]}`,
			`{"file_ids":["` + a + `"]}`,
			`{"file_ids":["` + b + `","` + a + `"]}`,
			`{"file_ids":["` + a + `","` + a + `"]}`,
			`{"file_ids":["` + uuid.NewString() + `"]}`,
			`{"file_ids":["not-a-uuid"]}`,
			`{"file_ids":null}`, `{}`, `{"file_ids":"` + a + `"}`,
			`{"file_ids":["` + a + `"],"file_ids":[]}`,
		},
		accepted: http.StatusOK,
		// An id of no file of the caller's.
		refusedAlso: map[int]string{http.StatusNotFound: "not_found"},
		check: func(t *testing.T, body string, got resp, _ counts) {
			var in struct {
				FileIDs []string `json:"file_ids"`
			}
			plain(t, body, &in)
			want := make([]string, len(in.FileIDs))
			for i, s := range in.FileIDs {
				id, err := uuid.Parse(s)
				require.NoError(t, err, "accepted file id %q", s)
				want[i] = id.String()
			}
			slices.Sort(want)
			require.Len(t, slices.Compact(slices.Clone(want)), len(want), "accepted ids repeat: %s", body)
			var gotIDs []string
			for _, file := range got.JSON["files"].([]any) {
				gotIDs = append(gotIDs, file.(map[string]any)["id"].(string))
			}
			slices.Sort(gotIDs)
			require.Equal(t, want, append([]string{}, gotIDs...), "the job holds exactly the files set")
			require.Equal(t, int64(len(want)), num(t, got.JSON["file_count"]))
		},
	})
}

func FuzzPriceBody(f *testing.F) {
	e := setup(f)
	e.fuzzBodies(f, bodyFuzz{
		method: "POST", path: "/v1/admin/prices", token: adminToken,
		seeds: []string{
			`{"effective_from":"2100-01-01T00:00:00Z","currency":"EUR","tiers":[{"up_to_gb_hours":"100","price_per_gb_hour":"0"},{"up_to_gb_hours":null,"price_per_gb_hour":0.00002}]}`,
			`{"effective_from":"2100-06-01T00:00:00+02:00","currency":"JPY","tiers":[{"up_to_gb_hours":null,"price_per_gb_hour":"1"}]}`,
			`{"effective_from":"2000-01-01T00:00:00Z","currency":"USD","tiers":[{"up_to_gb_hours":null,"price_per_gb_hour":"1"}]}`,
			`{"effective_from":"2100-01-01T00:00:00Z","currency":"usd","tiers":[{"up_to_gb_hours":null,"price_per_gb_hour":"1"}]}`,
			`{"effective_from":"2100-01-01T00:00:00Z","currency":"USD","tiers":[{"up_to_gb_hours":"5","price_per_gb_hour":"1"},{"up_to_gb_hours":"5","price_per_gb_hour":"1"},{"up_to_gb_hours":null,"price_per_gb_hour":"1"}]}`,
			`{"effective_from":"2100-01-01T00:00:00Z","currency":"USD","tiers":[{"up_to_gb_hours":null,"price_per_gb_hour":"-1"}]}`,
			`{"effective_from":"2100-01-01T00:00:00Z","currency":"USD","tiers":[{"up_to_gb_hours":null,"price_per_gb_hour":"0.0000000000000000001"}]}`,
			`{"effective_from":"2100-01-01T00:00:00Z","currency":"USD","tiers":[]}`,
		},
		accepted:    http.StatusCreated,
		refusedAlso: map[int]string{http.StatusConflict: "effective_in_past"},
		check: func(t *testing.T, body string, got resp, before counts) {
			var in struct {
				EffectiveFrom string `json:"effective_from"`
				Currency      string `json:"currency"`
				Tiers         []struct {
					UpTo  any `json:"up_to_gb_hours"`
					Price any `json:"price_per_gb_hour"`
				} `json:"tiers"`
			}
			plain(t, body, &in)
			require.Equal(t, in.Currency, got.JSON["currency"])
			require.Len(t, in.Currency, 3)
			require.Equal(t, strings.ToUpper(in.Currency), in.Currency)
			if at, err := time.Parse(time.RFC3339Nano, in.EffectiveFrom); err == nil {
				out, err := time.Parse(time.RFC3339Nano, got.JSON["effective_from"].(string))
				require.NoError(t, err)
				require.True(t, at.Equal(out), "effective_from %s answered as %s", at, out)
			}
			tiers := got.JSON["tiers"].([]any)
			require.Len(t, tiers, len(in.Tiers))
			prev := new(big.Rat)
			for i, tier := range in.Tiers {
				answered := tiers[i].(map[string]any)
				price := rat(t, tier.Price)
				require.GreaterOrEqual(t, price.Sign(), 0, "tier %d's price", i)
				require.Zero(t, price.Cmp(rat(t, answered["price_per_gb_hour"])), "tier %d's price", i)
				if i == len(in.Tiers)-1 {
					require.Nil(t, tier.UpTo, "the last tier is unbounded")
					require.Nil(t, answered["up_to_gb_hours"])
					continue
				}
				upTo := rat(t, tier.UpTo)
				require.Positive(t, upTo.Cmp(prev), "tier %d's bound rises", i)
				require.Zero(t, upTo.Cmp(rat(t, answered["up_to_gb_hours"])), "tier %d's bound", i)
				prev = upTo
			}
			require.Equal(t, before.Events+1, e.counts(t).Events)
		},
	})
}

// rat reads a decimal given as a JSON string or number.
func rat(t *testing.T, v any) *big.Rat {
	t.Helper()
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case json.Number:
		s = v.String()
	default:
		t.Fatalf("%v (%T) is no decimal", v, v)
	}
	r, ok := new(big.Rat).SetString(strings.TrimSpace(s))
	require.True(t, ok, "%q is no decimal", s)
	return r
}
