package httpapi

import (
	_ "embed"
	"net/http"
	"slices"
)

// openAPIDocument is the OpenAPI 3.1 document of this API: every route of
// New, its parameters, bodies, answers, headers and errors. It is served as
// it is written, and the package's tests hold each of their requests and
// answers to it, so it cannot drift from what the handlers do unnoticed.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPI is the OpenAPI 3.1 document GET /v1/openapi.json serves.
func OpenAPI() []byte { return slices.Clone(openAPIDocument) }

// serveOpenAPI is GET /v1/openapi.json; it takes no token: the document
// describes how to get and use one.
func (s *server) serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(openAPIDocument)
}
