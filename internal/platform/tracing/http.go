package tracing

import (
	"net/http"
	"strings"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// HTTPHandler is h with a server span per request (named by its route,
// and with http.route, once the mux matched it), continuing the caller's trace when its traceparent
// header carries one; h itself when this process exports no traces. The
// probes and /metrics, polled all day, make no spans.
func HTTPHandler(h http.Handler) http.Handler {
	if !Enabled() {
		return h
	}
	routed := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r)
		// The mux wrote the matched pattern ("POST /v1/files") into r.
		if _, route, ok := strings.Cut(r.Pattern, " "); ok {
			trace.SpanFromContext(r.Context()).SetAttributes(semconv.HTTPRoute(route))
		}
	})
	return otelhttp.NewHandler(routed, "epoch-api", otelhttp.WithFilter(func(r *http.Request) bool {
		switch r.URL.Path {
		case "/metrics", "/healthz", "/readyz":
			return false
		}
		return true
	}))
}
