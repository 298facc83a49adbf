package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/catacloud/epoch/internal/httpapi"
)

// openAPI is the api's OpenAPI document, loaded and validated once, with
// the router that finds a request's operation in it.
var openAPI = sync.OnceValues(func() (*openAPIDoc, error) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(httpapi.OpenAPI())
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &openAPIDoc{doc: doc, router: router}, nil
})

type openAPIDoc struct {
	doc    *openapi3.T
	router routers.Router
}

// validationOptions: every answered status must be in the document;
// tokens are the api's to judge (a request without one is still a request
// the document describes, answered 401).
func validationOptions() *openapi3filter.Options {
	return &openapi3filter.Options{
		IncludeResponseStatus: true,
		SkipSettingDefaults:   true,
		MultiError:            true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	}
}

// checkOpenAPI holds a request sent (hr, whose body was body) and its
// answer to the OpenAPI document: the request must be one of its
// operations' (unless hostile), and the answer's status, headers and body
// what the operation says it answers. A request of no operation must be
// answered 404 or 405 in the error shape.
func checkOpenAPI(t testing.TB, hr *http.Request, body []byte, hostile bool, got resp) {
	t.Helper()
	api, err := openAPI()
	require.NoError(t, err, "the OpenAPI document")
	ctx := context.Background()
	vr := hr.Clone(ctx)
	vr.Body = io.NopCloser(bytes.NewReader(body))

	route, params, err := api.router.FindRoute(vr)
	if err != nil {
		// A hostile path may be one no route pattern of the document
		// takes; it must still be refused.
		if hostile {
			require.True(t, got.Status >= 400 && got.Status < 500, "%s %s: %d: %s", hr.Method, hr.URL.Path, got.Status, got.Raw)
		} else {
			require.Contains(t, []int{http.StatusNotFound, http.StatusMethodNotAllowed}, got.Status,
				"%s %s is no operation of the OpenAPI document (%v), yet answered %d: %s", hr.Method, hr.URL.Path, err, got.Status, got.Raw)
		}
		requireErrorShape(t, api, got)
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: vr, PathParams: params, Route: route, Options: validationOptions()}
	if !hostile {
		require.NoError(t, openapi3filter.ValidateRequest(ctx, in), "%s %s breaks the OpenAPI document (answered %d)\nbody: %s",
			hr.Method, hr.URL.Path, got.Status, excerpt(body))
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: got.Status, Header: got.Header, Options: validationOptions()}
	out.SetBodyBytes(got.Raw)
	require.NoError(t, openapi3filter.ValidateResponse(ctx, out), "%s %s: the answer %d breaks the OpenAPI document\nheaders: %v\nbody: %s",
		hr.Method, hr.URL.Path, got.Status, got.Header, excerpt(got.Raw))
}

// requireErrorShape checks an answer of no operation against the
// document's Error schema.
func requireErrorShape(t testing.TB, api *openAPIDoc, got resp) {
	t.Helper()
	require.Equal(t, "application/json", got.Header.Get("Content-Type"))
	var v any
	dec := json.NewDecoder(bytes.NewReader(got.Raw))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&v))
	schema := api.doc.Components.Schemas["Error"].Value
	require.NoError(t, schema.VisitJSON(v, openapi3.EnableJSONSchema2020()), "body: %s", got.Raw)
}

func excerpt(b []byte) string {
	if len(b) > 2000 {
		return string(b[:2000]) + "…"
	}
	return string(b)
}

// The document loads and validates as OpenAPI 3.1.
func TestOpenAPIDocumentValidates(t *testing.T) {
	t.Parallel()
	api, err := openAPI()
	require.NoError(t, err)
	require.Equal(t, "3.1.0", api.doc.OpenAPI)
	require.True(t, api.doc.IsOpenAPI31OrLater())
	// Validate again with every error reported, for a readable failure.
	require.NoError(t, api.doc.Validate(context.Background(), openapi3.EnableMultiError()))
}

// The document's operations are exactly the routes the api serves.
func TestOpenAPIPathsAreTheRoutes(t *testing.T) {
	t.Parallel()
	api, err := openAPI()
	require.NoError(t, err)
	e := setup(t)
	var documented []string
	for path, item := range api.doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	served := e.api.Routes()
	slices.Sort(documented)
	slices.Sort(served)
	require.Equal(t, served, documented)
}

// GET /v1/openapi.json answers the document without a token.
func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	e := setup(t)
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/openapi.json"})
	require.Equal(t, "application/json", got.Header.Get("Content-Type"))
	require.Equal(t, httpapi.OpenAPI(), got.Raw)

	doc, err := openapi3.NewLoader().LoadFromData(got.Raw)
	require.NoError(t, err)
	require.NoError(t, doc.Validate(t.Context()))
	for _, pattern := range e.api.Routes() {
		method, path, ok := strings.Cut(pattern, " ")
		require.True(t, ok, pattern)
		item := doc.Paths.Value(path)
		require.NotNil(t, item, "%s is not in the served document", path)
		require.NotNil(t, item.GetOperation(method), "%s is not in the served document", pattern)
	}
	// A wrong token changes nothing: the document is public.
	e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/openapi.json", Token: "nope"})
}

// The operations no other test of the package calls, called here so that
// their answers are held to the document too.
func TestOpenAPIOperationsOtherwiseUncalled(t *testing.T) {
	t.Parallel()
	e := setup(t)
	token := e.newUser(t, "a")
	e.upload(t, token, "f", 1_000_000_000)
	e.applyBilling(t)

	items := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/statements", Token: token}).JSON["items"].([]any)
	require.NotEmpty(t, items, "an upload starts the user's statements")
	id := items[0].(map[string]any)["id"].(string)
	got := e.must(t, http.StatusOK, req{Method: "GET", Path: "/v1/statements/" + id, Token: token})
	require.Equal(t, id, got.JSON["id"])
	requireError(t, e.do(t, req{Method: "GET", Path: "/v1/statements/" + uuid.NewString(), Token: token}), http.StatusNotFound, "not_found")

	for _, r := range []req{
		{Method: "POST", Path: "/v1/admin/subscribers/storage/rebuild"},
		{Method: "POST", Path: "/v1/admin/projections/rebuild"},
		{Method: "POST", Path: "/v1/admin/projections/rebuild", Body: `{"swap":false}`},
		{Method: "POST", Path: "/v1/admin/statements/verify", Body: `{"from":"2026-01-01T00:00:00Z","to":"2100-01-01T00:00:00Z"}`},
	} {
		r.Token = adminToken
		got := e.must(t, http.StatusAccepted, r)
		op := e.waitOperation(t, got.Header.Get("Location"))
		require.Equal(t, "done", op["state"], "%s %s: %v", r.Method, r.Path, op)
	}
}
